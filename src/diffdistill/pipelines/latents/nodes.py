"""Nodes of the `latents` pipeline: adapters around `diffdistill.distill.d3hr.invert` (imported inside the nodes:
building the graph stays light)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle
from diffdistill.pipelines.artifacts import PriorModel
from diffdistill.pipelines.metrics import as_mlflow_metrics
from diffdistill.pipelines.sharding import check_parts_cover, class_range, require_same
from diffdistill.workdir import module_fingerprint

logger = logging.getLogger(__name__)
SETTINGS = ("prior_fingerprint", "sample_posterior", "num_steps", "invert_steps", "invert_guidance")


def encode_and_invert(train_set: TensorBundle, prior: PriorModel, params: dict[str, Any],
                      device: str) -> tuple[TensorBundle, TensorBundle, dict[str, Any], dict[str, Any]]:
    """VAE latents z0 of every train image (class-sorted), and their DDIM inversion to step k of N."""
    part = encode_and_invert_classes(train_set, prior, params, device)
    return merge_latent_parts(train_set, prior, params, device, part)


def encode_and_invert_classes(train_set: TensorBundle, prior: PriorModel, params: dict[str, Any], device: str,
                              *, shard: tuple[int, int] | None = None) -> TensorBundle:
    """z0 and zT of the classes of `shard` (index, count; None = all): the same draws as the full run's."""
    from diffdistill.distill.d3hr import LatentsConfig, invert_classes

    config = build(LatentsConfig, params, "latents")
    classes = class_range(train_set.num_classes, shard)
    done = invert_classes(train_set["images"], train_set["labels"], train_set.num_classes, prior, config,
                          classes=classes, device=device)
    meta = {"kind": "latents_part", "classes": list(classes), "prior_fingerprint": module_fingerprint(prior),
            "sample_posterior": config.sample_posterior, "num_steps": config.num_steps,
            "invert_steps": config.invert_steps, "invert_guidance": config.invert_guidance,
            "encode_invert_seconds": done.seconds}
    return TensorBundle({"latents": done.latents, "noise": done.noise, "labels": done.labels,
                         "indices": done.indices}, meta)


def merge_latent_parts(train_set: TensorBundle, prior: PriorModel, params: dict[str, Any], device: str,
                       *parts: TensorBundle) -> tuple[TensorBundle, TensorBundle, dict[str, Any], dict[str, Any]]:
    """Class-ordered parts -> the `latents` / `noise` artifacts, the round-trip report and its metrics."""
    from diffdistill.distill.d3hr import LatentsConfig, round_trip_report

    config = build(LatentsConfig, params, "latents")
    parts = list(parts)
    check_parts_cover(parts, train_set.num_classes, "latents")
    require_same(parts, SETTINGS, "latents")
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
    report = round_trip_report(prior, train_set["images"][order], labels, noise["noise"],
                               num_steps=first["num_steps"], invert_steps=first["invert_steps"],
                               guidance=first["invert_guidance"], count=config.round_trip_images, device=device)
    report.update({"encode_invert_seconds": seconds, "images": int(len(labels)),
                   "images_per_second": len(labels) / max(seconds, 1e-9)})
    logger.info("latents: %d images in %.1f s; round trip PSNR %.2f dB (VAE alone %.2f dB)", len(labels), seconds,
                report["round_trip_psnr_db"], report["vae_psnr_db"])
    metrics = as_mlflow_metrics({k: report[k] for k in ("round_trip_psnr_db", "vae_psnr_db", "images_per_second")})
    return latents, noise, report, metrics
