"""The soft-label protocol's augmentations (RDED / D3HR): random-resized-crop + flip, and CutMix.

Both are batched tensor ops with randomness from an explicit generator (drawn on the
generator's device, a CPU generator is fine for CUDA images) and differentiable w.r.t.
the images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    prob_flip: float = 0.5,
) -> torch.Tensor:
    """Per-sample RandomResizedCrop back to the input size, then horizontal flip with `prob_flip`.

    Area fraction ~ U(scale), log aspect ~ U(log ratio), box clipped to the image (where
    torchvision would retry, the box is shrunk instead), resampled bilinearly with an
    affine grid, the flip folded into the same grid.
    """
    if x.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(x.shape)}")
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < low <= high, got {ratio}")
    batch, device = x.shape[0], generator.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator, device=device) * (high - low) + low

    area = uniform(*scale)
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the image side
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = uniform(-1.0, 1.0) * (1.0 - width)  # in affine_grid's [-1, 1] coordinates
    centre_y = uniform(-1.0, 1.0) * (1.0 - height)
    mirror = torch.where(uniform(0.0, 1.0) < prob_flip, -1.0, 1.0)
    zero = torch.zeros_like(width)
    theta = torch.stack(
        [torch.stack([width * mirror, zero, centre_x], 1), torch.stack([zero, height, centre_y], 1)], 1
    ).to(device=x.device, dtype=x.dtype, non_blocking=True)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def cutmix(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix with λ ~ Beta(1, 1) and one box for the whole batch (RDED's variant).

    Returns (mixed images, permutation the pasted patches came from, λ = kept area fraction).
    The soft-label protocol needs no label mixing: the teacher labels the mixed image.
    """
    if x.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(x.shape)}")
    batch, _, height, width = x.shape
    device = generator.device
    lam = torch.rand((), generator=generator, device=device)  # Beta(1, 1) is U(0, 1)
    cut = torch.sqrt(1.0 - lam)
    cut_h, cut_w = (cut * height).long(), (cut * width).long()
    centre_y = torch.randint(height, (), generator=generator, device=device)
    centre_x = torch.randint(width, (), generator=generator, device=device)
    top, bottom = (centre_y - cut_h // 2).clamp(0, height), (centre_y + cut_h // 2).clamp(0, height)
    left, right = (centre_x - cut_w // 2).clamp(0, width), (centre_x + cut_w // 2).clamp(0, width)
    perm = torch.randperm(batch, generator=generator, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    box = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    kept = 1.0 - box.float().mean()
    box, perm = box.to(x.device, non_blocking=True), perm.to(x.device, non_blocking=True)
    mixed = torch.where(box, x[perm], x)
    return mixed, perm, kept
