"""Why does D3HR lose to herding on digits, and what closes the gap? (issue #5)

Every knob is judged on a VALIDATION split carved from the real train split (20 % per class,
seed 2024); the test split is never read. Gaussians, herding, random subsets and the teacher
all see only the remaining 80 %. The prior is the trained `prior_model` of a project (it saw
the whole train split, validation images included: it is a generative model, not a
classifier, and the same for every row, so it favours no row).

Per configuration the script runs the real pipeline code — `encode_and_invert` (latents),
`fit_noise_gaussians`, `select_groups` (paper and factorised), `generate_images` — then trains
ConvNet (protocol `dc`, 100 epochs, 3 seeds) on the set and scores it on the validation split.
It also reports the teacher's accuracy on the generated images ("fidelity": are they
recognisably their class?) and the mean teacher-feature distance of each class's set to the
class mean ("feature gap": how well the set summarises the class, the quantity herding
minimises).

    python studies/d3hr_gap.py --project /path/to/kedro/project --out /tmp/d3hr_gap.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from kedro.io.core import Version
from random_draws import environment_params, load_latest  # a sibling study (this folder is on sys.path)

from diffdistill.data.bundle import TensorBundle, to_unit
from diffdistill.datasets import DiffusersFolderDataset
from diffdistill.evaluation import evaluate_accuracy, get_protocol, train_and_evaluate
from diffdistill.evaluation.saved import classifier_from_bundle
from diffdistill.evaluation.train import channel_stats
from diffdistill.pipelines.baselines.nodes import make_herding_subset, make_random_subset
from diffdistill.pipelines.d3hr.nodes import generate_images, select_groups
from diffdistill.pipelines.gaussians.nodes import fit_noise_gaussians
from diffdistill.pipelines.latents.nodes import encode_and_invert
from diffdistill.pipelines.teacher.nodes import train_teacher

BASE = {"num_steps": 50, "invert_steps": 31, "invert_guidance": 1.0, "guidance": 1.0, "m": 2000}
# One knob at a time from the pipeline's defaults, then the combinations the singles point to.
CONFIGS: list[dict[str, Any]] = [
    {},
    {"invert_steps": 10}, {"invert_steps": 20}, {"invert_steps": 40}, {"invert_steps": 50},
    {"invert_guidance": 4.0},                        # what the D3HR reference inverts with
    {"guidance": 2.0}, {"guidance": 3.0},
    {"m": 1}, {"m": 100}, {"m": 20000},
]


def shuffled_rows_per_class(train: TensorBundle, seed: int) -> list[torch.Tensor]:
    """Each class's row indices in a seeded random order (one generator, classes in order)."""
    generator = torch.Generator().manual_seed(seed)
    rows = [torch.nonzero(train["labels"] == k).flatten() for k in range(train.num_classes)]
    return [r[torch.randperm(len(r), generator=generator)] for r in rows]


def rows_of(train: TensorBundle, parts: list[torch.Tensor]) -> TensorBundle:
    rows = torch.cat(parts)
    return TensorBundle({"images": train["images"][rows], "labels": train["labels"][rows]}, dict(train.meta))


def carve_validation(train: TensorBundle, fraction: float = 0.2, seed: int = 2024) -> tuple[TensorBundle, TensorBundle]:
    shuffled = shuffled_rows_per_class(train, seed)
    cuts = [int(len(rows) * fraction) for rows in shuffled]
    return (rows_of(train, [rows[cut:] for rows, cut in zip(shuffled, cuts, strict=True)]),
            rows_of(train, [rows[:cut] for rows, cut in zip(shuffled, cuts, strict=True)]))


def per_class_subset(train: TensorBundle, count: int, seed: int = 2025) -> TensorBundle:
    """`count` seeded images per class: the part the Gaussians are fitted on when the inversion of the whole train
    part does not fit the budget (a 512-dim diagonal Gaussian's moments from a few hundred samples)."""
    return rows_of(train, [rows[:count] for rows in shuffled_rows_per_class(train, seed)])


