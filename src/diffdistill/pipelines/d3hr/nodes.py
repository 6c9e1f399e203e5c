"""Nodes of the `d3hr` pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from diffdistill.data.bundle import TensorBundle, from_signed
from diffdistill.data.grid import image_grid
from diffdistill.diffusion import ddim_sample
from diffdistill.distill.d3hr import ClassGaussians, GroupSamplingConfig, regenerate_group, sample_group
from diffdistill.pipelines.common import (
    ResumableResults,
    as_mlflow_metrics,
    bundle_fingerprint,
    check_classifier_fits,
    check_params,
    classifier_from_bundle,
    module_fingerprint,
    real_split_meta,
    require_same_prior,
    scratch_dir,
)
from diffdistill.prior import LatentPrior

logger = logging.getLogger(__name__)


def select_groups(class_gaussians: TensorBundle, train_set: TensorBundle, params: dict[str, Any], *, ipc: int,
                  factorised: bool) -> tuple[TensorBundle, dict[str, Any]]:
    """Per class, the best of `m` candidate groups of IPC noises (the paper's moment-matching score)."""
    check_params(params, "d3hr", {"group_sampling": dict})
    check_params(params["group_sampling"], "d3hr.group_sampling",
                 {"m": int, "weights": [float], "chunk_size": int, "seed": int})
    counts = class_gaussians["counts"]
    if ipc > int(counts.min()):
        small = int(counts.argmin())
        raise ValueError(f"ipc={ipc} is larger than class {small} ({int(counts[small])} train images); "
                         "lower `ipcs` or use more data")
    gaussians = ClassGaussians.from_bundle(class_gaussians)
    sampling = params["group_sampling"]
    config = GroupSamplingConfig(ipc=ipc, num_candidates=int(sampling["m"]),
                                 weights=tuple(float(w) for w in sampling["weights"]),
                                 chunk_size=int(sampling["chunk_size"]), factorised=factorised,
                                 seed=int(sampling["seed"]))
    # Finished classes are kept as recipes (a few hundred bytes each): a killed run regenerates them
    # bit for bit instead of searching again.
    done = ResumableResults(scratch_dir("d3hr", ipc, factorised, sampling, bundle_fingerprint(class_gaussians)))
    start = time.perf_counter()
    chosen = []
    for k in range(gaussians.num_classes):
        entry = done.get(f"class{k}")
        if entry is None:
            selection = sample_group(*gaussians.class_params(k), config, class_index=k)
            entry = {"recipe": selection.recipe, "score": selection.score, "terms": selection.terms}
            done.put(f"class{k}", entry)
        chosen.append(entry)
    seconds = time.perf_counter() - start
    shape = class_gaussians.meta["sample_shape"]
    noise = torch.stack([regenerate_group(gaussians, e["recipe"]).reshape(ipc, *shape) for e in chosen]).flatten(0, 1)
    labels = torch.arange(gaussians.num_classes).repeat_interleave(ipc)
    meta = {key: class_gaussians.meta[key] for key in ("prior_fingerprint", "num_steps", "invert_steps",
                                                        "invert_guidance", "start_step", "class_names")}
    bundle = TensorBundle({"noise": noise, "labels": labels},
                          {**meta, "ipc": ipc, "factorised": factorised, "recipes": [e["recipe"] for e in chosen],
                           "scores": [e["score"] for e in chosen], "terms": [e["terms"] for e in chosen]})
    done.clear()
    mean_score = sum(e["score"] for e in chosen) / len(chosen)
    logger.info("d3hr ipc %d (%s): mean score %.4f, %.1f s", ipc, "factorised" if factorised else "paper",
                mean_score, seconds)
    return bundle, as_mlflow_metrics({"mean_score": mean_score, "selection_seconds": seconds})


@torch.no_grad()
def generate_images(selection: TensorBundle, prior: LatentPrior, train_set: TensorBundle,
                    teacher_model: TensorBundle, params: dict[str, Any], device: str,
                    *, ipc: int) -> tuple[TensorBundle, torch.Tensor]:
    """DDIM-sample the selected noises back from the inversion step, decode, clamp: the distilled set."""
    check_params(params, "d3hr", {"generation": dict})
    check_params(params["generation"], "d3hr.generation", {"guidance": float, "batch_size": int},
                 {"soft_labels": bool})
    if params["generation"]["batch_size"] < 1:
        raise ValueError(f"parameter d3hr.generation.batch_size={params['generation']['batch_size']} must be >= 1")
    prior = prior.to(device)
    require_same_prior(selection, module_fingerprint(prior), "d3hr selection (class_gaussians)")
    meta = selection.meta
    generation = params["generation"]
    noise, labels = selection["noise"].to(device), selection["labels"].to(device)
    images = []
    for start in range(0, len(labels), int(generation["batch_size"])):
        rows = slice(start, start + int(generation["batch_size"]))
        z0 = ddim_sample(prior, noise[rows], prior.condition(labels[rows]), num_steps=meta["num_steps"],
                         start_step=meta["start_step"], guidance=float(generation["guidance"]))
        images.append(from_signed(prior.decode(z0)).cpu())
    images = torch.cat(images)
    tensors = {"images": images, "labels": labels.cpu()}
    if generation.get("soft_labels"):
        teacher = classifier_from_bundle(teacher_model, device)
        check_classifier_fits(teacher_model, train_set, "teacher_model", "train_set")
        tensors["soft_labels"] = torch.softmax(teacher(images.to(device)), dim=1).cpu()
    method_meta = {"method": "d3hr", "ipc": ipc, "variant": "factorised" if meta["factorised"] else "paper",
                   "prior_fingerprint": meta["prior_fingerprint"], "guidance": float(generation["guidance"]),
                   "num_steps": meta["num_steps"], "start_step": meta["start_step"], "recipes": meta["recipes"]}
    bundle = TensorBundle(tensors, {**real_split_meta(train_set), **method_meta})
    return bundle, image_grid(images, labels.cpu())
