"""Learning rate per LD3M space, chosen on a validation split (issue #11, "fair ablations").

Every space — latent with the published code's x0 skip (`reference`), latent with Eq. 12 as printed (`eq12`),
no_residual, decoder_only, condition_only, pixel — gets its own learning rate at the same iteration budget
(conf/base `ld3m.iterations`). The validation split is carved from the real train split (20 % per class,
seed 2024, as `d3hr_gap.py`); the test split is never read. Per (objective, space, lr) the script runs the
pipeline's own config resolution (`ld3m_config`) and the core loop (`distill_ld3m`) on the remaining 80 %,
trains a ConvNet (protocol `dc`, 100 epochs, conf/base precision) on the set and scores it on the validation
split, mean over judge seeds. MTT's experts are trained on the same 80 % (conf/base `experts`).

    python studies/ld3m_lr.py --project . --out studies/results/ld3m_lr.jsonl [--only dm] [--ipc 1]
    python studies/ld3m_lr.py --project . --env cifar10 --grid "dm:latent=0.003,0.01,0.03" \
        --out studies/results/ld3m_lr_cifar10.jsonl      # another environment's prior, parameters and budgets

Each finished point is one JSON line (resumable: points already in --out are skipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d3hr_gap import load_study_inputs  # noqa: E402
from random_draws import environment_params  # noqa: E402

from diffdistill.distill.ld3m import distill_ld3m  # noqa: E402
from diffdistill.evaluation import get_protocol, train_and_evaluate  # noqa: E402
from diffdistill.evaluation.train import channel_stats  # noqa: E402
from diffdistill.nets import net_factory  # noqa: E402
from diffdistill.pipelines.experts.nodes import train_expert_trajectories  # noqa: E402
from diffdistill.pipelines.ld3m.params import ld3m_config, method_name  # noqa: E402

# (objective, space, variant) -> learning rates tried. Centred on the reference codes' rates (reference latent:
# the published lr_w DC 0.1 / DM 1 / MTT 1000; pixel: DC/DSA 0.1, DM 1, MTT 1000 in normalised space) and, for the
# spaces whose images barely depend on Z (eq12, no_residual), on session 2's winners (10 / 100 / 1e5) and above;
# a grid whose best value sat on an edge was extended by one decade past it.
GRID: dict[tuple[str, str, str | None], list[float]] = {
    ("dc", "latent", None): [0.001, 0.01, 0.1, 1.0],
    ("dc", "latent", "eq12"): [10.0, 100.0, 1000.0],
    ("dc", "pixel", None): [0.01, 0.1, 1.0],
    ("dm", "latent", None): [0.01, 0.1, 1.0, 10.0],
    ("dm", "latent", "eq12"): [100.0, 1000.0, 1.0e4],
    ("dm", "no_residual", None): [100.0, 1000.0, 1.0e4],
    ("dm", "decoder_only", None): [0.01, 0.1, 1.0, 10.0],
    ("dm", "condition_only", None): [0.1, 1.0, 10.0, 100.0],
    ("dm", "pixel", None): [0.1, 1.0, 10.0],
    ("mtt", "latent", None): [10.0, 100.0, 1000.0],
    ("mtt", "latent", "eq12"): [1.0e5, 1.0e6],
    ("mtt", "pixel", None): [10.0, 100.0, 1000.0],
}


def study_experts(train, params: dict[str, Any]) -> list:
    """MTT expert trajectories trained on the study's train part (conf `experts`)."""
    bundle, _ = train_expert_trajectories(train, params["experts"], "cpu")
    return list(bundle["trajectories"].unbind(0))


def judge_protocol(train, params: dict[str, Any]):
    """The judge's protocol: `dc`, 100 epochs, the train part's statistics, conf/base precision."""
    mean, std = channel_stats(train["images"])
    return get_protocol("dc", mean=mean.tolist(), std=std.tolist(), epochs=100,
                        precision=params["evaluate"]["protocol_overrides"].get("precision", "fp32"))


