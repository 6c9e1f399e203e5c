"""Nodes of the `gaussians` pipeline: adapters around `diffdistill.distill.d3hr.moments` (imported inside the
nodes: building the graph stays light)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle
from diffdistill.pipelines.metrics import as_mlflow_metrics
from diffdistill.pipelines.sharding import check_parts_cover, class_range, require_same

logger = logging.getLogger(__name__)
LINEAGE = ("prior_fingerprint", "class_names", "num_steps", "invert_steps", "invert_guidance", "start_step")


def fit_noise_gaussians(noise: TensorBundle, latents: TensorBundle,
                        params: dict[str, Any]) -> tuple[TensorBundle, dict[str, Any], dict[str, Any]]:
    """Per-class mean/variance of the inverted noise (float64, streamed) and a normality report.

    The report compares per-dimension skewness and excess kurtosis of the VAE latents ("before
    inversion") with those of the noise ("after"): the paper's claim is that the second is Gaussian.
    """
    return merge_gaussian_parts(noise, params, fit_gaussians_classes(noise, latents, params))


def fit_gaussians_classes(noise: TensorBundle, latents: TensorBundle, params: dict[str, Any], *,
                          shard: tuple[int, int] | None = None) -> TensorBundle:
    """Gaussians of the noise and moments of latents and noise for the classes of `shard` (None = all)."""
    from diffdistill.distill.d3hr import GaussiansConfig, fit_noise_space

    config = build(GaussiansConfig, params, "gaussians")
    if noise.meta.get("prior_fingerprint") != latents.meta.get("prior_fingerprint") or not torch.equal(
            noise["labels"], latents["labels"]):
        raise ValueError("noise and latents come from different priors or runs; re-run the latents pipeline so both "
                         "are saved by the same run")
    classes = class_range(int(noise.meta["num_classes"]), shard)
    fit = fit_noise_space(noise["noise"], latents["latents"], noise["labels"], config, classes=classes)
    return TensorBundle(fit.tensors(), {"kind": "gaussians_part", "classes": list(classes),
                                        "sample_shape": list(fit.gaussians.sample_shape),
                                        "min_std": fit.gaussians.min_std})


def merge_gaussian_parts(noise: TensorBundle, params: dict[str, Any],
                         *parts: TensorBundle) -> tuple[TensorBundle, dict[str, Any], dict[str, Any]]:
    """Class-ordered parts -> `class_gaussians`, the normality report and its metrics."""
    from diffdistill.distill.d3hr import GaussiansConfig, NoiseSpaceFit

    build(GaussiansConfig, params, "gaussians")  # the parts' settings: refuse what the shards would refuse
    parts = list(parts)
    check_parts_cover(parts, int(noise.meta["num_classes"]), "gaussians")
    require_same(parts, ("sample_shape", "min_std"), "gaussians")
    fit = NoiseSpaceFit.cat([p.tensors for p in parts], parts[0].meta["sample_shape"], parts[0].meta["min_std"])
    bundle = fit.gaussians.to_bundle()
    bundle.meta.update({key: noise.meta[key] for key in LINEAGE})
    report = fit.report()
    pooled = {f"{stage}.{stat}.mean_abs": report[f"{stage}_inversion"]["all_classes"][stat]["mean_abs"]
              for stage in ("before", "after") for stat in ("skewness", "excess_kurtosis")}
    logger.info("normality (mean |skew|, mean |excess kurtosis|): before inversion %.3f / %.3f, after %.3f / %.3f",
                pooled["before.skewness.mean_abs"], pooled["before.excess_kurtosis.mean_abs"],
                pooled["after.skewness.mean_abs"], pooled["after.excess_kurtosis.mean_abs"])
    return bundle, report, as_mlflow_metrics(pooled)
