"""Nodes of the `baselines` pipeline (the algorithm core is imported inside the nodes: building the graph stays
light)."""

from __future__ import annotations

from typing import Any

import torch

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle


def make_random_subset(train_set: TensorBundle, params: dict[str, Any], *, ipc: int,
                       name: str) -> tuple[TensorBundle, torch.Tensor]:
    """IPC random real images per class (seeded): the floor every method must beat; and its grid, titled `name`."""
    from diffdistill.data.grid import set_grid
    from diffdistill.distill.baselines import BaselinesConfig, random_real_subset

    config = build(BaselinesConfig, params, "baselines")
    subset = random_real_subset(train_set, ipc, seed=config.seed + 1000 * ipc)
    return subset, set_grid(subset, name)


def make_herding_subset(train_set: TensorBundle, teacher_model: TensorBundle, params: dict[str, Any], device: str,
                        *, ipc: int, name: str) -> tuple[TensorBundle, torch.Tensor]:
    """IPC real images per class whose running feature mean tracks the class mean (teacher feature space); and its
    grid, titled `name`."""
    from diffdistill.data.grid import set_grid
    from diffdistill.distill.baselines import BaselinesConfig, herding_subset
    from diffdistill.evaluation.saved import check_classifier_fits, classifier_from_bundle

    build(BaselinesConfig, params, "baselines")
    check_classifier_fits(teacher_model, train_set, "teacher_model", "train_set")
    teacher = classifier_from_bundle(teacher_model, device)
    subset = herding_subset(train_set, ipc, teacher, device=device)
    subset.meta["feature_net"] = {"arch": teacher_model.meta["arch"], "seed": teacher_model.meta.get("seed")}
    return subset, set_grid(subset, name)
