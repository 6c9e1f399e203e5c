"""Image files -> uint8 tensors: decode, convert to 1 or 3 channels, resize + centre crop, streamed.

Every file is decoded on its own and written straight into one preallocated uint8
tensor, so a folder of any size never exists as floats (or as PIL images) in memory.
Files that cannot be decoded are skipped and reported with the reason; the caller
decides whether there were too many.
EXIF orientation is not applied, as in the usual ImageNet pipelines (torchvision ImageFolder).
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# What Pillow raises on malformed input (measured by fuzzing truncated / bit-flipped
# JPEG, PNG, GIF, BMP, TIFF and WebP files): almost always OSError (UnidentifiedImageError,
# "image file is truncated", "broken data stream"), occasionally the others.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)

_WHITE = (255, 255, 255, 255)


def high_depth_to_uint8(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale -> 8-bit 'L'.

    Pillow's own convert('L') clips these at 255 instead of scaling. 'I;16*' is
    16-bit data; 'I' is taken as 16-bit too (Pillow decodes 16-bit PNG/TIFF into it in
    some versions), both mapped by v/257; 'F' is taken as 0..255 like Pillow does.
    """
    values = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(np.rint(values), 0, 255)
    else:
        scaled = np.rint(np.clip(values.astype(np.float64), 0, 65535) / 257.0)
    return Image.fromarray(scaled.astype(np.uint8))


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode -> 'L' (channels=1) or 'RGB' (channels=3).

    Transparency (RGBA, LA, palette or RGB with a transparent colour) is composited
    on white, as a viewer shows it: the colour under transparent pixels is arbitrary.
    CMYK, YCbCr, bilevel and palette go through Pillow's RGB conversion; RGB -> L
    uses Pillow's ITU-R 601 luma.
    """
    target = "L" if channels == 1 else "RGB"
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = high_depth_to_uint8(img)
    elif img.has_transparency_data:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return img if img.mode == target else img.convert(target)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` and keep the centre `size`×`size` square.

    Done as one antialiased bilinear resample of the centred square box (fractional
    box edges, no rounding), the same as torchvision's Resize(size) + CenterCrop(size)
    up to its integer crop offset.
    """
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) / 2.0, (height - side) / 2.0
    return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def decode_image(path: Path, size: int, channels: int) -> tuple[np.ndarray, str]:
    """One file -> (uint8 array H×W×C, the file's Pillow mode). Raises one of DECODE_ERRORS."""
    with Image.open(path) as img:
        source_mode = img.mode
        # JPEG only: decode at the smallest DCT scale that is still >= size on both sides.
        img.draft(None, (size, size))
        img.load()
        img = resize_center_crop(to_channels(img, channels), size)
        pixels = np.array(img, dtype=np.uint8)  # a writable copy for torch
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, source_mode


def describe_error(exc: BaseException) -> str:
    message = str(exc).strip() or "no message"
    return f"{type(exc).__name__}: {message}"


def read_images(
    paths: list[Path],
    size: int,
    channels: int,
    *,
    max_bad: int | None = None,
) -> tuple[torch.Tensor, list[int], list[tuple[Path, str]], dict[str, int]]:
    """Decode `paths` into a (N_kept, channels, size, size) uint8 tensor.

    Returns (images, kept positions into `paths`, skipped (path, reason) pairs,
    count of each source Pillow mode). Stops early once more than `max_bad` files
    failed (the caller is going to reject the folder anyway).
    """
    images = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    kept: list[int] = []
    skipped: list[tuple[Path, str]] = []
    modes: Counter[str] = Counter()
    for position, path in enumerate(paths):
        try:
            pixels, mode = decode_image(path, size, channels)
        except DECODE_ERRORS as exc:
            skipped.append((path, describe_error(exc)))
            if max_bad is not None and len(skipped) > max_bad:
                break
            continue
        images[len(kept)] = torch.from_numpy(pixels).permute(2, 0, 1)
        kept.append(position)
        modes[mode] += 1
    if len(kept) < len(paths):
        images = images[: len(kept)].clone()  # drop the rows of skipped files
    return images, kept, skipped, dict(sorted(modes.items()))


def list_image_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file under `folder` (recursively), sorted by relative path.

    Files are recognised by content, not by extension (ImageNet has PNG and CMYK
    files named .JPEG); what Pillow cannot decode is reported as skipped.
    """
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())
