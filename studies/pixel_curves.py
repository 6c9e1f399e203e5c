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
    python studies/pixel_curves.py --report --out studies/results/pixel_curves.jsonl --plot curves.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from random_draws import environment_params, load_latest

from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.ld3m import distill_ld3m
from diffdistill.evaluation import get_protocol, train_and_evaluate
from diffdistill.pipelines.artifacts import real_split_meta
from diffdistill.pipelines.ld3m.params import ld3m_config
from diffdistill.pipelines.ld3m.records import run_inputs
from diffdistill.published import published_values

# The papers' ConvNet-3 rows (DSA / DM / MTT from diffdistill.published; DC's Table 2, no DSA) and iterations.
DC_TABLE = {"cifar10": {1: 28.3, 10: 44.9}, "fashion_mnist": {1: 70.5, 10: 82.3}}
PAPER_SETS = {"dsa": "ld3m_dc_pixel", "dm": "ld3m_dm_pixel", "mtt": "ld3m_mtt_pixel"}
PAPER_ITERATIONS = {"dc": 1000, "dsa": 1000, "dm": 20000, "mtt": 5000}
# method -> (objective, dsa_strategy, the paper's evaluation protocol)
METHODS = {
    "dc": ("dc", "none", "dc_reference_no_augment"),
    "dsa": ("dc", "auto", "dc_reference"),
    "dm": ("dm", "auto", "dc_reference"),
    "mtt": ("mtt", "auto", "dc_reference"),
}


def published(env: str, method: str, ipc: int) -> float | None:
    if method == "dc":
        return DC_TABLE.get(env, {}).get(ipc)
    value = published_values(env).get((PAPER_SETS[method], ipc, "convnet", METHODS[method][2]))
    return None if value is None else value[0]


def report(rows: list[dict], plot: Path | None) -> None:
    """The curves as a markdown table (one row per environment, method and IPC) and, with `plot`, a figure."""
    curves: dict[tuple[str, str, int], list[dict]] = {}
    for row in rows:
        curves.setdefault((row["env"], row["method"], row["ipc"]), []).append(row)
    print("| dataset | method | IPC | accuracy at iterations (ConvNet-3, mean ± std over seeds) | paper "
          "(iterations) | protocol, epochs |")
    print("|---|---|---|---|---|---|")
    for (env, method, ipc), points in sorted(curves.items()):
        points.sort(key=lambda r: r["iterations"])
        trend = ", ".join(f"{r['iterations']}: {r['mean']:.1f} ± {r['std']:.1f}" for r in points)
        paper = published(env, method, ipc)
        paper_text = "–" if paper is None else f"{paper:.1f} ({PAPER_ITERATIONS[method]:,})"
        print(f"| {env} | {method.upper()} | {ipc} | {trend} | {paper_text} | {points[0]['protocol']}, "
              f"{points[0]['epochs']} |")
    if plot is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({env for env, _, _ in curves})
    figure, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for axis, env in zip(axes[0], envs, strict=True):
        for index, ((_, method, ipc), points) in enumerate(sorted(k for k in curves.items() if k[0][0] == env)):
            colour = f"C{index}"
            x = [max(r["iterations"], 1) for r in points]  # iteration 0 (the init) drawn at 1 on the log axis
            axis.errorbar(x, [r["mean"] for r in points], yerr=[r["std"] for r in points], marker="o",
                          color=colour, capsize=3, label=f"{method.upper()} IPC {ipc}")
            paper = published(env, method, ipc)
            if paper is not None:  # the paper's value at its own iteration count, joined to our last point
                axis.plot([x[-1], PAPER_ITERATIONS[method]], [points[-1]["mean"], paper], color=colour,
                          linestyle=":", linewidth=1)
                axis.plot([PAPER_ITERATIONS[method]], [paper], marker="*", markersize=11, color=colour,
                          linestyle="none", label=f"{method.upper()} IPC {ipc}, paper")
        axis.set_xscale("log")
        axis.set_xlabel("distillation iterations (0 = real init, drawn at 1)")
        axis.set_ylabel("test accuracy % (ConvNet-3, own protocol)")
        axis.set_title(env)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(plot, dpi=120)
    print(f"wrote {plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only print the table of --out (and --plot it)")
    parser.add_argument("--plot", type=Path, default=None, help="with --report: write the curves as a PNG")
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--env")
    parser.add_argument("--method", choices=sorted(METHODS))
    parser.add_argument("--ipc", type=int)
    parser.add_argument("--iterations", type=int, nargs="+", help="checkpoint counts, ascending")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds per point")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per point; resumes")
    args = parser.parse_args()
    if args.report:
        report([json.loads(line) for line in args.out.read_text().splitlines()], args.plot)
        return
    missing = [f"--{name}" for name in ("env", "method", "ipc", "iterations") if getattr(args, name) is None]
    if missing:
        parser.error(f"a run needs {', '.join(missing)} (or --report)")
    if args.iterations != sorted(set(args.iterations)):
        parser.error(f"--iterations must be ascending and distinct, got {args.iterations}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    params, globals_ = environment_params(args.project, args.env)
    objective, dsa, protocol_name = METHODS[args.method]
    evaluate = params["evaluate"]
    # the epoch budget the environment gives this paper protocol (its no-augment twin shares it)
    overrides = evaluate.get("paper_protocol_overrides", {}).get(protocol_name.removesuffix("_no_augment"), {})
    protocol = get_protocol(protocol_name, **overrides)
    train = load_latest(args.project, globals_["data_root"], "03_primary", "train_set")
    test = load_latest(args.project, globals_["data_root"], "03_primary", "test_set")
    trajectories = (load_latest(args.project, globals_["data_root"], "06_models", "expert_trajectories")
                    if objective == "mtt" else None)

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
        # the node's own input checks: MTT experts of this train split and matching net, unbound per expert
        _, experts, _ = run_inputs(f"{args.method}_ipc{args.ipc}", config, train, None, trajectories,
                                   dict(ld3m.get("net_overrides") or {}))
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
