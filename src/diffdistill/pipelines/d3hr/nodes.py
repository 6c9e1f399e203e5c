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
    as_mlflow_metrics,
    check_classifier_fits,
    check_params,
    classifier_from_bundle,
    real_split_meta,
    require_same_prior,
)
from diffdistill.pipelines.sharding import check_parts_cover, class_range, require_same
from diffdistill.prior import LatentPrior
from diffdistill.workdir import WorkDir, bundle_fingerprint, module_fingerprint

logger = logging.getLogger(__name__)


def select_groups(class_gaussians: TensorBundle, train_set: TensorBundle, params: dict[str, Any], *, ipc: int,
                  factorised: bool) -> tuple[TensorBundle, dict[str, Any]]:
    """Per class, the best of `m` candidate groups of IPC noises (the paper's moment-matching score)."""
    num_classes = int(class_gaussians["counts"].shape[0])
    chosen, seconds = _select_classes(class_gaussians, params, ipc=ipc, factorised=factorised,
                                      classes=(0, num_classes))
    noise, labels = _selected_noise(class_gaussians, chosen, ipc, 0)
    bundle = _selection_bundle(class_gaussians, noise, labels, chosen, ipc=ipc, factorised=factorised)
    return bundle, _selection_metrics(chosen, seconds, ipc, factorised)


def _select_classes(class_gaussians: TensorBundle, params: dict[str, Any], *, ipc: int, factorised: bool,
                    classes: tuple[int, int]) -> tuple[list[dict[str, Any]], float]:
    """Recipe, score and terms of the chosen group of each class in [start, stop), and the seconds it took."""
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
    # bit for bit instead of searching again. Each class shard keeps its own folder (one shard's clear()
    # must not drop another's progress); the full run keeps the folder it always had.
    shard_key = () if classes == (0, gaussians.num_classes) else (list(classes),)
    done = WorkDir.keyed("d3hr", ipc, factorised, sampling, bundle_fingerprint(class_gaussians),
                            *shard_key)
    start = time.perf_counter()
    chosen = []
    for k in range(*classes):
        entry = done.get_json(f"class{k}")
        if entry is None:
            selection = sample_group(*gaussians.class_params(k), config, class_index=k)
            entry = {"recipe": selection.recipe, "score": selection.score, "terms": selection.terms}
            done.put_json(f"class{k}", entry)
        chosen.append(entry)
    seconds = time.perf_counter() - start
    done.clear()
    return chosen, seconds


