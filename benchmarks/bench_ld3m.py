"""Peak memory and time per LD3M iteration: the two-pass schemes vs plain autograd.

For each number of diffusion steps T and each mode, a fresh subprocess builds a small real
`LatentPrior` (diffusers AutoencoderKL + UNet2DModel with attention, random weights) and runs
LD3M's `Synthesizer` (residual sampler, paper variant, CFG) on learnable Z and c, pushing dL/dX
of a fixed loss back into them:
  replay:     pass 1 without graph keeps each step's latent; pass 2 replays them, each step is
              recomputed once inside backward (the default in `distill_ld3m`)
  checkpoint: pass 1 without graph; pass 2 regenerates chunk-wise with torch.utils.checkpoint
              around every step (the reference scheme: one more denoiser pass than replay)
  plain:      one forward keeping the whole graph, one backward
Memory on CPU is the process's peak RSS (getrusage) above the level after setup and one
graph-free generation; on CUDA, torch.cuda.max_memory_allocated above the same baseline.
Memory runs in a fresh process per (mode, T) (`--jobs` of them at once), with glibc's MALLOC_MMAP_THRESHOLD_=65536
(`--mmap-threshold`): under glibc's default dynamic threshold, freed activation buffers stay in
the heap and RSS creeps up with the number of allocate/free cycles, which is not memory the
scheme holds. That setting makes every large allocation a fresh mmap and slows compute down, so
timing runs in a separate process per mode with the default allocator.

    python benchmarks/bench_ld3m.py                       # T in 2 5 10 20, CPU, ~1 minute
    python benchmarks/bench_ld3m.py --device cuda --images 100 --image-size 64 --width 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch


def build_prior(args):
    from diffusers import DDIMScheduler

    from diffdistill.prior import AutoencoderConfig, DenoiserConfig, LatentPrior
    from diffdistill.prior.train import build_autoencoder, build_denoiser

    g = torch.Generator().manual_seed(0)
    w = args.width
    vae = build_autoencoder(
        AutoencoderConfig(block_out_channels=(w // 2, w, w), norm_num_groups=8, latent_channels=4),
        3,
        args.image_size,
        g,
    )
    latent_size = args.image_size // 4
    unet = build_denoiser(
        DenoiserConfig(block_out_channels=(w, 2 * w), attention_head_dim=w, norm_num_groups=8), 4, latent_size, g
    )
    table = torch.randn((11, 4 * w), generator=g)
    config = dict(DDIMScheduler(num_train_timesteps=1000).config)
    return LatentPrior(vae, unet, config, label_table=table).to(args.device).requires_grad_(False)


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_iteration(args, prior, mode: str, steps: int):
    """One distillation step's generator side in `mode` at T = steps: (run, synthesizer)."""
    from diffdistill.config import build
    from diffdistill.diffusion.residual import ResidualNoise, generate_and_backprop
    from diffdistill.distill.ld3m import LD3MConfig, LD3MState, Synthesizer

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    n = args.images
    labels = torch.arange(n, device=device) % 10
    state = LD3MState(
        labels=labels,
        latents=torch.randn((n, *prior.latent_shape), generator=g).to(device).requires_grad_(True),
        conditions=prior.condition(labels).detach().clone().requires_grad_(True),
        noise=ResidualNoise.draw(n, prior.latent_shape, num_steps=steps, eta=args.eta, generator=g, device=device),
    )
    config = build(
        LD3MConfig,
        {
            "device": args.device,
            "sampler": {
                "num_steps": steps,
                "guidance": args.guidance,
                "eta": args.eta,
                "variant": "reference",
                "backprop": mode,
                "chunk_size": args.chunk_size,
            },
        },
        "ld3m",
    )
    synthesize = Synthesizer(prior, state, config, (3, args.image_size, args.image_size))
    target = torch.rand((n, 3, args.image_size, args.image_size), generator=g).to(device)

    def loss_fn(images):
        return (images - target).square().mean()

    def run():
        if mode == "plain":
            loss_fn(synthesize(slice(0, n))).backward()
        else:
            generate_and_backprop(synthesize, n, loss_fn, chunk_size=args.chunk_size)
        state.latents.grad = state.conditions.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run, synthesize


