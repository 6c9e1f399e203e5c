"""Raw data sources -> train / test `TensorBundle`s of uint8 images, plus a data report.

Sources (`SourceConfig.source`, the YAML key `preprocess.source`):
- `digits`: scikit-learn's bundled 8×8 digits (0..16); seeded stratified split.
- `fashion_mnist`: the four IDX files (gzip or plain) of Fashion-MNIST.
- `cifar10`: the official binary version (`cifar-10-batches-bin`: data_batch_1..5.bin,
  test_batch.bin; records of 1 label byte + 3072 pixel bytes, no pickle), or the JPEG-packed
  npz of ../shared/data/cifar10 (lossy: quality-75 JPEG); chosen by the files present.
- `image_folder`: `train/<class>/*` and `val/<class>/*` (or `test/`), classes in
  sorted folder order (the Imagenette / ImageWoof / torchvision ImageFolder layout).
- `imagenet_subset`: an ImageNet `train/<wnid>`, `val/<wnid>` tree read through one
  of the 10-class subsets of the LD3M / GLaD papers, labels in the subset's order.

Image size rule: the output is `image_size`×`image_size`; `image_size` must be a
positive multiple of `image_size_multiple` (8 by default: the latent autoencoders
downsample by 8), at most `max_image_size`, and one of `allowed_image_sizes` when that
is non-empty. `None` takes the source's default (DEFAULT_IMAGE_SIZE). Fixed-size
sources are resampled bilinearly (align_corners=False, antialiased when shrinking);
image folders have their shorter side resized and the centre square kept.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle
from diffdistill.data.images import DECODE_ERRORS, describe_error, list_image_files, read_images
from diffdistill.rng import named_seed

SOURCE_NAMES = ("digits", "fashion_mnist", "cifar10", "image_folder", "imagenet_subset")
DEFAULT_IMAGE_SIZE = {"digits": 16, "fashion_mnist": 32, "cifar10": 32, "image_folder": 128, "imagenet_subset": 128}
NATIVE_CHANNELS = {"digits": 1, "fashion_mnist": 1, "cifar10": 3, "image_folder": 3, "imagenet_subset": 3}
DEFAULT_ROOT = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}  # Debian package dataset-fashion-mnist
ROOT_HINT = {
    "fashion_mnist": "install the Debian package dataset-fashion-mnist, or set root to a folder of the IDX files",
    "cifar10": "set root to the binary batches folder (cifar-10-batches-bin) or to the JPEG-packed .npz "
               "(../shared/data/cifar10)",
}

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGITS_CLASSES = [str(d) for d in range(10)]


@dataclass
class SourceConfig:
    """`preprocess`: which raw source to read and how to size it; checked once, here (`__post_init__`)."""

    source: str
    root: str | None = None  # data folder (or the cifar10 .npz file); digits needs none
    image_size: int | None = None  # None: DEFAULT_IMAGE_SIZE[name]
    channels: int | None = None  # 1, 3, or None for the source's native channels
    seed: int = 0  # digits split and the max_per_class subsets
    test_size: int | float = 450  # digits: test images (int) or fraction (float); 450 -> 1347 / 450
    subset: str | None = None  # imagenet_subset: e.g. "imagenette", "imagenet-a"
    test_split: str | None = None  # image folders: "val" or "test"; None: whichever exists
    min_per_class: int = 1  # fewer train images in any class is an error
    min_test_per_class: int = 1
    max_per_class: int | None = None  # keep a seeded random subset per class (quick runs)
    max_test_per_class: int | None = None
    max_bad_fraction: float = 0.01  # of the files in one split folder that may be unreadable
    image_size_multiple: int = 8
    max_image_size: int = 512
    allowed_image_sizes: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.source not in SOURCE_NAMES:
            raise ValueError(f"preprocess.source={self.source!r} is not a known source; use one of {list(SOURCE_NAMES)}")
        if not isinstance(self.allowed_image_sizes, (list, tuple)) or any(
            isinstance(s, bool) or not isinstance(s, int) for s in self.allowed_image_sizes
        ):
            raise ValueError(
                f"preprocess.allowed_image_sizes={self.allowed_image_sizes!r} must be a list of ints (or empty)"
            )
        self.allowed_image_sizes = tuple(self.allowed_image_sizes)
        if self.root is not None and not isinstance(self.root, (str, Path)):
            raise ValueError(f"preprocess.root={self.root!r} must be a folder path (a string) or None")
        if isinstance(self.test_size, bool) or not isinstance(self.test_size, (int, float)):
            raise ValueError(f"preprocess.test_size={self.test_size!r} must be an int (images) or a float fraction")
        _check_int("image_size_multiple", self.image_size_multiple, minimum=1)
        _check_int("max_image_size", self.max_image_size, minimum=1)
        _check_image_size(self.resolved_image_size, self)
        if self.channels is not None and (type(self.channels) is not int or self.channels not in (1, 3)):
            raise ValueError(f"preprocess.channels={self.channels!r}: use 1 (grey), 3 (RGB) or None (native)")
        _check_int("seed", self.seed, minimum=0)
        _check_int("min_per_class", self.min_per_class, minimum=0)
        _check_int("min_test_per_class", self.min_test_per_class, minimum=0)
        for name in ("max_per_class", "max_test_per_class"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        if self.max_per_class is not None and self.max_per_class < self.min_per_class:
            raise ValueError(
                f"preprocess.max_per_class={self.max_per_class} is below min_per_class={self.min_per_class}; "
                "raise max_per_class or lower min_per_class"
            )
        if (
            isinstance(self.max_bad_fraction, bool)
            or not isinstance(self.max_bad_fraction, (int, float))
            or not 0.0 <= self.max_bad_fraction < 1.0
        ):
            raise ValueError(f"preprocess.max_bad_fraction={self.max_bad_fraction!r} must be in [0, 1)")
        if self.test_split not in (None, "val", "test"):
            raise ValueError(f"preprocess.test_split={self.test_split!r}: use 'val', 'test' or None (auto)")
        if self.source == "imagenet_subset":
            _subset_classes(self.subset)  # fail at configuration time on a bad subset name
        if self.root is None and self.source != "digits" and self.source not in DEFAULT_ROOT:
            raise ValueError(f"preprocess.root is required for source {self.source!r}: set it to the data folder")

    @property
    def resolved_image_size(self) -> int:
        return DEFAULT_IMAGE_SIZE[self.source] if self.image_size is None else self.image_size

    @property
    def resolved_channels(self) -> int:
        return NATIVE_CHANNELS[self.source] if self.channels is None else self.channels

    @property
    def resolved_root(self) -> Path | None:
        root = self.root if self.root is not None else DEFAULT_ROOT.get(self.source)
        return None if root is None else Path(root).expanduser()

    @classmethod
    def from_dict(cls, params: dict[str, Any], path: str = "preprocess") -> SourceConfig:
        """Build from the `preprocess` parameters (`diffdistill.config`: unknown keys and wrong types named)."""
        return build(cls, params, path)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"preprocess.{name}={value!r} must be an integer >= {minimum}")


def _check_image_size(size: Any, config: SourceConfig) -> None:
    rule = (
        f"a positive multiple of image_size_multiple={config.image_size_multiple} "
        f"and at most max_image_size={config.max_image_size}"
    )
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"preprocess.image_size={size!r} must be {rule}")
    if size % config.image_size_multiple != 0 or size > config.max_image_size:
        raise ValueError(
            f"preprocess.image_size={size} is not accepted: it must be {rule} "
            "(lower image_size_multiple to allow other sizes)"
        )
    if config.allowed_image_sizes and size not in config.allowed_image_sizes:
        raise ValueError(
            f"preprocess.image_size={size} is not in allowed_image_sizes={list(config.allowed_image_sizes)}"
        )


def _subset_classes(subset: str | None) -> list[tuple[str, int, str]]:
    from diffdistill.data.imagenet_subsets import SUBSETS  # only this source needs it

    if not isinstance(subset, str) or subset not in SUBSETS:
        raise ValueError(f"preprocess.subset={subset!r} is not a known ImageNet subset; use one of {sorted(SUBSETS)}")
    return list(SUBSETS[subset])


# ----------------------------------------------------------------------------- entry point


@dataclass
class RawSplits:
    """What each source reader returns: uint8 images at the final size, before checks."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    report: dict[str, Any] = field(default_factory=dict)  # source-specific extras (skipped files, modes, ...)
    meta: dict[str, Any] = field(default_factory=dict)  # extra bundle metadata (e.g. subset, wnids)


