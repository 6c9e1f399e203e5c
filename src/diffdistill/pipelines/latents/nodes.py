"""Nodes of the `latents` pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from diffdistill.data.bundle import TensorBundle, to_signed, to_unit
from diffdistill.diffusion import ddim_invert, ddim_sample
from diffdistill.pipelines.common import as_mlflow_metrics, check_params
from diffdistill.pipelines.sharding import check_parts_cover, class_range, require_same
from diffdistill.prior import LatentPrior, psnr_signed
from diffdistill.rng import derive_seed
from diffdistill.workdir import module_fingerprint

logger = logging.getLogger(__name__)


def _batches(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def encode_and_invert(train_set: TensorBundle, prior: LatentPrior, params: dict[str, Any],
                      device: str) -> tuple[TensorBundle, TensorBundle, dict[str, Any], dict[str, Any]]:
    """VAE latents z0 of every train image (class-sorted), and their DDIM inversion to step k of N."""
    part = encode_and_invert_classes(train_set, prior, params, device)
    return merge_latent_parts(train_set, prior, params, device, part)


def _check_latents_params(params: dict[str, Any]) -> None:
    check_params(params, "latents", {"num_steps": int, "invert_steps": int, "invert_guidance": float,
                                      "batch_size": int, "round_trip_images": int, "seed": int},
                 {"sample_posterior": bool})
    if params["batch_size"] < 1 or int(params["round_trip_images"]) < 1:
        raise ValueError(f"latents.batch_size={params['batch_size']} and latents.round_trip_images="
                         f"{params['round_trip_images']} must be >= 1")
    if not 1 <= int(params["invert_steps"]) <= int(params["num_steps"]):
        raise ValueError(f"latents.invert_steps={params['invert_steps']} must be in 1..latents.num_steps="
                         f"{params['num_steps']}")


@torch.no_grad()
def encode_and_invert_classes(train_set: TensorBundle, prior: LatentPrior, params: dict[str, Any], device: str,
                              *, shard: tuple[int, int] | None = None) -> TensorBundle:
    """z0 and zT of the classes of `shard` (index, count; None = all), class by class.

    Batches never straddle two classes and the posterior sample (if on) draws from a generator of
    (seed, class): a class shard runs exactly the kernels and draws of the full run for its classes.
    """
    _check_latents_params(params)
    num_steps, invert_steps = int(params["num_steps"]), int(params["invert_steps"])
    guidance, batch = float(params["invert_guidance"]), int(params["batch_size"])
    images, labels = train_set["images"], train_set["labels"]
    prior = prior.to(device)
    prior.check_dataset(num_classes=train_set.num_classes, image_size=int(images.shape[-1]),
                        channels=int(images.shape[1]))
    first, stop = class_range(train_set.num_classes, shard)
    order = torch.argsort(labels, stable=True)  # stored grouped by class
    order = order[(labels[order] >= first) & (labels[order] < stop)]
    sample = bool(params.get("sample_posterior", False))
    z0, zt = [], []
    start = time.perf_counter()
    for k in range(first, stop):
        rows_of_class = order[labels[order] == k]
        generator = torch.Generator(device).manual_seed(derive_seed(int(params["seed"]), k))
        for rows in _batches(len(rows_of_class), batch):
            index = rows_of_class[rows]
            x = to_signed(to_unit(images[index])).to(device)
            z = prior.encode(x, sample=sample, generator=generator if sample else None)
            c = prior.condition(labels[index].to(device))
            z0.append(z.cpu())
            zt.append(ddim_invert(prior, z, c, num_steps=num_steps, invert_steps=invert_steps,
                                  guidance=guidance).cpu())
    seconds = time.perf_counter() - start
    meta = {"kind": "latents_part", "classes": [first, stop], "prior_fingerprint": module_fingerprint(prior),
            "sample_posterior": sample, "num_steps": num_steps, "invert_steps": invert_steps,
            "invert_guidance": guidance, "encode_invert_seconds": seconds}
    return TensorBundle({"latents": torch.cat(z0), "noise": torch.cat(zt), "labels": labels[order],
                         "indices": order}, meta)


@torch.no_grad()
def merge_latent_parts(train_set: TensorBundle, prior: LatentPrior, params: dict[str, Any], device: str,
                       *parts: TensorBundle) -> tuple[TensorBundle, TensorBundle, dict[str, Any], dict[str, Any]]:
    """Class-ordered parts -> the `latents` / `noise` artifacts, the round-trip report and its metrics."""
    _check_latents_params(params)
    parts = list(parts)
    check_parts_cover(parts, train_set.num_classes, "latents")
    require_same(parts, ("prior_fingerprint", "sample_posterior", "num_steps", "invert_steps", "invert_guidance"),
                 "latents")
    prior = prior.to(device)
    first = parts[0].meta
    labels, order = torch.cat([p["labels"] for p in parts]), torch.cat([p["indices"] for p in parts])
    meta = {"prior_fingerprint": first["prior_fingerprint"], "class_names": train_set.class_names,
            "num_classes": train_set.num_classes, "source_indices_sorted_by_class": True}
    latents = TensorBundle({"latents": torch.cat([p["latents"] for p in parts]), "labels": labels, "indices": order},
                           {**meta, "kind": "latents", "sample_posterior": first["sample_posterior"]})
    noise = TensorBundle({"noise": torch.cat([p["noise"] for p in parts]), "labels": labels, "indices": order},
                         {**meta, "kind": "noise", "num_steps": first["num_steps"],
                          "invert_steps": first["invert_steps"], "invert_guidance": first["invert_guidance"],
                          "start_step": first["num_steps"] - first["invert_steps"]})
    seconds = sum(float(p.meta["encode_invert_seconds"]) for p in parts)
    images = train_set["images"][order]
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