def measure_memory(args, prior, mode: str, steps: int) -> dict:
    """Peak above the level after setup and one graph-free generation, over one iteration."""
    from diffdistill.diffusion.residual import generate_images

    device = torch.device(args.device)
    run, synthesize = make_iteration(args, prior, mode, steps)
    generate_images(synthesize, args.images, args.chunk_size)  # allocator warm-up shared by every mode
    synthesize.trajectories.clear()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        baseline = peak_bytes(device)
    run()
    return {
        "mode": mode,
        "steps": steps,
        "peak_above_baseline_mb": (peak_bytes(device) - baseline) / 2**20,
        "peak_total_mb": peak_bytes(device) / 2**20,
    }


def measure_time(args, prior, modes: list[str], steps: int) -> list[dict]:
    """Modes interleaved round by round (a busy machine slows them alike); best of `--iterations`."""
    runs = {mode: make_iteration(args, prior, mode, steps)[0] for mode in modes}
    for run in runs.values():
        run()  # warm-up
    times = {mode: [] for mode in modes}
    for _ in range(args.iterations):
        for mode, run in runs.items():
            started = time.perf_counter()
            run()
            times[mode].append(time.perf_counter() - started)
    return [
        {"mode": mode, "steps": steps, "time_s": min(t), "time_median_s": statistics.median(t)}
        for mode, t in times.items()
    ]


def worker(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    prior = build_prior(args)
    if args.measure == "memory":
        return [measure_memory(args, prior, args.modes[0], args.steps[0])]
    return [row for steps in args.steps for row in measure_time(args, prior, args.modes, steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--modes", nargs="+", default=["replay", "checkpoint", "plain"])
    parser.add_argument("--images", type=int, default=10, help="synthetic images (e.g. 10 classes × IPC)")
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=32, help="base channel width of VAE and UNet")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per mode after one warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="memory workers run at once (use 1 on CUDA)")
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=65536,
        help="glibc MALLOC_MMAP_THRESHOLD_ for the memory workers; 0 = glibc default",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", default="time", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    passthrough = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k not in ("steps", "modes", "worker", "measure", "mmap_threshold", "jobs")
    ]
    memory_env = dict(os.environ)
    if args.mmap_threshold and args.device == "cpu":
        memory_env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)

    def spawn(modes, measure, steps, env):
        command = [
            sys.executable,
            __file__,
            "--worker",
            f"--measure={measure}",
            "--modes",
            *modes,
            "--steps",
            *map(str, steps),
            *passthrough,
        ]
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        return {(row["mode"], row["steps"]): row for row in json.loads(out.strip().splitlines()[-1])}

    timing = spawn(args.modes, "time", args.steps, dict(os.environ))
    memory = {}
    configurations = [(mode, steps) for mode in args.modes for steps in args.steps]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # peak RSS is per process: parallel is fine
        for rows in pool.map(lambda ms: spawn([ms[0]], "memory", [ms[1]], memory_env), configurations):
            memory.update(rows)
    for mode, steps in configurations:
        m, t = memory[mode, steps], timing[mode, steps]
        print(
            f"{mode:>10}  T={steps:>2}  time/iter {t['time_s']:7.3f} s (median {t['time_median_s']:.3f})  "
            f"peak +{m['peak_above_baseline_mb']:8.1f} MB  (total {m['peak_total_mb']:.0f} MB)"
        )

    lo, hi = min(args.steps), max(args.steps)
    for mode in args.modes:
        ratio = memory[mode, hi]["peak_above_baseline_mb"] / max(memory[mode, lo]["peak_above_baseline_mb"], 1e-9)
        print(f"{mode}: peak memory T={hi} / T={lo} = {ratio:.2f}")
    for steps in args.steps:
        for mode in ("replay", "checkpoint"):
            if (mode, steps) in timing and ("plain", steps) in timing:
                ratio = timing[mode, steps]["time_s"] / timing["plain", steps]["time_s"]
                print(f"T={steps}: time {mode} / plain = {ratio:.2f}")


if __name__ == "__main__":
    main()
