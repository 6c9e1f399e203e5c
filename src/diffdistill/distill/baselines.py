"""Coreset baselines every distillation method must beat: a random real subset and herding.

Both return a distilled-set `TensorBundle`: `images` float32 in [0, 1], `labels`, meta
`method`, `ipc`, `class_names`, `num_classes`, `indices` (rows of the real split, class by
class), plus `mean` / `std` of the whole real split so evaluation normalises like on real data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from diffdistill.data.bundle import TensorBundle, to_unit
from diffdistill.evaluation.train import channel_stats

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class BaselinesConfig:
    """`baselines`: the seed of the random subsets (IPC N draws with seed + 1000 N)."""

    seed: int


def _class_indices(real: TensorBundle, ipc: int) -> list[torch.Tensor]:
    """Row indices of each class, after checking that every class has at least `ipc` images."""
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
        raise ValueError(f"ipc must be an int >= 1, got {ipc!r}")
    labels = real["labels"].long()
    num_classes = real.num_classes
    if labels.numel() == 0:
        raise ValueError("real split is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min().item()}, {labels.max().item()}]")
    per_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    short = {c: len(rows) for c, rows in enumerate(per_class) if len(rows) < ipc}
    if short:
        raise ValueError(f"ipc={ipc} exceeds the images available in classes {short} (class: count); lower ipc")
    return per_class


def _subset(real: TensorBundle, chosen: list[torch.Tensor], ipc: int, method: str, extra: dict) -> TensorBundle:
    indices = torch.cat(chosen)
    images = real["images"]
    mean_std = {}
    if images.shape[0]:
        mean, std = channel_stats(images)
        mean_std = {"mean": mean.tolist(), "std": std.tolist()}
    meta = {
        "method": method,
        "ipc": ipc,
        "class_names": real.class_names or [str(c) for c in range(real.num_classes)],
        "num_classes": real.num_classes,
        "indices": indices.tolist(),
        "source": real.meta.get("source"),
        **mean_std,
        **extra,
    }
    return TensorBundle(
        tensors={"images": to_unit(images[indices]).contiguous(), "labels": real["labels"][indices].long()}, meta=meta
    )


def random_real_subset(real: TensorBundle, ipc: int, seed: int) -> TensorBundle:
    """`ipc` real images per class drawn uniformly without replacement (one seeded generator for all classes)."""
    per_class = _class_indices(real, ipc)
    generator = torch.Generator().manual_seed(seed)
    chosen = [rows[torch.randperm(len(rows), generator=generator)[:ipc]] for rows in per_class]
    return _subset(real, chosen, ipc, "random", {"seed": seed})


def herding_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """Welling's herding on one class: at step k pick the unused x minimising ‖μ − (Σ chosen + x)/k‖.

    Greedy mean matching; ties go to the lowest index. `features` (n, d), returns `count` row indices.
    """
    feats = features.double()
    mean = feats.mean(dim=0)
    chosen_sum = torch.zeros_like(mean)
    available = torch.ones(feats.shape[0], dtype=torch.bool, device=feats.device)
    picks = []
    for k in range(1, count + 1):
        error = torch.linalg.vector_norm(mean - (chosen_sum + feats) / k, dim=1)
        error = error.masked_fill(~available, float("inf"))
        pick = int(torch.argmin(error))
        picks.append(pick)
        available[pick] = False
        chosen_sum += feats[pick]
    return torch.tensor(picks, dtype=torch.long)


@torch.no_grad()
def _embed(
    images: torch.Tensor, features: FeatureFn | nn.Module, batch_size: int, device: str | torch.device
) -> torch.Tensor:
    if isinstance(features, nn.Module):
        features.eval()
        fn = getattr(features, "features", features)
    else:
        fn = features
    out = [
        fn(to_unit(images[start : start + batch_size].to(device))).flatten(1).cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(out)


def herding_subset(
    real: TensorBundle,
    ipc: int,
    features: FeatureFn | nn.Module,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> TensorBundle:
    """Herding coreset: per class, greedily match the class mean in a feature space.

    `features` maps images in [0, 1] (B, C, H, W) to (B, F): a function, or a module whose
    `.features` (else forward) does so, e.g. a `NormalizedClassifier` from `train_classifier`,
    or `lambda x: x.flatten(1)` for pixel space. Deterministic; `indices` are in pick order.
    """
    per_class = _class_indices(real, ipc)
    chosen, errors = [], []
    for rows in per_class:
        feats = _embed(real["images"][rows], features, batch_size, device)
        order = herding_order(feats, ipc)
        chosen.append(rows[order])
        errors.append(float(torch.linalg.vector_norm(feats.double().mean(0) - feats[order].double().mean(0))))
    return _subset(real, chosen, ipc, "herding", {"herding_mean_error": errors})
