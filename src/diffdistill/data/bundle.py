"""`TensorBundle`: named tensors plus JSON metadata, the unit every artifact is made of."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TensorBundle:
    """Named CPU tensors and a JSON-serialisable metadata dict.

    Real splits carry `images` (uint8, N×C×H×W) and `labels` (int64, N); distilled
    sets carry `images` (float32 in [0, 1]), `labels` and optionally `soft_labels`.
    """

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.tensors.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"TensorBundle tensor {name!r} must be a torch.Tensor, got {type(value).__name__}")
        json.dumps(self.meta)  # fail early on metadata that cannot be stored

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise KeyError(f"TensorBundle has no tensor {name!r}; it has {sorted(self.tensors)}")
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    @property
    def images(self) -> torch.Tensor:
        return self["images"]

    @property
    def labels(self) -> torch.Tensor:
        return self["labels"]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names", []))

    @property
    def num_classes(self) -> int:
        if "num_classes" in self.meta:
            value = self.meta["num_classes"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TensorBundle meta num_classes={value!r} must be an int >= 1; the artifact's "
                                 "metadata was edited or written by another version: re-create it")
            return value
        if "class_names" in self.meta:
            return len(self.meta["class_names"])
        return int(self.labels.max().item()) + 1

    def __len__(self) -> int:
        first = next(iter(self.tensors.values()), None)
        return 0 if first is None else int(first.shape[0])


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1] (float input is returned as float32 unchanged)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def to_signed(images_unit: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the diffusion side's range."""
    return images_unit * 2.0 - 1.0


def from_signed(images_signed: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((images_signed + 1.0) * 0.5).clamp(0.0, 1.0)