def load_study_inputs(root: Path, data_root: str = "data") -> tuple[TensorBundle, TensorBundle, Any]:
    """(train minus the validation split, the validation split, the prior) from a project's latest saved
    `train_set` and `prior_model` under the environment's `data_root` (conf globals); torch threads from
    OMP_NUM_THREADS (default 1)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    full = load_latest(root, data_root, "03_primary", "train_set")
    prior = DiffusersFolderDataset(filepath=str(root / data_root / "06_models/prior_model"),
                                   version=Version(None, None)).load()
    return (*carve_validation(full), prior)


def feature_gap(images: torch.Tensor, labels: torch.Tensor, real: TensorBundle, teacher) -> float:
    """Mean over classes of ||mean teacher feature of the set - mean feature of the real class||."""
    teacher.eval()
    with torch.no_grad():
        gaps = []
        for k in range(real.num_classes):
            ours = teacher.features(to_unit(images[labels == k])).flatten(1).double().mean(0)
            theirs = teacher.features(to_unit(real["images"][real["labels"] == k])).flatten(1).double().mean(0)
            gaps.append(float(torch.linalg.vector_norm(ours - theirs) / torch.linalg.vector_norm(theirs)))
    return sum(gaps) / len(gaps)


def score(name: str, distilled: TensorBundle, train: TensorBundle, val: TensorBundle, teacher_bundle: TensorBundle,
          protocol_name: str, seeds: list[int]) -> dict[str, Any]:
    mean, std = channel_stats(train["images"])
    overrides = {"epochs": 100} if protocol_name == "dc" else {}
    protocol = get_protocol(protocol_name, mean=mean.tolist(), std=std.tolist(), **overrides)
    teacher = classifier_from_bundle(teacher_bundle)
    accs = [train_and_evaluate(distilled, val, arch="convnet", protocol=protocol, seed=s,
                               teacher=teacher if protocol.loss == "soft_label" else None)["test_accuracy"]
            for s in seeds]
    images, labels = distilled["images"], distilled["labels"]
    fidelity, _ = evaluate_accuracy(teacher, images, labels)
    mean_acc = sum(accs) / len(accs)
    spread = (sum((a - mean_acc) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5
    return {"set": name, "protocol": protocol_name, "ipc": int(distilled.meta.get("ipc", 0)),
            "val_acc": 100 * mean_acc, "val_std": 100 * spread, "accs": accs, "fidelity": 100 * fidelity,
            "feature_gap": feature_gap(images, labels, train, teacher)}


def fit_noise_space(train: TensorBundle, prior, knobs: dict[str, Any]) -> tuple[TensorBundle, float]:
    """The `latents` + `gaussians` phases for these knobs: class Gaussians, and the round-trip PSNR."""
    latents_params = {"num_steps": knobs["num_steps"], "invert_steps": knobs["invert_steps"],
                      "invert_guidance": knobs["invert_guidance"], "batch_size": 256, "round_trip_images": 50,
                      "seed": 0}
    latents, noise, report, _ = encode_and_invert(train, prior, latents_params, "cpu")
    gaussians, _, _ = fit_noise_gaussians(noise, latents, {"batch_size": 1024})
    return gaussians, report["round_trip_psnr_db"]


def d3hr_sets(train: TensorBundle, prior, teacher_bundle: TensorBundle, gaussians: TensorBundle,
              knobs: dict[str, Any], ipcs: list[int], sampling_seed: int) -> dict[str, TensorBundle]:
    """The `d3hr` phase: group sampling (paper and factorised) and generation, per IPC."""
    params = {"group_sampling": {"m": knobs["m"], "weights": [1.0, 1.0, 0.5], "chunk_size": 64,
                                 "seed": sampling_seed},
              "generation": {"guidance": knobs["guidance"], "batch_size": 256, "soft_labels": False}}
    sets = {}
    for ipc in ipcs:
        for factorised in (False, True):
            selection, _ = select_groups(gaussians, train, params, ipc=ipc, factorised=factorised)
            name = f"d3hr{'_factorised' if factorised else ''}_ipc{ipc}"
            sets[name], _ = generate_images(selection, prior, train, teacher_bundle, params, "cpu", ipc=ipc, name=name)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, help="kedro project with train_set and prior_model saved")
    parser.add_argument("--out", default="d3hr_gap.jsonl")
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the judge ConvNet")
    parser.add_argument("--sampling-seeds", default="0", help="group-sampling seeds (which noises are drawn)")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--configs", default="all",
                        help="comma-separated indices into CONFIGS, 'all', or 'none' (only --extra)")
    parser.add_argument("--extra", default="", help="JSON list of extra knob dicts to try")
    parser.add_argument("--soft-labels", action="store_true", help="also score every set with the soft_label protocol")
    parser.add_argument("--env", default="base", help="kedro environment: its data_root")
    parser.add_argument("--per-class", type=int, default=0,
                        help="fit the Gaussians on this many train-part images per class (0: all of them)")
    parser.add_argument("--teacher-epochs", type=int, default=15, help="epochs of the study's own teacher")
    args = parser.parse_args()
    _, globals_ = environment_params(Path(args.project), args.env)
    train, val, prior = load_study_inputs(Path(args.project), globals_.get("data_root", "data"))
    fit_on = per_class_subset(train, args.per_class) if args.per_class else train
    ipcs, seeds = [int(x) for x in args.ipcs.split(",")], [int(x) for x in args.seeds.split(",")]
    protocols = ["dc", "soft_label"] if args.soft_labels else ["dc"]
    out = Path(args.out)

    def emit(record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)
        with out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    teacher_params = {"arch": "convnet", "protocol": "dc", "seed": 0,
                      "protocol_overrides": {"epochs": args.teacher_epochs, "batch_size": 64}}
    teacher_bundle, _ = train_teacher(train, val, teacher_params, "cpu")
    emit({"env": args.env, "teacher_val_acc": 100 * teacher_bundle.meta["test_accuracy"], "train": len(train),
          "val": len(val), "gaussians_fitted_on": len(fit_on), "teacher_epochs": args.teacher_epochs})
    baseline_sets = {}
    for ipc in ipcs:
        baseline_sets[f"random_ipc{ipc}"] = make_random_subset(train, {"seed": 0}, ipc=ipc, name=f"random_ipc{ipc}")[0]
        baseline_sets[f"herding_ipc{ipc}"] = make_herding_subset(train, teacher_bundle, {"seed": 0}, "cpu", ipc=ipc,
                                                                 name=f"herding_ipc{ipc}")[0]
    for name, bundle in ({} if args.no_baselines else baseline_sets).items():
        bundle.meta["ipc"] = int(name.rsplit("ipc", 1)[1])
        for protocol in protocols:
            emit({"config": "baseline", **score(name, bundle, train, val, teacher_bundle, protocol, seeds)})
    named = {"all": CONFIGS, "none": []}
    chosen = named[args.configs] if args.configs in named else [CONFIGS[int(i)] for i in args.configs.split(",")]
    chosen = chosen + (json.loads(args.extra) if args.extra else [])
    fitted: dict[tuple, tuple[TensorBundle, float]] = {}  # configs that change only sampling share one inversion
    for change in chosen:
        knobs = {**BASE, **change}
        start = time.perf_counter()
        inversion = (knobs["num_steps"], knobs["invert_steps"], knobs["invert_guidance"])
        if inversion not in fitted:
            fitted[inversion] = fit_noise_space(fit_on, prior, knobs)
        gaussians, psnr = fitted[inversion]
        for sampling_seed in [int(x) for x in args.sampling_seeds.split(",")]:
            sets = d3hr_sets(train, prior, teacher_bundle, gaussians, knobs, ipcs, sampling_seed)
            for name, bundle in sets.items():
                for protocol in protocols:
                    emit({"config": change or "default", "knobs": knobs, "sampling_seed": sampling_seed,
                          "round_trip_psnr_db": psnr, **score(name, bundle, train, val, teacher_bundle, protocol, seeds),
                          "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