def run_point(train, val, prior, params: dict[str, Any], *, objective: str, space: str, variant: str | None,
              lr: float, ipc: int, protocol, seeds: list[int], experts: list | None,
              iterations: int | None = None, archs: tuple[str, ...] = ("convnet",)) -> dict[str, Any]:
    """Distil one set with the pipeline's config resolution and loop, score it on the validation split.

    `iterations` overrides conf `ld3m.iterations` for this point; per arch: mean and std over the judge seeds.
    """
    ld3m_params = params["ld3m"]
    run_params = {**ld3m_params, "lr": {space + (f"_{variant}" if variant else ""): {objective: lr}}}
    if iterations is not None:
        run_params["iterations"] = {**ld3m_params["iterations"], objective: iterations}
    config = ld3m_config(run_params, train, "cpu", objective=objective, space=space, ipc=ipc, variant=variant)
    overrides = dict(ld3m_params.get("net_overrides") or {})
    factory = net_factory(getattr(config, objective).net, int(train["images"].shape[1]), train.num_classes,
                          int(train["images"].shape[-1]), overrides)
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    result = distill_ld3m(train, None if space == "pixel" else prior, config, experts=experts,
                          on_step=history.append, net_factory=factory, class_names=train.class_names)
    seconds = time.perf_counter() - started
    scores = {}
    for arch in archs:
        accs = [100 * train_and_evaluate(result.images, val, arch=arch, protocol=protocol, seed=s)["test_accuracy"]
                for s in seeds]
        mean_acc = sum(accs) / len(accs)
        spread = (sum((a - mean_acc) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5
        scores[arch] = (mean_acc, spread)
    first = archs[0]
    return {"set": method_name(objective, space, variant), "objective": objective, "space": space,
            "variant": variant or (ld3m_params["sampler"]["variant"] if space == "latent" else None), "lr": lr,
            "ipc": ipc, "iterations": config.iterations, "val_acc": scores[first][0], "val_std": scores[first][1],
            "val_by_arch": {a: {"mean": m, "std": sd} for a, (m, sd) in scores.items()}, "seeds": seeds,
            "distill_s": round(seconds, 1), "final_loss": history[-1]["loss"] if history else None,
            **{k: v for k, v in (history[0] if history else {}).items() if k.startswith("init_")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="kedro project with train_set and prior_model saved")
    parser.add_argument("--out", default="studies/results/ld3m_lr.jsonl")
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--seeds", default="0,1", help="training seeds of the judge ConvNet")
    parser.add_argument("--only", default="", help="comma-separated objectives to run (default: all)")
    parser.add_argument("--part", default="0/1", help="i/n: run every n-th point from i (two processes side by side)")
    parser.add_argument("--env", default="base", help="kedro environment: its parameters, data_root and prior")
    parser.add_argument("--grid", default="", help="objective:space[:variant]=lr,lr,...[;...]: run only these rows "
                                                     "at these rates instead of GRID (another prior's latents)")
    args = parser.parse_args()
    root = Path(args.project)
    params, globals_ = environment_params(root, args.env)
    train, val, prior = load_study_inputs(root, globals_.get("data_root", "data"))
    grid = {} if args.grid else dict(GRID)
    for row in filter(None, args.grid.split(";")):
        key, lrs = row.split("=")
        objective, space, *variant = key.split(":")
        grid[(objective, space, variant[0] if variant else None)] = [float(x) for x in lrs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    protocol = judge_protocol(train, params)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        done = {(r["set"], r["lr"]) for r in map(json.loads, out.read_text().splitlines()) if "set" in r}
    only = set(filter(None, args.only.split(",")))
    points = [(run, lr) for run, lrs in grid.items() for lr in lrs if not only or run[0] in only]
    index, count = (int(x) for x in args.part.split("/"))
    points = points[index::count]
    experts = None
    for (objective, space, variant), lr in points:
        name = method_name(objective, space, variant)
        if (name, lr) in done:
            continue
        if objective == "mtt" and experts is None:
            experts = study_experts(train, params)
        record = run_point(train, val, prior, params, objective=objective, space=space, variant=variant, lr=lr,
                           ipc=args.ipc, protocol=protocol, seeds=seeds, experts=experts)
        record = {"env": args.env, **record}
        print(json.dumps(record), flush=True)
        with out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
