"""Throughput of the latent phase on a prior of the embedded-default size, and sampler-loop overhead.

Prints images/s for encode, DDIM inversion (D3HR's N=50, k=31) and DDIM sampling from noise
(N=50, guided), per batch size; then the time the sampling / inversion loops spend beyond the
bare denoiser forward calls they make (goal: <= 10 %). Weights are freshly initialised
(throughput does not depend on training). Default run: well under 2 minutes on 2 CPU cores.

    python benchmarks/bench_latents.py [--batch-sizes 1 16 128] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from diffdistill.diffusion import ddim_invert, ddim_sample, ddim_schedule
from diffdistill.prior import LatentPrior, PriorTrainConfig
from diffdistill.prior.train import build_autoencoder, build_denoiser


def build_default_prior(num_classes: int, channels: int, image_size: int, device: str) -> LatentPrior:
    config = PriorTrainConfig()
    g = torch.Generator().manual_seed(0)
    vae = build_autoencoder(config.autoencoder, channels, image_size, g)
    latent_size = image_size // 2 ** (len(config.autoencoder.block_out_channels) - 1)
    unet = build_denoiser(config.denoiser, config.autoencoder.latent_channels, latent_size, g)
    table = torch.randn(num_classes + 1, unet.time_embedding.linear_1.out_features, generator=g)
    schedule = dict(vars(config.schedule), prediction_type="epsilon")
    return LatentPrior(vae, unet, schedule, label_table=table, default_guidance=config.default_guidance).to(device)


def timed(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time of `fn` over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        times.append(_once(fn, device))
    return statistics.median(times)


def _once(fn: Callable[[], object], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def overhead(loop: Callable[[], object], bare: Callable[[], object], repeats: int, device: str) -> tuple[float, float]:
    """(loop time, median of loop/bare - 1) over interleaved runs, so machine load hits both alike."""
    loop(), bare()
    pairs = [(_once(loop, device), _once(bare, device)) for _ in range(repeats)]
    return statistics.median(a for a, _ in pairs), statistics.median(a / b for a, b in pairs) - 1.0


def bare_forwards(prior: LatentPrior, z: torch.Tensor, c: torch.Tensor, timesteps: list[int],
                  guidance: float) -> None:
    """Exactly the denoiser calls the loops make, with nothing around them."""
    if guidance != 1.0:
        z, c = torch.cat([z, z]), torch.cat([c, prior.null_condition(c.shape[0])])
    for t in timesteps:
        prior.denoiser(z, torch.full((z.shape[0],), t, device=z.device), class_labels=c)


def bench_batch(prior: LatentPrior, batch: int, args: argparse.Namespace, guidance: float,
                sample_ts: list[int], invert_ts: list[int], g: torch.Generator) -> str:
    """One table row: encode / invert / sample images/s and the loops' overhead at `batch`."""
    n, k, device = args.num_steps, args.invert_steps, args.device
    images = (torch.rand(batch, args.channels, args.image_size, args.image_size, generator=g) * 2 - 1).to(device)
    c = prior.condition((torch.arange(batch) % prior.num_classes).to(device))
    z0 = prior.encode(images)
    noise = torch.randn(z0.shape, generator=g).to(device)
    t_encode = timed(lambda: prior.encode(images), args.repeats, device)
    t_sample, sample_overhead = overhead(
        lambda: ddim_sample(prior, noise, c, num_steps=n, guidance=guidance),
        lambda: bare_forwards(prior, noise, c, sample_ts, guidance), args.repeats, device)
    t_invert, invert_overhead = overhead(
        lambda: ddim_invert(prior, z0, c, num_steps=n, invert_steps=k),
        lambda: bare_forwards(prior, z0, c, invert_ts, 1.0), args.repeats, device)
    return (f"{batch:>6} {batch / t_encode:>13.0f} {batch / t_invert:>13.0f} {batch / t_sample:>13.0f} "
            f"{100 * sample_overhead:>10.1f}% {100 * invert_overhead:>10.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument("--invert-steps", type=int, default=31)
    parser.add_argument("--guidance", type=float, default=None, help="sampling guidance (default: the prior's)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for tiny nets)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = build_default_prior(10, args.channels, args.image_size, args.device).requires_grad_(False)
    guidance = prior.default_guidance if args.guidance is None else args.guidance
    n, k = args.num_steps, args.invert_steps
    params = sum(p.numel() for p in prior.denoiser.parameters())
    print(f"prior: {args.channels}x{args.image_size}px -> latent {prior.latent_shape}, denoiser {params / 1e6:.2f} M "
          f"params, threads {args.threads}, device {args.device}, N={n}, k={k}, guidance={guidance}")
    schedule = ddim_schedule(prior, n)
    sample_ts = [int(t) for t in schedule.timesteps]
    invert_ts = [int(t) for t in schedule.timesteps[n - k:]][::-1]
    print(f"{'batch':>6} {'encode img/s':>13} {'invert img/s':>13} {'sample img/s':>13} "
          f"{'sample ovh':>11} {'invert ovh':>11}")
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for batch in args.batch_sizes:
            print(bench_batch(prior, batch, args, guidance, sample_ts, invert_ts, g), flush=True)

if __name__ == "__main__":
    main()
