"""LD3M latent vs its pixel twin as the iteration budget grows, on the validation split (issue #11).

At conf/base's IPC-1 budget (40 DM iterations; the paper runs 5,000) the latent set does not beat its pixel twin on
the unseen-architecture mean. This study asks whether the budget is what limits it: DM in latent space (the
published code's sampler) and in pixel space, each at its chosen learning rate (conf/base `ld3m.lr`), distilled
for 40 / 120 / 360 iterations on the 80 % train part, each set scored on the 20 % validation split (never the test
split) by ConvNet and the four unseen architectures (protocol `dc`, 100 epochs, conf/base precision), mean ± std
over judge seeds.

    python studies/ld3m_budget.py --project . --out studies/results/ld3m_budget.jsonl   # resumable
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d3hr_gap import load_study_inputs  # noqa: E402
from ld3m_lr import judge_protocol, run_point  # noqa: E402
from random_draws import environment_params  # noqa: E402

ARCHS = ("convnet", "alexnet", "vgg11", "resnet18", "vit")
RUNS = (("dm", "latent"), ("dm", "pixel"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="kedro project with train_set and prior_model saved")
    parser.add_argument("--out", default="studies/results/ld3m_budget.jsonl")
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--iterations", default="40,120,360")
    parser.add_argument("--seeds", default="0,1", help="training seeds of the judges")
    parser.add_argument("--archs", default=",".join(ARCHS), help="judges: convnet first, then the unseen ones")
    parser.add_argument("--env", default="base", help="kedro environment: its parameters, data_root and prior")
    args = parser.parse_args()
    params, globals_ = environment_params(Path(args.project), args.env)
    train, val, prior = load_study_inputs(Path(args.project), globals_.get("data_root", "data"))
    protocol = judge_protocol(train, params)
    seeds = [int(s) for s in args.seeds.split(",")]
    archs = tuple(args.archs.split(","))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        done = {(r["set"], r["iterations"]) for r in map(json.loads, out.read_text().splitlines())}
    for iterations in [int(i) for i in args.iterations.split(",")]:
        for objective, space in RUNS:
            if (f"ld3m_{objective}_{space}", iterations) in done:
                continue
            lr = float(params["ld3m"]["lr"][space][objective])
            record = run_point(train, val, prior, params, objective=objective, space=space, variant=None, lr=lr,
                               ipc=args.ipc, protocol=protocol, seeds=seeds, experts=None, iterations=iterations,
                               archs=archs)
            unseen = [record["val_by_arch"][a]["mean"] for a in archs[1:]]
            record["val_unseen_mean"] = sum(unseen) / len(unseen) if unseen else None
            print(json.dumps(record), flush=True)
            with out.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