def load_source(config: SourceConfig) -> tuple[TensorBundle, TensorBundle, dict[str, Any]]:
    """Read the configured source -> (train bundle, test bundle, report).

    Bundles hold `images` uint8 (N, C, H, W) and `labels` int64 (N,), with meta
    class_names, source, seed, image_size, channels, split. The report holds the
    per-class counts of each split, skipped files with reasons, and the settings.
    """
    readers = {
        "digits": _read_digits,
        "fashion_mnist": _read_fashion_mnist,
        "cifar10": _read_cifar10,
        "image_folder": _read_image_folder,
        "imagenet_subset": _read_imagenet_subset,
    }
    check_root(config)
    raw = readers[config.source](config)
    counts = {
        "train": _class_counts(raw.train_labels, raw.class_names),
        "test": _class_counts(raw.test_labels, raw.class_names),
    }
    _check_class_minimum(counts["train"], config.min_per_class, "train", "min_per_class")
    _check_class_minimum(counts["test"], config.min_test_per_class, "test", "min_test_per_class")

    size, channels = config.resolved_image_size, config.resolved_channels
    meta = {
        "class_names": raw.class_names,
        "num_classes": len(raw.class_names),
        "source": config.source,
        "seed": config.seed,
        "image_size": size,
        "channels": channels,
        **raw.meta,
    }
    train = TensorBundle({"images": raw.train_images, "labels": raw.train_labels}, {**meta, "split": "train"})
    test = TensorBundle({"images": raw.test_images, "labels": raw.test_labels}, {**meta, "split": "test"})
    report = {
        "source": config.source,
        "root": None if config.source == "digits" else str(config.resolved_root),
        "seed": config.seed,
        "image_size": size,
        "channels": channels,
        "class_names": raw.class_names,
        "counts": counts,
        "totals": {"train": len(train), "test": len(test)},
        "skipped": [],
        **raw.report,
    }
    return train, test, report


