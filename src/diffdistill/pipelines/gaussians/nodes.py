"""Nodes of the `gaussians` pipeline."""

from __future__ import annotations

import logging
from typing import Any

from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.d3hr import fit_class_gaussians, moment_report
from diffdistill.pipelines.common import as_mlflow_metrics, check_params

logger = logging.getLogger(__name__)


def _batches(bundle: TensorBundle, key: str, size: int):
    values, labels = bundle[key], bundle["labels"]
    for start in range(0, len(labels), size):
        yield values[start:start + size], labels[start:start + size]


def fit_noise_gaussians(noise: TensorBundle, latents: TensorBundle,
                        params: dict[str, Any]) -> tuple[TensorBundle, dict[str, Any], dict[str, Any]]:
    """Per-class mean/variance of the inverted noise (float64, streamed) and a normality report.

    The report compares per-dimension skewness and excess kurtosis of the VAE latents ("before
    inversion") with those of the noise ("after"): the paper's claim is that the second is Gaussian.
    """
    check_params(params, "gaussians", {"batch_size": int}, {"min_std": (float, None)})
    if params["batch_size"] < 1:
        raise ValueError(f"parameter gaussians.batch_size={params['batch_size']} must be >= 1")
    if noise.meta.get("prior_fingerprint") != latents.meta.get("prior_fingerprint"):
        raise ValueError("noise and latents come from different priors; re-run the latents pipeline so both are "
                         "saved by the same run")
    batch, num_classes = int(params["batch_size"]), int(noise.meta["num_classes"])
    gaussians = fit_class_gaussians(_batches(noise, "noise", batch), num_classes, min_std=params.get("min_std"))
    bundle = gaussians.to_bundle()
    bundle.meta.update({key: noise.meta[key] for key in ("prior_fingerprint", "class_names", "num_steps",
                                                          "invert_steps", "invert_guidance", "start_step")})
    before = moment_report(_batches(latents, "latents", batch), num_classes)
    after = moment_report(_batches(noise, "noise", batch), num_classes)
    report = {"before_inversion": before, "after_inversion": after,
              "bytes": int(sum(t.numel() * t.element_size() for t in bundle.tensors.values()))}
    pooled = {f"{stage}.{stat}.mean_abs": report[f"{stage}_inversion"]["all_classes"][stat]["mean_abs"]
              for stage in ("before", "after") for stat in ("skewness", "excess_kurtosis")}
    logger.info("normality (mean |skew|, mean |excess kurtosis|): before inversion %.3f / %.3f, after %.3f / %.3f",
                pooled["before.skewness.mean_abs"], pooled["before.excess_kurtosis.mean_abs"],
                pooled["after.skewness.mean_abs"], pooled["after.excess_kurtosis.mean_abs"])
    return bundle, report, as_mlflow_metrics(pooled)
