"""Nodes of the `gaussians` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import torch

from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.d3hr import ClassGaussians, ClassMoments, fit_class_gaussians, fit_class_moments
from diffdistill.pipelines.common import as_mlflow_metrics, check_params
from diffdistill.pipelines.sharding import check_parts_cover, class_range, require_same

logger = logging.getLogger(__name__)


def _class_batches(bundle: TensorBundle, key: str, size: int, first: int, stop: int):
    """Batches of classes first..stop-1, never straddling two classes, labels relative to `first`.

    Per-class batches make the float64 merge order of a class independent of the other classes, so a class
    shard accumulates exactly what the full run does for its classes.
    """
    values, labels = bundle[key], bundle["labels"]
    for k in range(first, stop):
        rows = torch.nonzero(labels == k).flatten()
        for start in range(0, len(rows), size):
            index = rows[start:start + size]
            yield values[index], labels[index] - first


MOMENT_KEYS = ("counts", "mean", "var", "skewness", "excess_kurtosis", "constant")


def fit_noise_gaussians(noise: TensorBundle, latents: TensorBundle,
                        params: dict[str, Any]) -> tuple[TensorBundle, dict[str, Any], dict[str, Any]]:
    """Per-class mean/variance of the inverted noise (float64, streamed) and a normality report.

    The report compares per-dimension skewness and excess kurtosis of the VAE latents ("before
    inversion") with those of the noise ("after"): the paper's claim is that the second is Gaussian.
    """
    return merge_gaussian_parts(noise, params, fit_gaussians_classes(noise, latents, params))


def _check_gaussians_params(params: dict[str, Any]) -> None:
    check_params(params, "gaussians", {"batch_size": int}, {"min_std": (float, None)})
    if params["batch_size"] < 1:
        raise ValueError(f"parameter gaussians.batch_size={params['batch_size']} must be >= 1")


def fit_gaussians_classes(noise: TensorBundle, latents: TensorBundle, params: dict[str, Any], *,
                          shard: tuple[int, int] | None = None) -> TensorBundle:
    """Gaussians of the noise and moments of latents and noise for the classes of `shard` (None = all)."""
    _check_gaussians_params(params)
    if noise.meta.get("prior_fingerprint") != latents.meta.get("prior_fingerprint"):
        raise ValueError("noise and latents come from different priors; re-run the latents pipeline so both are "
                         "saved by the same run")
    batch = int(params["batch_size"])
    first, stop = class_range(int(noise.meta["num_classes"]), shard)
    gaussians = fit_class_gaussians(_class_batches(noise, "noise", batch, first, stop), stop - first,
                                    min_std=params.get("min_std"))
    tensors = dict(gaussians.to_bundle().tensors)
    for stage, bundle, key in (("before", latents, "latents"), ("after", noise, "noise")):
        moments = fit_class_moments(_class_batches(bundle, key, batch, first, stop), stop - first)
        tensors.update({f"{stage}.{name}": getattr(moments, name) for name in MOMENT_KEYS})
    return TensorBundle(tensors, {"kind": "gaussians_part", "classes": [first, stop],
                                  "sample_shape": list(gaussians.sample_shape), "min_std": gaussians.min_std})


def merge_gaussian_parts(noise: TensorBundle, params: dict[str, Any],
                         *parts: TensorBundle) -> tuple[TensorBundle, dict[str, Any], dict[str, Any]]:
    """Class-ordered parts -> `class_gaussians`, the normality report and its metrics."""
    _check_gaussians_params(params)
    parts = list(parts)
    check_parts_cover(parts, int(noise.meta["num_classes"]), "gaussians")
    require_same(parts, ("sample_shape", "min_std"), "gaussians")

    def cat(name: str) -> torch.Tensor:
        return torch.cat([p[name] for p in parts])

    floored = cat("floored_dims") if "floored_dims" in parts[0].tensors else None
    gaussians = ClassGaussians(cat("mean"), cat("var"), cat("counts"), tuple(parts[0].meta["sample_shape"]),
                               parts[0].meta["min_std"], floored)
    bundle = gaussians.to_bundle()
    bundle.meta.update({key: noise.meta[key] for key in ("prior_fingerprint", "class_names", "num_steps",
                                                          "invert_steps", "invert_guidance", "start_step")})
    before, after = (ClassMoments(*(cat(f"{stage}.{name}") for name in MOMENT_KEYS)).report()
                     for stage in ("before", "after"))
    report = {"before_inversion": before, "after_inversion": after,
              "bytes": int(sum(t.numel() * t.element_size() for t in bundle.tensors.values()))}
    pooled = {f"{stage}.{stat}.mean_abs": report[f"{stage}_inversion"]["all_classes"][stat]["mean_abs"]
              for stage in ("before", "after") for stat in ("skewness", "excess_kurtosis")}
    logger.info("normality (mean |skew|, mean |excess kurtosis|): before inversion %.3f / %.3f, after %.3f / %.3f",
                pooled["before.skewness.mean_abs"], pooled["before.excess_kurtosis.mean_abs"],
                pooled["after.skewness.mean_abs"], pooled["after.excess_kurtosis.mean_abs"])
    return bundle, report, as_mlflow_metrics(pooled)
