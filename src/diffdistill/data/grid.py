"""Image grids: the picture of a set that reports, previews and MLflow show."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from diffdistill.data.bundle import TensorBundle, to_unit

PADDING = 2  # white pixels between and around the images
TITLE_PX, LABEL_PX, MARGIN_PX = 13, 11, 6  # font sizes and the white border around titles and labels


def image_grid(images: torch.Tensor, labels: torch.Tensor | None = None, *, max_per_class: int = 10,
               max_images: int = 200, upscale_to: int = 32, title: str | None = None,
               class_names: Sequence[str] | None = None) -> torch.Tensor:
    """uint8 (3, H, W) grid: one row per class (when labels are given), up to `max_per_class` each (rows as wide
    as the largest class).

    Small images are upscaled (nearest) to at least `upscale_to` px so digits stay visible. With `title` (lines
    split at "\\n") and/or `class_names`, the grid gets a title above and each class row its name on the left;
    when `max_images` leaves classes out, the title says how many rows are shown.
    """
    from torchvision.utils import make_grid  # importing torchvision loads all its models: only when drawing

    if images.ndim != 4:
        raise ValueError(f"image_grid expects N×C×H×W images, got shape {tuple(images.shape)}")
    images = images.detach().cpu()
    nrow = min(max_per_class, max(1, len(images)))
    row_classes: list[int] = []
    if labels is not None and len(labels) == len(images) and len(images) > 0:
        labels = labels.detach().cpu()
        nrow = min(nrow, int(torch.bincount(labels).max()))  # rows as wide as the largest class (IPC 1: one column)
        rows = []
        for cls in torch.unique(labels).tolist():
            members = to_unit(images[labels == cls][:max_per_class])  # only the shown images are converted
            pad = nrow - len(members)
            if pad > 0:
                members = torch.cat([members, torch.ones(pad, *members.shape[1:])])
            rows.append(members)
            row_classes.append(int(cls))
        x = torch.cat(rows)
    else:
        x = to_unit(images[:max_images])
    x = x[:max_images]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x[:, :3]
    if x.shape[-1] < upscale_to:
        factor = -(-upscale_to // x.shape[-1])
        x = torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")
    grid = (make_grid(x.clamp(0, 1), nrow=nrow, padding=PADDING, pad_value=1.0) * 255).round().to(torch.uint8)
    if title is None and class_names is None:
        return grid
    shown_rows = math.ceil(len(x) / nrow)
    lines = title.split("\n") if title else []
    if row_classes and shown_rows < len(row_classes):
        lines.append(f"first {shown_rows} of {len(row_classes)} classes shown")
    names = list(class_names or [])
    row_labels = [names[c] if c < len(names) else str(c) for c in row_classes[:shown_rows]]
    return _annotated(grid, lines, row_labels, cell_height=int(x.shape[-2]))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font (no system font files needed, so every machine draws the same pixels)."""
    return ImageFont.load_default(size=size)


def _annotated(grid: torch.Tensor, title_lines: list[str], row_labels: list[str], *, cell_height: int) -> torch.Tensor:
    """`grid` on a white canvas with `title_lines` above it and `row_labels` (right-aligned) left of its rows."""
    title_font, label_font = _font(TITLE_PX), _font(LABEL_PX)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str, font) -> int:
        return int(math.ceil(measure.textlength(text, font=font)))

    label_width = max((width(t, label_font) for t in row_labels), default=0)
    left = label_width + 2 * MARGIN_PX if row_labels else 0
    line_height = TITLE_PX + 4
    top = len(title_lines) * line_height + 2 * MARGIN_PX if title_lines else 0
    grid_height, grid_width = int(grid.shape[1]), int(grid.shape[2])
    canvas_width = max(left + grid_width, max((width(t, title_font) for t in title_lines), default=0) + 2 * MARGIN_PX)
    canvas = Image.new("RGB", (canvas_width, top + grid_height), "white")
    canvas.paste(Image.fromarray(grid.permute(1, 2, 0).numpy()), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((MARGIN_PX, MARGIN_PX + i * line_height), line, fill="black", font=title_font)
    for i, label in enumerate(row_labels):
        centre = top + PADDING + i * (cell_height + PADDING) + cell_height / 2
        draw.text((left - MARGIN_PX, centre), label, fill="black", font=label_font, anchor="rm")
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def set_grid(bundle: TensorBundle, name: str, **kwargs) -> torch.Tensor:
    """The titled grid of a set: its name, then its IPC (distilled sets) or image count and its number of
    classes; each row labelled with the class name from the bundle's `class_names`."""
    labels = bundle.tensors.get("labels")
    ipc = bundle.meta.get("ipc")
    details = [f"IPC {ipc}" if ipc is not None else f"{len(bundle)} images"]
    if labels is not None and len(labels):
        classes = len(torch.unique(labels))
        details.append(f"{classes} class{'es' if classes != 1 else ''}")
    return image_grid(bundle.images, labels, title=f"{name}\n{' · '.join(details)}", class_names=bundle.class_names,
                      **kwargs)


def grid_png_bytes(grid: torch.Tensor) -> bytes:
    """PNG bytes of a uint8 (3, H, W) grid."""
    buf = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()