def check_root(config: SourceConfig) -> None:
    """The source's data folder exists and is not empty (scikit-learn ships the digits: nothing to check).
    Also the command's up-front check (user_errors), so a missing dataset is one line before anything runs."""
    if config.source == "digits":
        return
    root, hint = config.resolved_root, ROOT_HINT.get(config.source, "set root to the data folder")
    if not root.exists():
        raise ValueError(f"data root {str(root)!r} (preprocess.root) does not exist; {hint}")
    if root.is_dir() and not any(root.iterdir()):
        raise ValueError(f"data root {str(root)!r} (preprocess.root) is empty; {hint}")


def _class_counts(labels: torch.Tensor, class_names: list[str]) -> dict[str, int]:
    per_class = torch.bincount(labels, minlength=len(class_names)).tolist()
    return dict(zip(class_names, per_class, strict=True))


def _check_class_minimum(counts: dict[str, int], minimum: int, split: str, parameter: str) -> None:
    short = {name: n for name, n in counts.items() if n < minimum}
    if short:
        raise ValueError(
            f"{split} split: class(es) {short} have fewer than {parameter}={minimum} images; "
            f"add images or lower {parameter}"
        )


# ----------------------------------------------------------------------------- shared helpers


def make_generator(seed: int, purpose: str) -> torch.Generator:
    """An independent stream per purpose, so capping the train split never moves the test draw."""
    return torch.Generator().manual_seed(named_seed(seed, purpose))


def cap_per_class(labels: torch.Tensor, cap: int | None, generator: torch.Generator) -> torch.Tensor:
    """Indices (ascending) of at most `cap` images per class, a seeded random choice."""
    if cap is None:
        return torch.arange(labels.numel())
    chosen = []
    for label in torch.unique(labels).tolist():  # ascending, so the draw order is fixed
        members = torch.nonzero(labels == label).flatten()
        if members.numel() > cap:
            members = members[torch.randperm(members.numel(), generator=generator)[:cap]]
        chosen.append(members)
    return torch.sort(torch.cat(chosen)).values


