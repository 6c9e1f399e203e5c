"""Image decoding: mode conversion, resize + centre crop, streaming with skipped files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffdistill.data.images import decode_image, list_image_files, read_images, resize_center_crop, to_channels


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _constant_pixels(path: Path, channels: int) -> np.ndarray:
    pixels, _ = decode_image(path, 8, channels)
    assert pixels.shape == (8, 8, channels)
    assert (pixels == pixels[0, 0]).all(), "a constant image must stay constant"
    return pixels[0, 0]


def _luma(rgb: tuple[int, int, int]) -> int:
    return (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16


def test_modes_convert_to_rgb_and_grey_with_the_documented_values(tmp_path: Path) -> None:
    colour = (200, 17, 99)
    cases = {
        "rgb.png": (Image.new("RGB", (20, 12), colour), colour),
        "grey.png": (Image.new("L", (20, 12), 77), (77, 77, 77)),
        "bilevel.png": (Image.new("1", (20, 12), 1), (255, 255, 255)),
        # 16-bit: v / 257, not Pillow's clip at 255
        "grey16.png": (Image.fromarray(np.full((12, 20), 257 * 100, np.uint16)), (100, 100, 100)),
        "int32.tif": (Image.fromarray(np.full((12, 20), 65535, np.int32)), (255, 255, 255)),
        # CMYK through Pillow's conversion: C=255 removes red
        "cmyk.jpg": (Image.new("CMYK", (20, 12), (255, 0, 0, 0)), (0, 255, 255)),
        "opaque_rgba.png": (Image.new("RGBA", (20, 12), (*colour, 255)), colour),
        "clear_rgba.png": (Image.new("RGBA", (20, 12), (*colour, 0)), (255, 255, 255)),  # composited on white
        "clear_la.png": (Image.new("LA", (20, 12), (30, 0)), (255, 255, 255)),
    }
    palette = Image.new("P", (20, 12), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    cases["palette.gif"] = (palette, (10, 20, 30))
    transparent = palette.copy()
    transparent.info["transparency"] = 1
    cases["palette_clear.png"] = (transparent, (255, 255, 255))
    for name, (img, expected) in cases.items():
        path = _save(img, tmp_path / name, **({"transparency": 1} if name == "palette_clear.png" else {}))
        got_rgb = _constant_pixels(path, 3)
        tolerance = 2 if name.endswith(".jpg") else 0  # JPEG is lossy
        assert np.abs(got_rgb.astype(int) - np.array(expected)).max() <= tolerance, name
        assert abs(int(_constant_pixels(path, 1)[0]) - _luma(expected)) <= tolerance, name


def test_half_transparent_pixels_blend_towards_white() -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    out = np.array(to_channels(img, 3))
    assert np.abs(out.astype(int) - round(255 * 127 / 255)).max() <= 1


def test_resize_keeps_the_centre_square_of_a_landscape_and_a_portrait_image() -> None:
    blocks = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    landscape = Image.new("RGB", (60, 20))
    portrait = Image.new("RGB", (20, 60))
    for k, colour in enumerate(blocks):
        landscape.paste(colour, (20 * k, 0, 20 * k + 20, 20))
        portrait.paste(colour, (0, 20 * k, 20, 20 * k + 20))
    for img, inner in ((landscape, (slice(None), slice(2, 14))), (portrait, (slice(2, 14), slice(None)))):
        out = np.array(resize_center_crop(img, 16))
        assert out.shape == (16, 16, 3)
        assert (out[inner] == (0, 255, 0)).all(), "away from the antialiasing border only the middle block remains"
        assert out[..., 1].mean() > 230


def test_jpeg_draft_decoding_stays_close_to_a_full_decode(tmp_path: Path) -> None:
    y, x = np.mgrid[0:384, 0:512]
    smooth = np.stack([x / 2, y / 1.5, (x + y) / 3.5], axis=-1).astype(np.uint8)
    path = _save(Image.fromarray(smooth), tmp_path / "big.jpg", quality=95)
    fast, mode = decode_image(path, 32, 3)
    with Image.open(path) as img:
        full = np.array(resize_center_crop(img.convert("RGB"), 32))
    assert mode == "RGB"
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2.0


def test_read_images_skips_bad_files_and_reports_why(tmp_path: Path) -> None:
    good = [_save(Image.new("RGB", (10, 10), (k * 40, 0, 0)), tmp_path / f"good{k}.png") for k in range(3)]
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    paths = [good[0], truncated, good[1], noise, text, good[2]]
    images, kept, skipped, modes = read_images(paths, 8, 3)
    assert kept == [0, 2, 5]
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 8, 8)
    assert images[:, 0, 0, 0].tolist() == [0, 40, 80]
    assert [p for p, _ in skipped] == [truncated, noise, text]
    assert all(reason.startswith(("OSError", "UnidentifiedImageError")) for _, reason in skipped)
    assert "truncated" in skipped[0][1]
    assert modes == {"RGB": 3}


def test_read_images_stops_once_too_many_files_failed(tmp_path: Path) -> None:
    bad = []
    for k in range(5):
        bad.append(tmp_path / f"bad{k}.jpg")
        bad[-1].write_bytes(b"nope")
    _, kept, skipped, _ = read_images(bad, 8, 1, max_bad=1)
    assert kept == [] and len(skipped) == 2


def test_list_image_files_is_sorted_recursive_and_ignores_hidden(tmp_path: Path) -> None:
    for name in ["b.png", "a.png", "sub/c.png", ".DS_Store", ".hidden/d.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)] == ["a.png", "b.png", "sub/c.png"]


@pytest.mark.parametrize("channels", [1, 3])
def test_decode_returns_requested_channels_for_every_mode(tmp_path: Path, channels: int) -> None:
    for mode in ["RGB", "L", "RGBA", "CMYK", "P", "I;16", "I", "F", "LA", "1"]:
        img = Image.new(mode, (9, 13))
        ext = ".tif" if mode in ("CMYK", "I", "F") else ".png"
        pixels, source_mode = decode_image(_save(img, tmp_path / f"{mode.replace(';', '_')}{ext}"), 8, channels)
        assert pixels.shape == (8, 8, channels) and pixels.dtype == np.uint8
        assert source_mode == mode
