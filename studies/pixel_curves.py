"""Accuracy against distillation iterations for the pixel-space classics (DC, DSA, DM, MTT) on one environment.

The papers run 1,000 (DC / DSA) to 20,000 (DM) iterations; a CPU session affords a few hundred. This study shows
the trend a reader can extrapolate: it runs the project's own pixel-space loop (`distill.ld3m`, space `pixel`,
the environment's `ld3m` parameters: learning rates, momentum, DC's loop table, DSA) to each checkpoint count in
`--iterations` in turn, resuming from the previous count (a resumed run replays the uninterrupted one byte for
byte, so the set at N iterations is the one `kedro run --pipelines ld3m` makes with `iterations: N`), and trains
ConvNet-3 on each set under the method's own paper protocol with the environment's epoch budget. Iteration 0 is
the initialisation (real images of the class, the loop's own picks). The curve is reported, never used to choose
anything (final-epoch accuracy on the test split, like every table).

`--method dsa` is the pipeline's `ld3m_dc_pixel` (DC's gradient matching with DSA, `dsa_strategy: auto`);
`--method dc` the same without DSA, evaluated without augmentation as DC's Table 1 is. DM / DSA / MTT are
evaluated as their code does: with DSA augmentation (`dc_reference`). Rows are JSON lines; the run resumes
(finished points are skipped, the distillation resumes from its checkpoint folder, data/checkpoints/pixel_curves).

    python studies/pixel_curves.py --project . --env cifar10 --method dm --ipc 1 --iterations 0 50 100 200 \\
        --out studies/results/pixel_curves.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from kedro.io.core import Version
from random_draws import environment_params

from diffdistill.data.bundle import TensorBundle
from diffdistill.datasets.tensor_bundle import TensorBundleDataset
from diffdistill.distill.ld3m import distill_ld3m
from diffdistill.evaluation import get_protocol, train_and_evaluate
from diffdistill.pipelines.artifacts import real_split_meta
from diffdistill.pipelines.ld3m.params import ld3m_config

# method -> (objective, dsa_strategy, the paper's evaluation protocol)
METHODS = {
    "dc": ("dc", "none", "dc_reference_no_augment"),
    "dsa": ("dc", "auto", "dc_reference"),
    "dm": ("dm", "auto", "dc_reference"),
    "mtt": ("mtt", "auto", "dc_reference"),
}


def load_split(project: Path, data_root: str, folder: str, name: str) -> TensorBundle:
    """The latest saved version of a versioned tensor bundle of the environment."""
    return TensorBundleDataset(filepath=str(project / data_root / folder / f"{name}.safetensors"),
                               version=Version(None, None)).load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--env", required=True)
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    parser.add_argument("--ipc", type=int, required=True)
    parser.add_argument("--iterations", type=int, nargs="+", required=True, help="checkpoint counts, ascending")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds per point")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per point; resumes")
    args = parser.parse_args()
    if args.iterations != sorted(set(args.iterations)):
        parser.error(f"--iterations must be ascending and distinct, got {args.iterations}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    params, globals_ = environment_params(args.project, args.env)
    objective, dsa, protocol_name = METHODS[args.method]
    evaluate = params["evaluate"]
    # the epoch budget the environment gives this paper protocol (its no-augment twin shares it)
    overrides = evaluate.get("paper_protocol_overrides", {}).get(protocol_name.removesuffix("_no_augment"), {})
    protocol = get_protocol(protocol_name, **overrides)
    train = load_split(args.project, globals_["data_root"], "03_primary", "train_set")
    test = load_split(args.project, globals_["data_root"], "03_primary", "test_set")
    experts = None
    if objective == "mtt":
        experts = list(load_split(args.project, globals_["data_root"], "06_models", "expert_trajectories").tensors.values())

    key = {"env": args.env, "method": args.method, "ipc": args.ipc}
    done = {}
    if args.out.exists():
        for row in map(json.loads, args.out.read_text().splitlines()):
            if all(row.get(k) == v for k, v in key.items()):
                done[row["iterations"]] = row
    work = args.project / "data" / "checkpoints" / "pixel_curves" / f"{args.env}_{args.method}_ipc{args.ipc}"
    ld3m = {**params["ld3m"], "dsa_strategy": dsa, "checkpoint_every": 10}
    for count in args.iterations:
        if count in done:
            continue
        config = ld3m_config({**ld3m, "iterations": {objective: count}}, train, "cpu", objective=objective,
                             space="pixel", ipc=args.ipc)
        result = distill_ld3m(train, None, config, experts=experts, checkpoint_dir=work,
                              class_names=train.class_names)
        distilled = TensorBundle(result.images.tensors, {**result.images.meta, **real_split_meta(train)})
        started = time.perf_counter()
        accuracies = [100 * train_and_evaluate(distilled, test, arch="convnet", protocol=protocol,
                                               seed=seed)["test_accuracy"] for seed in args.seeds]
        row = {**key, "iterations": count, "objective": objective, "dsa_strategy": config.dsa_strategy,
               "lr": config.learning_rate(), "protocol": protocol.name, "epochs": protocol.epochs,
               "seeds": args.seeds, "accuracies": accuracies, "mean": statistics.fmean(accuracies),
               "std": statistics.pstdev(accuracies),
               "distill_s": round(sum(result.history.get("time_s", [])), 1),
               "eval_s": round(time.perf_counter() - started, 1)}
        row.update({k: v for k, v in result.images.meta.items() if k == "syn_lr"})
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