def resample_uint8(images: torch.Tensor, size: int, *, scale: float = 1.0, chunk: int = 4096) -> torch.Tensor:
    """(N, C, h, w) values × `scale` -> (N, C, size, size) uint8, bilinear (align_corners=False).

    Antialiased when shrinking; chunked so only `chunk` images are ever float.
    Same size and scale 1 on uint8 input returns the input unchanged (exact bytes).
    """
    height, width = images.shape[-2:]
    if (height, width) == (size, size) and scale == 1.0 and images.dtype == torch.uint8:
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    shrink = size < height or size < width
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].to(torch.float32) * scale
        if (height, width) != (size, size):
            block = F.interpolate(block, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out[start : start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 1, H, W) with Pillow's fixed-point ITU-R 601 luma (same bytes as convert('L'))."""
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
    luma = (images.to(torch.int32) * weights).sum(dim=1, keepdim=True) + 0x8000
    return (luma >> 16).to(torch.uint8)


def finish_tensor_images(images: torch.Tensor, config: SourceConfig, *, scale: float = 1.0) -> torch.Tensor:
    """Native uint8/float images -> configured channels and size (grey first, RGB expansion last: cheaper)."""
    channels = config.resolved_channels
    if channels == 1 and images.shape[1] == 3:
        images = rgb_to_grey(images)
    images = resample_uint8(images, config.resolved_image_size, scale=scale)
    if channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return images


def _finish_tensor_source(
    images_by_split: dict[str, torch.Tensor],
    labels_by_split: dict[str, torch.Tensor],
    class_names: list[str],
    config: SourceConfig,
    *,
    scale: float = 1.0,
    already_capped: bool = False,
) -> RawSplits:
    """Cap per class (unless the reader did, to decode less), then convert channels / size."""
    out = {}
    for split, cap in (("train", config.max_per_class), ("test", config.max_test_per_class)):
        cap = None if already_capped else cap
        keep = cap_per_class(labels_by_split[split], cap, make_generator(config.seed, f"cap-{split}"))
        images = images_by_split[split][keep] if cap is not None else images_by_split[split]
        out[split] = (finish_tensor_images(images, config, scale=scale), labels_by_split[split][keep].to(torch.int64))
    return RawSplits(*out["train"], *out["test"], class_names=class_names)


# ----------------------------------------------------------------------------- digits


def stratified_test_counts(class_sizes: list[int], test_total: int) -> list[int]:
    """Per-class test counts proportional to class size, rounded by largest remainder (ties: lower class)."""
    total = sum(class_sizes)
    quotas = [n * test_total / total for n in class_sizes]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda c: (-(quotas[c] - counts[c]), c))
    for c in by_remainder[: test_total - sum(counts)]:
        counts[c] += 1
    return counts


