"""Differentiable Siamese Augmentation (Zhao & Bilen 2021), seeded by an explicit generator.

One call picks ONE family from the strategy string (DSA's mode 'S'); `color` applies
brightness, saturation and contrast in turn. Ranges are the reference ones (identical in
DC/DSA, MTT, GLaD, LD3M). Parameters are drawn once per batch (`siamese=True`: a single
draw broadcast to every sample, so the same `DSAParams` applied to a real and a synthetic
batch transforms both identically) or once per sample (`siamese=False`, used when
training evaluation nets). Every op is differentiable w.r.t. the images. Images are
expected in normalised (mean/std) space, as in the references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
# names whose classes are not mirror-symmetric (digits): the references drop `flip` for MNIST
_NO_FLIP_DATASETS = ("mnist", "digits", "svhn", "usps")


def dsa_strategy_for(dataset_name: str | None) -> str:
    """Default strategy for a dataset: without `flip` for digit-like data (MNIST family, sklearn digits, SVHN, USPS)."""
    name = (dataset_name or "").lower()
    if any(key in name for key in _NO_FLIP_DATASETS):
        return DEFAULT_STRATEGY.replace("_flip", "")
    return DEFAULT_STRATEGY


def resolve_dsa_strategy(strategy: str, source: str | None) -> str:
    """`auto`: the default strategy for the data `source` (`dsa_strategy_for`); any other strategy as given."""
    return dsa_strategy_for(source) if strategy == "auto" else strategy


@dataclass
class DSAParams:
    """One draw: the chosen `family` and its raw random numbers, leading dim 1 (siamese) or batch size.

    Crop and cutout keep uniforms in [0, 1) and turn them into pixel offsets in `apply`,
    so the same params fit batches of any resolution.
    """

    family: str
    values: dict[str, torch.Tensor]

    @property
    def batch_size(self) -> int:
        return next(iter(self.values.values())).shape[0] if self.values else 1


@dataclass(frozen=True)
class DSA:
    strategy: str = DEFAULT_STRATEGY
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0  # degrees
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str):
            raise ValueError(f"DSA strategy must be a string like {DEFAULT_STRATEGY!r} or 'none', "
                             f"got {self.strategy!r}")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(
                f"DSA strategy {self.strategy!r} has unknown families {unknown}; use '_'-joined names from {FAMILIES} "
                "or 'none'"
            )

    @property
    def families(self) -> tuple[str, ...]:
        if self.strategy.lower() in ("", "none"):
            return ()
        return tuple(self.strategy.split("_"))

    def sample_params(self, batch_size: int, generator: torch.Generator, siamese: bool = False) -> DSAParams:
        """Choose a family and draw its parameters on `generator`'s device.

        A CPU generator is the cheap choice even for CUDA images: the family choice must
        reach the host anyway, and `apply` moves the few numbers over without a sync.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not self.families:
            return DSAParams("none", {})
        device = generator.device
        n = 1 if siamese else batch_size

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=device) * (high - low) + low

        family = self.families[int(torch.randint(len(self.families), (1,), generator=generator, device=device))]
        if family == "color":
            values = {
                "brightness": uniform(-0.5 * self.brightness, 0.5 * self.brightness),
                "saturation": uniform(0.0, self.saturation),
                "contrast": uniform(self.contrast, self.contrast + 1.0),
            }
        elif family in ("crop", "cutout"):
            values = {"u_row": uniform(0.0, 1.0), "u_col": uniform(0.0, 1.0)}
        elif family == "flip":
            values = {"flip": uniform(0.0, 1.0) < self.prob_flip}
        elif family == "scale":
            low = 1.0 / self.ratio_scale
            values = {"sx": uniform(low, self.ratio_scale), "sy": uniform(low, self.ratio_scale)}
        else:  # rotate
            limit = math.radians(self.ratio_rotate)
            values = {"angle": uniform(-limit, limit)}
        return DSAParams(family, values)

    def apply(self, x: torch.Tensor, params: DSAParams) -> torch.Tensor:
        """Apply `params` to images `x` (B, C, H, W); params with batch 1 apply to every sample."""
        if x.ndim != 4:
            raise ValueError(f"DSA expects images of shape (B, C, H, W), got {tuple(x.shape)}")
        if params.family == "none":
            return x
        if params.batch_size not in (1, x.shape[0]):
            raise ValueError(
                f"DSA params were drawn for batch {params.batch_size}, images have batch {x.shape[0]}; "
                "draw them with siamese=True to share them across batches"
            )
        values = {k: v.to(x.device, non_blocking=True).expand(x.shape[0]) for k, v in params.values.items()}
        values = {k: v if v.dtype == torch.bool else v.to(x.dtype) for k, v in values.items()}
        return _APPLY[params.family](self, x, values).contiguous()

    def __call__(self, x: torch.Tensor, generator: torch.Generator, siamese: bool = False) -> torch.Tensor:
        return self.apply(x, self.sample_params(x.shape[0], generator, siamese=siamese))

    # -- the families ---------------------------------------------------------------------

    def _color(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        x = x + v["brightness"].view(-1, 1, 1, 1)
        mean = x.mean(dim=1, keepdim=True)  # per-pixel grey level
        x = (x - mean) * v["saturation"].view(-1, 1, 1, 1) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # per-image mean
        return (x - mean) * v["contrast"].view(-1, 1, 1, 1) + mean

    def _crop(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        """Integer translation by up to round(ratio·side) px with zero fill (DSA pads, shifts, crops)."""
        batch, channels, height, width = x.shape
        pad_h, pad_w = int(height * self.ratio_crop_pad + 0.5), int(width * self.ratio_crop_pad + 0.5)
        shift_r = _uniform_to_int(v["u_row"], 2 * pad_h + 1) - pad_h
        shift_c = _uniform_to_int(v["u_col"], 2 * pad_w + 1) - pad_w
        padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
        rows = torch.arange(height, device=x.device) + pad_h + shift_r[:, None]  # (B, H)
        cols = torch.arange(width, device=x.device) + pad_w + shift_c[:, None]  # (B, W)
        out = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, padded.shape[3]))
        return out.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))

    def _cutout(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        """Zero a square of side round(ratio·side) centred at a random pixel (clipped at the border)."""
        _, _, height, width = x.shape
        size_h, size_w = int(height * self.ratio_cutout + 0.5), int(width * self.ratio_cutout + 0.5)
        top = _uniform_to_int(v["u_row"], height + 1 - size_h % 2) - size_h // 2
        left = _uniform_to_int(v["u_col"], width + 1 - size_w % 2) - size_w // 2
        rows = torch.arange(height, device=x.device)[None, :]
        cols = torch.arange(width, device=x.device)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size_h)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size_w)
        keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
        return x * keep[:, None].to(x.dtype)

    def _flip(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)

    def _scale(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        zero = torch.zeros_like(v["sx"])
        theta = torch.stack([torch.stack([v["sx"], zero, zero], 1), torch.stack([zero, v["sy"], zero], 1)], 1)
        return _warp(x, theta)

    def _rotate(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        cos, sin, zero = torch.cos(v["angle"]), torch.sin(v["angle"]), torch.zeros_like(v["angle"])
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        return _warp(x, theta)


_APPLY = {
    "color": DSA._color,
    "crop": DSA._crop,
    "cutout": DSA._cutout,
    "flip": DSA._flip,
    "scale": DSA._scale,
    "rotate": DSA._rotate,
}


def _uniform_to_int(u: torch.Tensor, count: int) -> torch.Tensor:
    """u in [0, 1) -> integer uniform on {0, ..., count - 1}."""
    return (u.float() * count).long().clamp_(0, count - 1)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Affine resampling with DSA's conventions (align_corners=True, bilinear, zero padding)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)
