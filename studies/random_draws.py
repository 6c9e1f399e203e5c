"""Random real subsets over draws: the calibration row as DC Table 1 reports it (a new subset per experiment).

The pipelines' `random_ipc<N>` is one draw (seed `baselines.seed + 1000 N`) trained with several seeds, so its ±
is training noise only. DC's random rows average experiments that each draw a new subset (../shared/notes/peers.md:
5 experiments x 20 models), so their ± also holds which images were drawn, which dominates at IPC 1. This study
draws `--draws` subsets with the baselines' own `random_real_subset` (draw d: seed `baselines.seed + 1000 N + d`,
d = 0 is the pipeline's set), trains draw d with training seed d under the calibration protocol and prints the
mean ± std over draws (std as `np.std`) next to the pipeline's one-draw row. It reads the project's latest saved
`train_set` / `test_set` of the environment (run `kedro run --env <env> --pipelines preprocess` first).

    python studies/random_draws.py --project . --env fashion_mnist --ipcs 1 10 --draws 5 --out draws.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from kedro.config import OmegaConfigLoader
from kedro.io.core import Version

from diffdistill.data.bundle import TensorBundle
from diffdistill.datasets.tensor_bundle import TensorBundleDataset
from diffdistill.distill.baselines import random_real_subset
from diffdistill.evaluation import get_protocol, train_and_evaluate


def environment_params(project: Path, env: str) -> tuple[dict, dict]:
    """The environment's parameters (over conf/base) and globals, as `kedro run --env <env>` reads them."""
    loader = OmegaConfigLoader(conf_source=str(project / "conf"), base_env="base", default_run_env=env,
                               merge_strategy={"parameters": "soft"})
    return loader["parameters"], loader["globals"]


def load_latest(project: Path, data_root: str, folder: str, name: str) -> TensorBundle:
    """The latest saved version of a versioned tensor bundle of the environment."""
    return TensorBundleDataset(filepath=str(project / data_root / folder / f"{name}.safetensors"),
                               version=Version(None, None)).load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--env", required=True)
    parser.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per (ipc, draw); resumes")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    params, globals_ = environment_params(args.project, args.env)
    evaluate = params["evaluate"]
    protocol = get_protocol(evaluate["protocol"], **evaluate.get("protocol_overrides", {}))
    train, test = (load_latest(args.project, globals_["data_root"], "03_primary", split)
                   for split in ("train_set", "test_set"))
    done = {(r["ipc"], r["draw"]): r for r in map(json.loads, args.out.read_text().splitlines())} \
        if args.out.exists() else {}
    for ipc in args.ipcs:
        for draw in range(args.draws):
            if (ipc, draw) in done:
                continue
            start = time.perf_counter()
            subset = random_real_subset(train, ipc, params["baselines"]["seed"] + 1000 * ipc + draw)
            accuracy = 100 * train_and_evaluate(subset, test, arch="convnet", protocol=protocol, seed=draw)["test_accuracy"]
            done[(ipc, draw)] = {"env": args.env, "ipc": ipc, "draw": draw, "seed": draw, "accuracy": accuracy,
                                 "protocol": protocol.name, "epochs": protocol.epochs,
                                 "seconds": round(time.perf_counter() - start, 1)}
            with args.out.open("a") as handle:
                handle.write(json.dumps(done[(ipc, draw)]) + "\n")
            print(json.dumps(done[(ipc, draw)]), flush=True)
        accs = [done[(ipc, d)]["accuracy"] for d in range(args.draws)]
        print(f"{args.env} random IPC {ipc}, {protocol.name} {protocol.epochs} epochs, {args.draws} draws x 1 seed: "
              f"{statistics.fmean(accs):.2f} ± {statistics.pstdev(accs):.2f} ({', '.join(f'{a:.1f}' for a in accs)})")


if __name__ == "__main__":
    main()
