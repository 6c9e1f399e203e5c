"""`build_net`: the one place an evaluation / distillation net is made, with seeded init."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from diffdistill.nets.base import NORMS, Classifier, init_parameters
from diffdistill.nets.convnets import VGG11, AlexNet, ConvNet, ConvNetConfig
from diffdistill.nets.resnet import ResNet18
from diffdistill.nets.vit import GLAD_VIT, ViT, vit_config_for

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 256
NetFactory = Callable[[torch.Generator], torch.nn.Module]  # a fresh net, every parameter drawn from the generator


def convnet_depth_for(image_size: int) -> int:
    """DC/MTT/GLaD convention: depth 3 up to 32 px, 4 up to 64, 5 up to 128, 6 above."""
    for depth, limit in ((3, 32), (4, 64), (5, 128)):
        if image_size <= limit:
            return depth
    return 6


def _convnet(depth: int | None, norm: str) -> Callable[..., Classifier]:
    def build(in_channels: int, num_classes: int, image_size: int, **overrides: Any) -> Classifier:
        config = ConvNetConfig(depth=depth or convnet_depth_for(image_size), norm=norm)
        return ConvNet(in_channels, num_classes, image_size, dataclasses.replace(config, **overrides))

    build.overrides = ("depth", "width", "norm")  # type: ignore[attr-defined]
    return build


def _alexnet(in_channels: int, num_classes: int, image_size: int, **overrides: Any) -> Classifier:
    return AlexNet(in_channels, num_classes, image_size, width=overrides.get("width", 128))


def _vgg11(norm: str, variant: str = "keep_2x2") -> Callable[..., Classifier]:
    def build(in_channels: int, num_classes: int, image_size: int, **overrides: Any) -> Classifier:
        return VGG11(in_channels, num_classes, image_size, norm=overrides.get("norm", norm),
                     width=overrides.get("width", 64), variant=variant)

    build.overrides = ("norm", "width")  # type: ignore[attr-defined]
    return build


def _resnet18(norm: str) -> Callable[..., Classifier]:
    def build(in_channels: int, num_classes: int, image_size: int, **overrides: Any) -> Classifier:
        return ResNet18(in_channels, num_classes, norm=overrides.get("norm", norm), width=overrides.get("width", 64))

    build.overrides = ("norm", "width")  # type: ignore[attr-defined]
    return build


def _vit(**reference: Any) -> Callable[..., Classifier]:
    def build(in_channels: int, num_classes: int, image_size: int, **overrides: Any) -> Classifier:
        config = dataclasses.replace(vit_config_for(image_size), **reference, **overrides)
        return ViT(in_channels, num_classes, image_size, config)

    build.overrides = ("patch_size", "dim", "depth", "heads", "mlp_dim")  # type: ignore[attr-defined]
    return build


_alexnet.overrides = ("width",)  # type: ignore[attr-defined]

_BUILDERS: dict[str, Callable[..., Classifier]] = {
    "convnet": _convnet(None, "instance"),
    "convnet_d3": _convnet(3, "instance"),
    "convnet_d4": _convnet(4, "instance"),
    "convnet_d5": _convnet(5, "instance"),
    "convnet_d6": _convnet(6, "instance"),
    "convnet_bn": _convnet(None, "batch"),
    "convnet_nonorm": _convnet(None, "none"),
    "alexnet": _alexnet,
    "vgg11": _vgg11("instance"),
    "vgg11_bn": _vgg11("batch"),
    "vgg11_dc": _vgg11("instance", "dc"),  # DC's VGG11 (= GLaD's VGG11CIFAR): 512 features at 32 px
    "vgg11_glad": _vgg11("instance", "glad"),  # GLaD's 128-px VGG11: adaptive max-pool to 7×7
    "resnet18": _resnet18("instance"),
    "resnet18_bn": _resnet18("batch"),  # RDED / D3HR's resnet18_modified
    "vit": _vit(),
    "vit_glad": _vit(**GLAD_VIT),  # GLaD's ViT: no LayerNorm, dropout 0.1
}
NET_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def arch_family(name: str) -> str:
    """`convnet_bn` -> `convnet`, `resnet18_bn` -> `resnet18`: the key of per-arch tables (e.g. learning rates)."""
    return name.split("_", 1)[0]


def build_net(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    *,
    generator: torch.Generator | None = None,
    **overrides: Any,
) -> Classifier:
    """Build net `name` (one of `NET_NAMES`) on the CPU with every parameter drawn from `generator`.

    `generator=None` means a fresh generator seeded with 0 (never the global RNG), so
    two calls without a generator give identical nets; pass your own to get a different
    one. The module is constructed on the meta device and then initialised, so building
    a net consumes nothing from the global RNG. `overrides` are architecture knobs
    (ConvNet: depth, width, norm; AlexNet: width; VGG11s: norm, width; ResNet18s: norm,
    width; ViTs: patch_size, dim, depth, heads, mlp_dim). Widths must stay >= 1 per layer.
    Reference-comparable nets beside ours: `vgg11_dc`, `vgg11_glad`, `vit_glad`; `convnet_bn` and
    `resnet18_bn` are RDED / D3HR's BatchNorm ConvNet and ResNet-18.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown net {name!r}; valid names: {', '.join(NET_NAMES)}")
    for label, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
    if (isinstance(image_size, bool) or not isinstance(image_size, int)
            or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise ValueError(f"image_size must be an int in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size!r}")
    builder = _BUILDERS[name]
    unknown = sorted(set(overrides) - set(builder.overrides))  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(
            f"net {name!r} does not take overrides {unknown}; it takes {list(builder.overrides)}"  # type: ignore[attr-defined]
        )
    for key in ("width", "depth", "patch_size", "dim", "heads", "mlp_dim"):
        value = overrides.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"net {name!r} override {key} must be an int >= 1, got {value!r}")
    if "norm" in overrides and overrides["norm"] not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {overrides['norm']!r}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        net = builder(in_channels, num_classes, image_size, **overrides)
    net.to_empty(device="cpu")
    return init_parameters(net, generator)


def net_factory(name: str, in_channels: int, num_classes: int, image_size: int,
                overrides: Mapping[str, Any] | None = None) -> NetFactory:
    """Nets `name` (+ `build_net` `overrides`) for data of this shape, each initialised from the generator handed
    in: the one factory of the matching nets (DC / DM / MTT objectives, LD3M, the MTT experts)."""
    overrides = dict(overrides or {})

    def make(generator: torch.Generator) -> torch.nn.Module:
        return build_net(name, in_channels, num_classes, image_size, generator=generator, **overrides)

    return make
