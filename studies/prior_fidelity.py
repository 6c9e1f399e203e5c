"""Class fidelity of a prior against its denoiser's training steps, at several guidance scales (issue #16).

The `prior` phase reports one point: reconstruction PSNR and class fidelity after its last step. A reader sizing
a CPU or GPU budget needs the curve. Under a constant learning rate a run of N steps is the first N steps of a
longer one (`prior.train` resumes a shorter run's checkpoint), so each denoiser checkpoint written during one run
(`data/checkpoints/prior/<key>/denoiser.pt`, every `checkpoint_every` steps: weights, EMA, step) is the prior
`kedro run --pipelines prior` makes with `denoiser_train.steps` = that step. This loads each saved checkpoint's
EMA weights into the finished prior (same VAE, schedule and latent standardisation) and scores it the way the
phase's quality node does: the environment's teacher classifies `samples_per_class` class-conditional samples
per class (DDIM from pure noise, `num_steps` steps); no real image is read, so no split is chosen on.

    python studies/prior_fidelity.py --project . --env cifar10 --checkpoints snaps/*.pt --final --guidance 1 3 5 \\
        --out studies/results/prior_fidelity.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from kedro.io.core import Version
from random_draws import environment_params, load_latest

from diffdistill.datasets.diffusers_folder import DiffusersFolderDataset
from diffdistill.evaluation.saved import classifier_from_bundle
from diffdistill.prior import LatentPrior, class_fidelity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--env", required=True)
    parser.add_argument("--checkpoints", type=Path, nargs="*", default=[], help="denoiser.pt files of one run")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--steps", type=int, nargs="*", default=None, help="score only checkpoints at these steps")
    parser.add_argument("--final", action="store_true", help="also score the finished prior itself (its last step: "
                        "the phase deletes its checkpoints when it finishes)")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per (step, guidance); resumes")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    params, globals_ = environment_params(args.project, args.env)
    quality = params["prior"]["quality"]
    models = args.project / globals_["data_root"] / "06_models"
    prior = DiffusersFolderDataset(filepath=str(models / "prior_model"), model_class="diffdistill.prior.LatentPrior",
                                   version=Version(None, None)).load()
    if not isinstance(prior, LatentPrior):
        raise SystemExit(f"{models / 'prior_model'} does not hold a LatentPrior; run the prior phase first")
    teacher = load_latest(args.project, globals_["data_root"], "06_models", "teacher_model")
    judge = classifier_from_bundle(teacher, "cpu")
    final = {name: tensor.clone() for name, tensor in prior.state_dict().items()}
    done = set()
    if args.out.exists():
        done = {(r["step"], r["guidance"]) for r in map(json.loads, args.out.read_text().splitlines())
                if r["env"] == args.env}
    steps = params["prior"]["train"]["denoiser_train"]["steps"]
    sources = [*args.checkpoints, *(["final"] if args.final else [])]
    for path in sources:  # one checkpoint in memory at a time (each holds weights, EMA and optimizer)
        prior.load_state_dict(final)
        if path == "final":  # the saved prior carries the EMA weights of its last step
            state = {"step": steps}
            path = models / "prior_model"
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if args.steps is not None and state["step"] not in args.steps:
                continue
            with torch.no_grad():  # the EMA of the denoiser + label table (the ModuleDict the phase trains)
                parameters = dict(prior.named_parameters())
                for name, value in state["ema"].items():
                    parameters[name].copy_(value)
        for guidance in args.guidance:
            if (state["step"], guidance) in done:
                continue
            started = time.perf_counter()
            fidelity = class_fidelity(prior, judge, num_per_class=quality["samples_per_class"], guidance=guidance,
                                      num_steps=quality["num_steps"],
                                      generator=torch.Generator().manual_seed(quality["seed"]))
            row = {"env": args.env, "step": state["step"], "guidance": guidance,
                   "class_fidelity": round(100 * fidelity["accuracy"], 2),
                   "per_class": [round(100 * v, 1) for v in fidelity["per_class"]],
                   "samples_per_class": quality["samples_per_class"], "num_steps": quality["num_steps"],
                   "judge_test_accuracy": teacher.meta.get("test_accuracy"), "checkpoint": path.name,
                   "seconds": round(time.perf_counter() - started, 1)}
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