def stratified_split(
    labels: torch.Tensor, test_total: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices), both ascending; each class gives its proportional share to test."""
    classes = torch.unique(labels).tolist()
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    test_counts = stratified_test_counts([m.numel() for m in members], test_total)
    test = torch.cat(
        [m[torch.randperm(m.numel(), generator=generator)[:k]] for m, k in zip(members, test_counts, strict=True)]
    )
    is_test = torch.zeros(labels.numel(), dtype=torch.bool)
    is_test[test] = True
    return torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()


def _read_digits(config: SourceConfig) -> RawSplits:
    from sklearn.datasets import load_digits  # bundled CSV, no download

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    labels = torch.from_numpy(digits.target.astype(np.int64))
    total, num_classes = labels.numel(), 10
    test_size = config.test_size
    if isinstance(test_size, float) and not isinstance(test_size, bool):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"preprocess.test_size={test_size} as a fraction must be in (0, 1)")
        test_size = math.ceil(test_size * total)
    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, int)
        or not num_classes <= test_size <= total - num_classes
    ):
        raise ValueError(
            f"preprocess.test_size={config.test_size!r} must be an integer in [{num_classes}, {total - num_classes}] "
            "or a fraction in (0, 1), so every class keeps train and test images"
        )
    train_idx, test_idx = stratified_split(labels, test_size, make_generator(config.seed, "digits-split"))
    return _finish_tensor_source(
        {"train": images[train_idx], "test": images[test_idx]},
        {"train": labels[train_idx], "test": labels[test_idx]},
        DIGITS_CLASSES,
        config,
        scale=255.0 / 16.0,
    )


# ----------------------------------------------------------------------------- fashion_mnist (IDX)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzip or plain): magic 00 00 <dtype> <ndim>, big-endian uint32 dims, data."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"IDX file {str(path)!r} cannot be read ({describe_error(exc)}); replace the file") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"IDX file {str(path)!r} has a bad magic number {raw[:4].hex()!r}; expected 0000<type><ndim>")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"IDX file {str(path)!r} is too short for its {ndim} dimension(s)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"IDX file {str(path)!r}: dims {list(dims)} need {expected} data bytes but it holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise ValueError(f"fashion_mnist root {str(root)!r} lacks {stem}(.gz); it needs the four Fashion-MNIST IDX files")


def _read_fashion_mnist(config: SourceConfig) -> RawSplits:
    root = config.resolved_root
    images, labels = {}, {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        image_path, label_path = (
            _find_idx(root, f"{prefix}-images-idx3-ubyte"),
            _find_idx(root, f"{prefix}-labels-idx1-ubyte"),
        )
        split_images, split_labels = read_idx(image_path), read_idx(label_path)
        if split_images.dtype != np.uint8 or split_images.ndim != 3:
            raise ValueError(
                f"IDX file {str(image_path)!r} must hold uint8 images (N, H, W), got {split_images.dtype} {split_images.shape}"
            )
        if split_labels.dtype != np.uint8 or split_labels.ndim != 1 or len(split_labels) != len(split_images):
            raise ValueError(
                f"IDX file {str(label_path)!r} must hold {len(split_images)} uint8 labels, got {split_labels.dtype} {split_labels.shape}"
            )
        if split_labels.size and split_labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(
                f"IDX file {str(label_path)!r} has label {int(split_labels.max())}; Fashion-MNIST labels are 0..9"
            )
        images[split] = torch.from_numpy(split_images.copy()).unsqueeze(1)
        labels[split] = torch.from_numpy(split_labels.astype(np.int64))
    return _finish_tensor_source(images, labels, FASHION_MNIST_CLASSES, config)


# ----------------------------------------------------------------------------- cifar10


CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then the R, G and B planes of a 32x32 image


def _read_cifar_binary_split(root: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Records of the official binary version, read as one uint8 array per batch file."""
    images, labels = [], []
    for name in names:
        path = root / name
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR_RECORD:
            raise ValueError(f"CIFAR-10 batch {str(path)!r} is {raw.size} bytes, not a whole number of "
                             f"{CIFAR_RECORD}-byte records: the file is truncated or not a binary-version batch")
        records = raw.reshape(-1, CIFAR_RECORD)
        images.append(torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(records[:, 0].astype(np.int64)))
    all_labels = torch.cat(labels)
    if int(all_labels.max()) > 9:
        raise ValueError(f"CIFAR-10 batches in {str(root)!r} have labels outside 0..9")
    return torch.cat(images), all_labels


