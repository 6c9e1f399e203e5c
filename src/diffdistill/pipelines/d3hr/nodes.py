"""Nodes of the `d3hr` pipeline: adapters around `diffdistill.distill.d3hr.sampling` and `.generate` (imported inside
the nodes: building the graph stays light)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from diffdistill.config import build, per_ipc, to_dict
from diffdistill.data.bundle import TensorBundle
from diffdistill.pipelines.artifacts import PriorModel, real_split_meta, require_same_prior
from diffdistill.pipelines.metrics import as_mlflow_metrics
from diffdistill.pipelines.sharding import check_parts_cover, class_range, require_same
from diffdistill.workdir import WorkDir, bundle_fingerprint, module_fingerprint

if TYPE_CHECKING:
    from diffdistill.distill.d3hr.config import GenerationConfig

logger = logging.getLogger(__name__)
LINEAGE = ("prior_fingerprint", "num_steps", "invert_steps", "invert_guidance", "start_step", "class_names")


def select_groups(class_gaussians: TensorBundle, train_set: TensorBundle, params: dict[str, Any], *, ipc: int,
                  factorised: bool) -> tuple[TensorBundle, dict[str, Any]]:
    """Per class, the best of `m` candidate groups of IPC noises (the paper's moment-matching score)."""
    selection, seconds = _select(class_gaussians, params, ipc, factorised, None)
    return selection, _metrics(selection.meta["scores"], seconds, ipc, factorised)


def _select(class_gaussians: TensorBundle, params: dict[str, Any], ipc: int, factorised: bool,
            shard: tuple[int, int] | None) -> tuple[TensorBundle, float]:
    """The selection of the classes of `shard` (None = all) and the seconds it took. The search resumes from a
    WorkDir of its inputs; each class shard keeps its own (one shard's clear() must not drop another's)."""
    from diffdistill.distill import d3hr
    from diffdistill.distill.d3hr.config import GroupSamplingConfig, section

    config = build(GroupSamplingConfig, section(params, "d3hr", "group_sampling"), "d3hr.group_sampling")
    gaussians = d3hr.ClassGaussians.from_bundle(class_gaussians)
    classes = class_range(gaussians.num_classes, shard)
    resume = WorkDir.keyed("d3hr", ipc, factorised, to_dict(config), bundle_fingerprint(class_gaussians),
                           *(() if classes == (0, gaussians.num_classes) else (list(classes),)))
    start = time.perf_counter()
    chosen = d3hr.select_class_groups(gaussians, config, ipc=ipc, factorised=factorised, classes=classes,
                                      resume=resume)
    seconds = time.perf_counter() - start
    lists = {"recipes": [e["recipe"] for e in chosen], "scores": [e["score"] for e in chosen],
             "terms": [e["terms"] for e in chosen]}
    return _selection(class_gaussians, *d3hr.kept_noise(gaussians, chosen), lists, ipc, factorised), seconds


def _selection(class_gaussians: TensorBundle, noise: torch.Tensor, labels: torch.Tensor, lists: dict[str, list],
               ipc: int, factorised: bool) -> TensorBundle:
    """The `d3hr_selection` artifact: kept noises, labels, and per class its recipe, score and terms."""
    meta = {key: class_gaussians.meta[key] for key in LINEAGE}
    return TensorBundle({"noise": noise, "labels": labels}, {**meta, "ipc": ipc, "factorised": factorised, **lists})


def _metrics(scores: list[float], seconds: float, ipc: int, factorised: bool) -> dict[str, Any]:
    mean_score = sum(scores) / len(scores)
    logger.info("d3hr ipc %d (%s): mean score %.4f, %.1f s", ipc, "factorised" if factorised else "paper",
                mean_score, seconds)
    return as_mlflow_metrics({"mean_score": mean_score, "selection_seconds": seconds})


def _generation(params: dict[str, Any], ipc: int) -> GenerationConfig:
    """`d3hr.generation` for one IPC: `guidance` may be one value or {ipc: value} (a class's samples collapse
    onto near-copies at a guidance that suits IPC 1)."""
    from diffdistill.distill.d3hr.config import GenerationConfig, section

    values = section(params, "d3hr", "generation")
    if isinstance(values, Mapping) and "guidance" in values:
        values = {**values, "guidance": per_ipc(values["guidance"], ipc, "d3hr.generation.guidance")}
    return build(GenerationConfig, values, "d3hr.generation")


def _images(prior: PriorModel, selection: TensorBundle, config: GenerationConfig, device: str) -> torch.Tensor:
    from diffdistill.distill import d3hr

    require_same_prior(selection, module_fingerprint(prior.to(device)), "d3hr selection (class_gaussians)")
    meta = selection.meta
    return d3hr.sample_images(prior, selection["noise"], selection["labels"], config, num_steps=meta["num_steps"],
                              start_step=meta["start_step"], device=device)


def generate_images(selection: TensorBundle, prior: PriorModel, train_set: TensorBundle,
                    teacher_model: TensorBundle, params: dict[str, Any], device: str,
                    *, ipc: int, name: str) -> tuple[TensorBundle, torch.Tensor]:
    """DDIM-sample the selected noises back from the inversion step, decode, clamp: the distilled set."""
    config = _generation(params, ipc)
    return _distilled(_images(prior, selection, config, device), selection, train_set, teacher_model, config, device,
                      ipc=ipc, name=name)


def _distilled(images: torch.Tensor, selection: TensorBundle, train_set: TensorBundle, teacher_model: TensorBundle,
               config: GenerationConfig, device: str, *, ipc: int, name: str) -> tuple[TensorBundle, torch.Tensor]:
    """Images of every class + the selection's recipes -> the distilled set (teacher soft labels if asked) and its
    grid, titled `name`."""
    from diffdistill.data.grid import set_grid
    from diffdistill.distill import d3hr
    from diffdistill.evaluation.saved import check_classifier_fits, classifier_from_bundle

    meta, labels = selection.meta, selection["labels"]
    tensors = {"images": images, "labels": labels.cpu()}
    if config.soft_labels:
        teacher = classifier_from_bundle(teacher_model, device)
        check_classifier_fits(teacher_model, train_set, "teacher_model", "train_set")
        tensors["soft_labels"] = d3hr.soft_labels(teacher, images, device)
    method_meta = {"method": "d3hr", "ipc": ipc, "variant": "factorised" if meta["factorised"] else "paper",
                   "prior_fingerprint": meta["prior_fingerprint"], "guidance": config.guidance,
                   "num_steps": meta["num_steps"], "start_step": meta["start_step"], "recipes": meta["recipes"]}
    distilled = TensorBundle(tensors, {**real_split_meta(train_set), **method_meta})
    return distilled, set_grid(distilled, name)


def d3hr_classes(class_gaussians: TensorBundle, prior: PriorModel, params: dict[str, Any], device: str, *,
                 ipc: int, factorised: bool, shard: tuple[int, int]) -> TensorBundle:
    """One class shard of a D3HR set: group selection and generated images of its classes."""
    config = _generation(params, ipc)
    selection, seconds = _select(class_gaussians, params, ipc, factorised, shard)
    classes = list(class_range(int(class_gaussians["counts"].shape[0]), shard))
    return TensorBundle({**selection.tensors, "images": _images(prior, selection, config, device)},
                        {**selection.meta, "kind": "d3hr_part", "classes": classes, "selection_seconds": seconds})


def merge_d3hr_parts(class_gaussians: TensorBundle, train_set: TensorBundle, teacher_model: TensorBundle,
                     params: dict[str, Any], device: str, *parts: TensorBundle, ipc: int, factorised: bool, name: str):
    """Class shards of one D3HR set -> its `d3hr_selection`, metrics, distilled set and grid (the unsharded bytes)."""
    config = _generation(params, ipc)
    parts = list(parts)
    check_parts_cover(parts, int(class_gaussians["counts"].shape[0]), f"d3hr ipc {ipc}")
    require_same(parts, ("prior_fingerprint", "ipc", "factorised", "num_steps", "start_step"), f"d3hr ipc {ipc}")
    lists = {key: [x for p in parts for x in p.meta[key]] for key in ("recipes", "scores", "terms")}
    selection = _selection(class_gaussians, torch.cat([p["noise"] for p in parts]),
                           torch.cat([p["labels"] for p in parts]), lists, ipc, factorised)
    seconds = sum(float(p.meta["selection_seconds"]) for p in parts)
    images = torch.cat([p["images"] for p in parts])
    distilled, grid = _distilled(images, selection, train_set, teacher_model, config, device, ipc=ipc, name=name)
    return selection, _metrics(lists["scores"], seconds, ipc, factorised), distilled, grid
