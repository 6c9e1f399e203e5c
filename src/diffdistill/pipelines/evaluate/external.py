"""Nodes of the `evaluate` pipeline for sets made elsewhere (`evaluate.external`): import, then evaluate as ours."""

from __future__ import annotations

import logging
from typing import Any

import torch

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle
from diffdistill.data.external import load_external_set
from diffdistill.data.grid import set_grid
from diffdistill.evaluation.config import EvaluateConfig
from diffdistill.pipelines.artifacts import real_split_meta
from diffdistill.pipelines.evaluate.nodes import evaluate_set

logger = logging.getLogger(__name__)


def import_external_set(test_set: TensorBundle, train_set: TensorBundle, params: dict[str, Any], *,
                        name: str, set_name: str) -> tuple[TensorBundle, torch.Tensor]:
    """Read and check `evaluate.external.<name>` against the test split; save it as a distilled set and a grid
    (titled `set_name`).

    The saved set carries what our sets carry from the real split (classes, source, normalisation statistics)
    and, under meta `external`, the file's resolved path, format and sha256: the lineage of a file the catalog
    does not know.
    """
    config = build(EvaluateConfig, params, "evaluate").external[name]
    bundle = load_external_set(config.path, test_set, format=config.format, ipc=config.ipc, mean=config.mean,
                               std=config.std)
    meta = {**real_split_meta(train_set), **bundle.meta, "name": name}
    origin = meta["external"]
    logger.info("external set %r: %d images (ipc %d) from %s (%s, sha256 %s)", name, len(bundle), meta["ipc"],
                origin["path"], origin["format"], origin["sha256"][:12])
    imported = TensorBundle(bundle.tensors, meta)
    return imported, set_grid(imported, set_name)


def evaluate_external_set(distilled_set: TensorBundle, train_set: TensorBundle, test_set: TensorBundle,
                          teacher_model: TensorBundle, params: dict[str, Any], device: str,
                          *, set_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`evaluate_set` on the imported set; its results also name the set and the file it came from."""
    results, metrics = evaluate_set(distilled_set, train_set, test_set, teacher_model, params, device,
                                    set_name=set_name)
    results["meta"].update(name=distilled_set.meta["name"], external=distilled_set.meta["external"])
    return results, metrics