def _read_cifar_class_names(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if len(names) != 10:
        raise ValueError(f"{str(path)!r} names {len(names)} classes; CIFAR-10 has 10 (one name per line)")
    return names


def _read_cifar_npz(path: Path, config: SourceConfig) -> RawSplits:
    with np.load(path, allow_pickle=False) as archive:
        needed = [f"{key}_{split}" for split in ("train", "test") for key in ("jpeg", "offsets", "y")]
        missing = [key for key in needed if key not in archive.files]
        if missing:
            raise ValueError(
                f"CIFAR-10 npz {str(path)!r} lacks {missing}; expected the JPEG-packed layout of shared/data"
            )
        arrays = {key: archive[key] for key in needed}
        class_names = [str(c) for c in archive["class_names"]] if "class_names" in archive.files else CIFAR10_CLASSES
    images, labels = {}, {}
    for split, cap in (("train", config.max_per_class), ("test", config.max_test_per_class)):
        jpeg, offsets, split_labels = arrays[f"jpeg_{split}"], arrays[f"offsets_{split}"], arrays[f"y_{split}"]
        if len(offsets) != len(split_labels) + 1 or offsets[-1] != len(jpeg) or np.any(np.diff(offsets) <= 0):
            raise ValueError(f"CIFAR-10 npz {str(path)!r}: offsets_{split} do not partition jpeg_{split}")
        split_labels = torch.from_numpy(split_labels.astype(np.int64))
        keep = cap_per_class(split_labels, cap, make_generator(config.seed, f"cap-{split}"))
        images[split] = decode_jpeg_slices(jpeg, offsets, keep.tolist(), path, split)
        labels[split] = split_labels[keep]
    raw = _finish_tensor_source(images, labels, class_names, config, already_capped=True)
    raw.report["cifar10_format"] = "jpeg_npz (lossy: JPEG quality 75, 4:2:0)"
    return raw


def decode_jpeg_slices(
    jpeg: np.ndarray, offsets: np.ndarray, indices: list[int], path: Path, split: str
) -> torch.Tensor:
    """Image i = jpeg[offsets[i]:offsets[i+1]] -> (len(indices), 3, 32, 32) uint8, decoded one at a time."""
    out = torch.empty((len(indices), 3, 32, 32), dtype=torch.uint8)
    for row, i in enumerate(indices):
        try:
            with Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())) as img:
                pixels = np.array(img.convert("RGB"))  # a writable copy for torch
        except DECODE_ERRORS as exc:
            raise ValueError(
                f"CIFAR-10 npz {str(path)!r}: {split} image {i} cannot be decoded ({describe_error(exc)})"
            ) from exc
        if pixels.shape != (32, 32, 3):
            raise ValueError(f"CIFAR-10 npz {str(path)!r}: {split} image {i} is {pixels.shape}, expected (32, 32, 3)")
        out[row] = torch.from_numpy(pixels).permute(2, 0, 1)
    return out


def _read_cifar10(config: SourceConfig) -> RawSplits:
    root = config.resolved_root
    train_names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    if root.is_file() and root.suffix == ".npz":
        return _read_cifar_npz(root, config)
    if (root / "data_batch_1.bin").is_file():
        missing = [n for n in [*train_names, "test_batch.bin"] if not (root / n).is_file()]
        if missing:
            raise ValueError(f"CIFAR-10 folder {str(root)!r} lacks {missing}; it needs data_batch_1..5.bin and "
                             "test_batch.bin (the binary version, cifar-10-batches-bin)")
        meta = root / "batches.meta.txt"
        class_names = _read_cifar_class_names(meta) if meta.is_file() else CIFAR10_CLASSES
        train_images, train_labels = _read_cifar_binary_split(root, train_names)
        test_images, test_labels = _read_cifar_binary_split(root, ["test_batch.bin"])
        raw = _finish_tensor_source(
            {"train": train_images, "test": test_images},
            {"train": train_labels, "test": test_labels},
            class_names,
            config,
        )
        raw.report["cifar10_format"] = "binary"
        return raw
    npz_files = sorted(root.glob("*.npz"))
    if len(npz_files) == 1:
        return _read_cifar_npz(npz_files[0], config)
    raise ValueError(
        f"CIFAR-10 root {str(root)!r} holds neither the binary batches (data_batch_1..5.bin, test_batch.bin) nor "
        f"exactly one JPEG-packed .npz (found {[p.name for p in npz_files]}); point root at one of them (the python "
        "pickle version is not read: download the binary version of the same data)"
    )


# ----------------------------------------------------------------------------- image folders


