"""Inversion: VAE latents of a real split and their deterministic DDIM inversion to step k of N (D3HR step 1).

Classes are processed one by one, in batches that never straddle two classes, and a posterior sample (if
asked for) draws from a generator of (seed, class): a range of classes runs exactly the kernels and draws
of the whole split for its classes, so class shards concatenate to the unsharded bytes. `round_trip_report`
checks the inversion: invert -> sample back -> decode against the original images (PSNR).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffdistill.data.bundle import to_signed, to_unit
from diffdistill.diffusion import ddim_invert, ddim_sample
from diffdistill.distill.d3hr.config import LatentsConfig
from diffdistill.prior import LatentPrior, psnr_signed
from diffdistill.progress import Progress
from diffdistill.rng import derive_seed


@dataclass(frozen=True)
class Inversion:
    """One class range of a split: z0 = `latents`, their inversion zT = `noise` (both (n, C, h, w), float32),
    `labels`, the rows of the split they came from (`indices`, grouped by class) and the seconds it took."""

    latents: Tensor
    noise: Tensor
    labels: Tensor
    indices: Tensor
    seconds: float


def _batches(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def invert_classes(images: Tensor, labels: Tensor, num_classes: int, prior: LatentPrior, config: LatentsConfig, *,
                   classes: tuple[int, int] | None = None, device: str = "cpu") -> Inversion:
    """Encode the uint8 `images` (N, C, H, W) of the classes [first, stop) (None: all `num_classes`) with the
    prior's VAE and DDIM-invert them to `config.start_step` of `config.num_steps`, class by class."""
    prior = prior.to(device)
    prior.check_dataset(num_classes=num_classes, image_size=int(images.shape[-1]), channels=int(images.shape[1]))
    first, stop = (0, num_classes) if classes is None else classes
    order = torch.argsort(labels, stable=True)  # stored grouped by class
    order = order[(labels[order] >= first) & (labels[order] < stop)]
    sample = config.sample_posterior
    z0, zt = [], []
    start = time.perf_counter()
    with Progress("latents encode + invert", len(order), unit="images") as bar:
        for k in range(first, stop):
            rows_of_class = order[labels[order] == k]
            generator = torch.Generator(device).manual_seed(derive_seed(config.seed, k))
            for rows in _batches(len(rows_of_class), config.batch_size):
                index = rows_of_class[rows]
                x = to_signed(to_unit(images[index])).to(device)
                z = prior.encode(x, sample=sample, generator=generator if sample else None)
                c = prior.condition(labels[index].to(device))
                z0.append(z.cpu())
                zt.append(ddim_invert(prior, z, c, num_steps=config.num_steps, invert_steps=config.invert_steps,
                                      guidance=config.invert_guidance).cpu())
                bar.advance(len(index), **{"class": k})
    seconds = time.perf_counter() - start
    return Inversion(torch.cat(z0), torch.cat(zt), labels[order], order, seconds)


@torch.no_grad()
def round_trip_report(prior: LatentPrior, images: Tensor, labels: Tensor, noise: Tensor, *, num_steps: int,
                      invert_steps: int, guidance: float, count: int, device: str = "cpu") -> dict[str, Any]:
    """invert -> sample -> decode against the original uint8 `images` (PSNR, dB) on `count` evenly spread rows
    of `noise` (the inversion of `images`, row by row), beside the VAE alone (encode -> decode)."""
    prior = prior.to(device)
    count = min(int(count), len(labels))
    rows = torch.linspace(0, len(labels) - 1, count).round().long()
    x = to_signed(to_unit(images[rows])).to(device)
    c = prior.condition(labels[rows].to(device))
    z0 = ddim_sample(prior, noise[rows].to(device), c, num_steps=num_steps, start_step=num_steps - invert_steps,
                     guidance=guidance)
    recon = prior.decode(z0).clamp(-1, 1)
    vae_only = prior.decode(prior.encode(x)).clamp(-1, 1)
    return {"round_trip_psnr_db": psnr_signed(x.cpu(), recon.cpu()), "vae_psnr_db": psnr_signed(x.cpu(), vae_only.cpu()),
            "round_trip_images": count, "num_steps": num_steps, "invert_steps": invert_steps,
            "invert_guidance": guidance}
