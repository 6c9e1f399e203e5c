"""Image grids: the picture of a set that reports, previews and MLflow show."""

from __future__ import annotations

import io

import torch
from PIL import Image

from diffdistill.data.bundle import to_unit


def image_grid(images: torch.Tensor, labels: torch.Tensor | None = None, *, max_per_class: int = 10,
               max_images: int = 200, upscale_to: int = 32) -> torch.Tensor:
    """uint8 (3, H, W) grid: one row per class (when labels are given), up to `max_per_class` each.

    Small images are upscaled (nearest) to at least `upscale_to` px so digits stay visible.
    """
    from torchvision.utils import make_grid  # importing torchvision loads all its models: only when drawing

    if images.ndim != 4:
        raise ValueError(f"image_grid expects N×C×H×W images, got shape {tuple(images.shape)}")
    x = to_unit(images.detach().cpu())
    nrow = min(max_per_class, max(1, len(x)))
    if labels is not None and len(labels) == len(x) and len(x) > 0:
        labels = labels.detach().cpu()
        rows = []
        for cls in torch.unique(labels).tolist():
            members = x[labels == cls][:max_per_class]
            pad = nrow - len(members)
            if pad > 0:
                members = torch.cat([members, torch.ones(pad, *members.shape[1:])])
            rows.append(members)
        x = torch.cat(rows) if rows else x
    x = x[:max_images]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x[:, :3]
    if x.shape[-1] < upscale_to:
        factor = -(-upscale_to // x.shape[-1])
        x = torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")
    grid = make_grid(x.clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def grid_png_bytes(grid: torch.Tensor) -> bytes:
    """PNG bytes of a uint8 (3, H, W) grid."""
    buf = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()