def _split_dirs(root: Path, test_split: str | None) -> tuple[Path, Path]:
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise ValueError(
            f"image folder root {str(root)!r} has no train/ folder; expected train/<class>/ and val/<class>/"
        )
    if test_split is not None:
        test_dir = root / test_split
        if not test_dir.is_dir():
            raise ValueError(f"image folder root {str(root)!r} has no {test_split}/ folder (preprocess.test_split)")
        return train_dir, test_dir
    present = [name for name in ("val", "test") if (root / name).is_dir()]
    if len(present) != 1:
        raise ValueError(
            f"image folder root {str(root)!r} has {present or 'neither val/ nor test/'} as test split; "
            "it needs exactly one, or set preprocess.test_split to 'val' or 'test'"
        )
    return train_dir, root / present[0]


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_folder_split(
    split_dir: Path, class_dirs: list[str], config: SourceConfig, split: str, cap: int | None
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, str]], dict[str, int]]:
    """One split folder -> (images, labels, skipped files, source-mode counts); label = position in class_dirs."""
    files: list[Path] = []
    file_labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        class_files = list_image_files(split_dir / class_dir)
        files.extend(class_files)
        file_labels.extend([label] * len(class_files))
    if not files:
        raise ValueError(f"split folder {str(split_dir)!r} holds no files under {class_dirs}; it is empty")
    keep = cap_per_class(torch.tensor(file_labels), cap, make_generator(config.seed, f"cap-{split}")).tolist()
    files, file_labels = [files[i] for i in keep], [file_labels[i] for i in keep]
    max_bad = math.floor(config.max_bad_fraction * len(files))
    images, kept, skipped, modes = read_images(
        files, config.resolved_image_size, config.resolved_channels, max_bad=max_bad
    )
    skipped_report = [{"split": split, "path": str(path), "reason": reason} for path, reason in skipped]
    if len(skipped) > max_bad:
        examples = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped_report[:3])
        raise ValueError(
            f"split folder {str(split_dir)!r}: at least {len(skipped)} of its {len(files)} files "
            f"({len(skipped) / len(files):.2%}) are unreadable, more than max_bad_fraction={config.max_bad_fraction} "
            f"allows, e.g. {examples}; remove or repair them, or raise preprocess.max_bad_fraction"
        )
    labels = torch.tensor([file_labels[i] for i in kept], dtype=torch.int64)
    return images, labels, skipped_report, modes


def _read_folders(
    config: SourceConfig, class_dirs: list[str], class_names: list[str], train_dir: Path, test_dir: Path
) -> RawSplits:
    for split_dir in (train_dir, test_dir):
        missing = [c for c in class_dirs if not (split_dir / c).is_dir()]
        if missing:
            raise ValueError(
                f"split folder {str(split_dir)!r} lacks class folder(s) {missing}; "
                "both splits must be laid out as <split>/<class>/<image files>"
            )
    train = read_folder_split(train_dir, class_dirs, config, "train", config.max_per_class)
    test = read_folder_split(test_dir, class_dirs, config, "test", config.max_test_per_class)
    return RawSplits(
        train[0],
        train[1],
        test[0],
        test[1],
        class_names=class_names,
        report={
            "skipped": train[2] + test[2],
            "num_skipped": {"train": len(train[2]), "test": len(test[2])},
            "source_modes": {"train": train[3], "test": test[3]},
            "splits": {"train": train_dir.name, "test": test_dir.name},
        },
    )


def _read_image_folder(config: SourceConfig) -> RawSplits:
    train_dir, test_dir = _split_dirs(config.resolved_root, config.test_split)
    class_dirs = _class_dirs(train_dir)
    if len(class_dirs) < 2:
        raise ValueError(f"image folder {str(train_dir)!r} has {len(class_dirs)} class folder(s); it needs at least 2")
    extra = sorted(set(_class_dirs(test_dir)) - set(class_dirs))
    if extra:
        raise ValueError(f"split folder {str(test_dir)!r} has class folder(s) {extra} that train/ lacks")
    return _read_folders(config, class_dirs, class_dirs, train_dir, test_dir)


def _read_imagenet_subset(config: SourceConfig) -> RawSplits:
    classes = _subset_classes(config.subset)
    train_dir, test_dir = _split_dirs(config.resolved_root, config.test_split)
    wnids = [wnid for wnid, _, _ in classes]
    raw = _read_folders(config, wnids, [name for _, _, name in classes], train_dir, test_dir)
    raw.meta = {"subset": config.subset, "wnids": wnids, "imagenet_indices": [int(index) for _, index, _ in classes]}
    raw.report["subset"] = config.subset
    raw.report["wnids"] = wnids
    return raw
