"""ResNet18 for small images: 3×3 stride-1 stem, no max-pool, torchvision BasicBlocks, adaptive avg-pool."""

from __future__ import annotations

import functools

import torch
from torch import nn

from diffdistill.nets.base import Classifier, make_norm


class ResNet18(Classifier):
    """The "CIFAR" ResNet18 used by GLaD/RDED/D3HR (`resnet18_modified`), with a choice of norm.

    `width` scales the four stages (width, 2w, 4w, 8w); 64 is the standard net.
    """

    def __init__(self, in_channels: int, num_classes: int, norm: str = "instance", width: int = 64) -> None:
        from torchvision.models.resnet import BasicBlock  # torchvision loads all its models: only when built

        super().__init__()
        norm_layer = functools.partial(make_norm, norm)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False),
            norm_layer(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = width
        for index, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or channels != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(channels, planes, kernel_size=1, stride=stride, bias=False), norm_layer(planes)
                )
            stages.append(
                nn.Sequential(
                    BasicBlock(channels, planes, stride, downsample, norm_layer=norm_layer),
                    BasicBlock(planes, planes, norm_layer=norm_layer),
                )
            )
            channels = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        self.head = nn.Linear(channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)