def _selected_noise(class_gaussians: TensorBundle, chosen: list[dict[str, Any]], ipc: int,
                    first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen groups regenerated from their recipes, class-major, and their labels (classes from `first`)."""
    gaussians = ClassGaussians.from_bundle(class_gaussians)
    shape = class_gaussians.meta["sample_shape"]
    noise = torch.stack([regenerate_group(gaussians, e["recipe"]).reshape(ipc, *shape) for e in chosen]).flatten(0, 1)
    return noise, torch.arange(first, first + len(chosen)).repeat_interleave(ipc)


def _selection_bundle(class_gaussians: TensorBundle, noise: torch.Tensor, labels: torch.Tensor,
                      chosen: list[dict[str, Any]], *, ipc: int, factorised: bool) -> TensorBundle:
    meta = {key: class_gaussians.meta[key] for key in ("prior_fingerprint", "num_steps", "invert_steps",
                                                        "invert_guidance", "start_step", "class_names")}
    return TensorBundle({"noise": noise, "labels": labels},
                        {**meta, "ipc": ipc, "factorised": factorised, "recipes": [e["recipe"] for e in chosen],
                         "scores": [e["score"] for e in chosen], "terms": [e["terms"] for e in chosen]})


def _selection_metrics(chosen: list[dict[str, Any]], seconds: float, ipc: int, factorised: bool) -> dict[str, Any]:
    mean_score = sum(e["score"] for e in chosen) / len(chosen)
    logger.info("d3hr ipc %d (%s): mean score %.4f, %.1f s", ipc, "factorised" if factorised else "paper",
                mean_score, seconds)
    return as_mlflow_metrics({"mean_score": mean_score, "selection_seconds": seconds})


def _check_generation(params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, "d3hr", {"generation": dict})
    check_params(params["generation"], "d3hr.generation", {"guidance": float, "batch_size": int},
                 {"soft_labels": bool})
    if params["generation"]["batch_size"] < 1:
        raise ValueError(f"parameter d3hr.generation.batch_size={params['generation']['batch_size']} must be >= 1")
    return params["generation"]


@torch.no_grad()
def _sample_images(prior: LatentPrior, selection: TensorBundle, generation: dict[str, Any], device: str) -> torch.Tensor:
    """DDIM from the selected noises, decoded, in batches that never straddle two classes (so a class shard
    runs the very kernels of the full run)."""
    prior = prior.to(device)
    require_same_prior(selection, module_fingerprint(prior), "d3hr selection (class_gaussians)")
    noise, labels, meta = selection["noise"], selection["labels"], selection.meta
    images, size = [], int(generation["batch_size"])
    for k in labels.unique(sorted=True).tolist():
        rows = torch.nonzero(labels == k).flatten()
        for start in range(0, len(rows), size):
            index = rows[start:start + size]
            z = noise[index].to(device)
            c = prior.condition(labels[index].to(device))
            z0 = ddim_sample(prior, z, c, num_steps=meta["num_steps"], start_step=meta["start_step"],
                             guidance=float(generation["guidance"]))
            images.append(from_signed(prior.decode(z0)).cpu())
    return torch.cat(images)


@torch.no_grad()
def generate_images(selection: TensorBundle, prior: LatentPrior, train_set: TensorBundle,
                    teacher_model: TensorBundle, params: dict[str, Any], device: str,
                    *, ipc: int) -> tuple[TensorBundle, torch.Tensor]:
    """DDIM-sample the selected noises back from the inversion step, decode, clamp: the distilled set."""
    generation = _check_generation(params)
    images = _sample_images(prior, selection, generation, device)
    return _distilled_set(images, selection, train_set, teacher_model, generation, device, ipc=ipc)


@torch.no_grad()
def _distilled_set(images: torch.Tensor, selection: TensorBundle, train_set: TensorBundle,
                   teacher_model: TensorBundle, generation: dict[str, Any], device: str,
                   *, ipc: int) -> tuple[TensorBundle, torch.Tensor]:
    """Images of every class + the selection's recipes -> the distilled set (teacher soft labels if asked) and grid."""
    meta, labels = selection.meta, selection["labels"]
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


def d3hr_classes(class_gaussians: TensorBundle, prior: LatentPrior, params: dict[str, Any], device: str, *,
                 ipc: int, factorised: bool, shard: tuple[int, int]) -> TensorBundle:
    """One class shard of a D3HR set: group selection and generated images of its classes."""
    generation = _check_generation(params)
    first, stop = class_range(int(class_gaussians["counts"].shape[0]), shard)
    chosen, seconds = _select_classes(class_gaussians, params, ipc=ipc, factorised=factorised, classes=(first, stop))
    noise, labels = _selected_noise(class_gaussians, chosen, ipc, first)
    selection = _selection_bundle(class_gaussians, noise, labels, chosen, ipc=ipc, factorised=factorised)
    images = _sample_images(prior, selection, generation, device)
    return TensorBundle({"noise": noise, "labels": labels, "images": images},
                        {**selection.meta, "kind": "d3hr_part", "classes": [first, stop], "selection_seconds": seconds})


def merge_d3hr_parts(class_gaussians: TensorBundle, train_set: TensorBundle, teacher_model: TensorBundle,
                     params: dict[str, Any], device: str, *parts: TensorBundle, ipc: int, factorised: bool):
    """Class shards of one D3HR set -> its `d3hr_selection`, metrics, distilled set and grid (the unsharded bytes)."""
    generation = _check_generation(params)
    parts = list(parts)
    check_parts_cover(parts, int(class_gaussians["counts"].shape[0]), f"d3hr ipc {ipc}")
    require_same(parts, ("prior_fingerprint", "ipc", "factorised", "num_steps", "start_step"), f"d3hr ipc {ipc}")
    chosen = [{"recipe": recipe, "score": score, "terms": terms} for part in parts
              for recipe, score, terms in zip(part.meta["recipes"], part.meta["scores"], part.meta["terms"], strict=True)]
    selection = _selection_bundle(class_gaussians, torch.cat([p["noise"] for p in parts]),
                                  torch.cat([p["labels"] for p in parts]), chosen, ipc=ipc, factorised=factorised)
    metrics = _selection_metrics(chosen, sum(float(p.meta["selection_seconds"]) for p in parts), ipc, factorised)
    images = torch.cat([p["images"] for p in parts])
    distilled, grid = _distilled_set(images, selection, train_set, teacher_model, generation, device, ipc=ipc)
    return selection, metrics, distilled, grid
