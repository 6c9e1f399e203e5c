"""Plain conv stacks: ConvNet (DC/DSA/MTT/GLaD), AlexNet and VGG11 (GLaD's evaluation pool)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffdistill.nets.base import Classifier, make_norm


@dataclass(frozen=True)
class ConvNetConfig:
    depth: int = 3
    width: int = 128
    norm: str = "instance"


class ConvNet(Classifier):
    """depth × [conv3×3 pad 1 → norm → ReLU → AvgPool 2], then a linear head on the flattened map."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, config: ConvNetConfig) -> None:
        super().__init__()
        side = image_size // 2**config.depth
        if side < 1:
            raise ValueError(
                f"ConvNet of depth {config.depth} halves the image {config.depth} times and needs "
                f"image_size >= {2**config.depth}, got {image_size}; use a smaller depth"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(config.depth):
            layers += [
                nn.Conv2d(channels, config.width, kernel_size=3, padding=1),
                make_norm(config.norm, config.width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            channels = config.width
        self.body = nn.Sequential(*layers)
        self.feature_dim = config.width * side * side
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)


class AlexNet(Classifier):
    """GLaD's AlexNet: conv5×5 128 → pool → conv5×5 192 → pool → conv3×3 256,192,192 → pool → linear; no norm.

    GLaD pads the first conv by 4 for 1-channel (MNIST 28 → 32) input; here it is always
    2 and the head size follows the resolution (floor(size / 8)² · 192). `width` (128)
    scales every layer: channels w, 1.5w, 2w, 1.5w, 1.5w.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 128) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"AlexNet pools three times and needs image_size >= 8, got {image_size}")
        c1, c2, c3 = width, width * 3 // 2, width * 2
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c2, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 8
        self.feature_dim = c2 * side * side
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)


VGG11_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
# How the max-pools and the head are laid out (`VGG11(variant=...)`):
#   keep_2x2  `vgg11`: every max-pool is skipped once the map is 2×2, then an adaptive max-pool to at most 7×7.
#   dc        `vgg11_dc`: DC's VGG11 (= GLaD's VGG11CIFAR): the final max-pool runs, the map is flattened
#             (512 features at 32 px, 512·(size/32)² above).
#   glad      `vgg11_glad`: GLaD's ImageNet-subset VGG11: as `dc`, then an adaptive max-pool to exactly 7×7
#             (25088 features at any size; at 128 px the 4×4 map is replicated onto 7×7).
VGG11_VARIANTS = ("keep_2x2", "dc", "glad")


class VGG11(Classifier):
    """VGG11 with conv3×3 → norm → ReLU blocks (`instance` as in DC / GLaD, or real `batch` norm).

    A max-pool that would leave the next conv a 1×1 map is skipped (instance norm of a 1×1 map is identically
    zero, which silenced every layer after it at 16 px), so the net runs from 8 px up; at 32 px and above the
    `dc` / `glad` variants have exactly the references' five pools. `variant` (`VGG11_VARIANTS`) sets the final
    pool and the head; the default `keep_2x2` also skips the last pool at 2×2, so at 32 px it flattens a 2×2 map
    (2048 features, DC's VGG11 has 512) and at 128 px pools 4×4 (GLaD pools to 7×7): it is kept because the
    committed results were measured with it. DC and GLaD pad the first conv by 3 for 1-channel (MNIST 28 → 32)
    input; here it is always 1. `width` (64) scales every layer (w, 2w, 4w, 4w, 8w, ...).
    """

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, norm: str = "instance", width: int = 64,
        variant: str = "keep_2x2",
    ) -> None:
        super().__init__()
        if variant not in VGG11_VARIANTS:
            raise ValueError(f"VGG11 variant must be one of {VGG11_VARIANTS}, got {variant!r}")
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for index, item in enumerate(VGG11_LAYOUT):
            if item == "M":
                last = index == len(VGG11_LAYOUT) - 1  # nothing normalises the map after the final pool
                if side >= 4 or (last and variant != "keep_2x2" and side >= 2):
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            out = int(item) * width // 64
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), make_norm(norm, out), nn.ReLU(inplace=True)]
            channels = out
        pooled = {"keep_2x2": min(side, 7), "dc": side, "glad": 7}[variant]
        if variant != "dc":
            layers.append(nn.AdaptiveMaxPool2d(pooled))
        self.body = nn.Sequential(*layers)
        self.feature_dim = channels * pooled * pooled
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)
