"""Nodes of the `latents` pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from diffdistill.data.bundle import TensorBundle, to_signed, to_unit
from diffdistill.diffusion import ddim_invert, ddim_sample
from diffdistill.pipelines.common import as_mlflow_metrics, check_params, module_fingerprint
from diffdistill.prior import LatentPrior, psnr_signed

logger = logging.getLogger(__name__)


def _batches(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def encode_and_invert(train_set: TensorBundle, prior: LatentPrior, params: dict[str, Any],
                      device: str) -> tuple[TensorBundle, TensorBundle, dict[str, Any], dict[str, Any]]:
    """VAE latents z0 of every train image (class-sorted), and their DDIM inversion to step k of N."""
    check_params(params, "latents", {"num_steps": int, "invert_steps": int, "invert_guidance": float,
                                      "batch_size": int, "round_trip_images": int, "seed": int},
                 {"sample_posterior": bool})
    num_steps, invert_steps = int(params["num_steps"]), int(params["invert_steps"])
    guidance, batch = float(params["invert_guidance"]), int(params["batch_size"])
    if batch < 1 or int(params["round_trip_images"]) < 1:
        raise ValueError(f"latents.batch_size={batch} and latents.round_trip_images={params['round_trip_images']} "
                         "must be >= 1")
    if not 1 <= invert_steps <= num_steps:
        raise ValueError(f"latents.invert_steps={invert_steps} must be in 1..latents.num_steps={num_steps}")
    images, labels = train_set["images"], train_set["labels"]
    prior = prior.to(device)
    prior.check_dataset(num_classes=train_set.num_classes, image_size=int(images.shape[-1]),
                        channels=int(images.shape[1]))
    order = torch.argsort(labels, stable=True)  # stored grouped by class
    images, labels = images[order], labels[order]
    generator = torch.Generator(device).manual_seed(int(params["seed"]))
    sample = bool(params.get("sample_posterior", False))
    z0, zt = [], []
    start = time.perf_counter()
    for rows in _batches(len(labels), batch):
        x = to_signed(to_unit(images[rows])).to(device)
        z = prior.encode(x, sample=sample, generator=generator if sample else None)
        c = prior.condition(labels[rows].to(device))
        z0.append(z.cpu())
        zt.append(ddim_invert(prior, z, c, num_steps=num_steps, invert_steps=invert_steps, guidance=guidance).cpu())
    seconds = time.perf_counter() - start
    fingerprint = module_fingerprint(prior)
    meta = {"prior_fingerprint": fingerprint, "class_names": train_set.class_names,
            "num_classes": train_set.num_classes, "source_indices_sorted_by_class": True}
    latents = TensorBundle({"latents": torch.cat(z0), "labels": labels, "indices": order},
                           {**meta, "kind": "latents", "sample_posterior": sample})
    noise = TensorBundle({"noise": torch.cat(zt), "labels": labels, "indices": order},
                         {**meta, "kind": "noise", "num_steps": num_steps, "invert_steps": invert_steps,
                          "invert_guidance": guidance, "start_step": num_steps - invert_steps})
    report = round_trip_report(prior, images, labels, noise, params, device)
    report.update({"encode_invert_seconds": seconds, "images": int(len(labels)),
                   "images_per_second": len(labels) / max(seconds, 1e-9)})
    logger.info("latents: %d images in %.1f s; round trip PSNR %.2f dB (VAE alone %.2f dB)", len(labels), seconds,
                report["round_trip_psnr_db"], report["vae_psnr_db"])
    metrics = as_mlflow_metrics({k: report[k] for k in ("round_trip_psnr_db", "vae_psnr_db", "images_per_second")})
    return latents, noise, report, metrics


def round_trip_report(prior: LatentPrior, images: torch.Tensor, labels: torch.Tensor, noise: TensorBundle,
                      params: dict[str, Any], device: str) -> dict[str, Any]:
    """invert -> sample -> decode against the original images (PSNR), on an evenly spread subset."""
    count = min(int(params["round_trip_images"]), len(labels))
    rows = torch.linspace(0, len(labels) - 1, count).round().long()
    x = to_signed(to_unit(images[rows])).to(device)
    c = prior.condition(labels[rows].to(device))
    meta = noise.meta
    z0 = ddim_sample(prior, noise["noise"][rows].to(device), c, num_steps=meta["num_steps"],
                     start_step=meta["start_step"], guidance=meta["invert_guidance"])
    recon = prior.decode(z0).clamp(-1, 1)
    vae_only = prior.decode(prior.encode(x)).clamp(-1, 1)
    return {"round_trip_psnr_db": psnr_signed(x.cpu(), recon.cpu()), "vae_psnr_db": psnr_signed(x.cpu(), vae_only.cpu()),
            "round_trip_images": count, "num_steps": meta["num_steps"], "invert_steps": meta["invert_steps"],
            "invert_guidance": meta["invert_guidance"]}
