"""Distilled sets made elsewhere: an image folder or a tensor file -> a checked distilled-set `TensorBundle`.

Accepted inputs (docs/interfaces.md, "External distilled sets"):

- **folder**: `<root>/<class>/<image files>`. `<class>` is the class index (a decimal integer) or the class name
  of the test split (`class_names` in its meta); images must already have the test split's channels (greyscale
  modes count as 1, every other mode as 3) and size. Images are read as uint8, class by class in ascending class
  index, files in path order. A folder carries hard labels only.
- **safetensors** / **pt** (a `torch.save` of a dict of tensors, read with `weights_only=True`, never unpickled):
  `images` (N, C, H, W) uint8 0..255 or float in [0, 1]; `labels` (N,) integer class ids; optional `soft_labels`
  (N, K) class *probabilities* (rows sum to 1: the teacher's softmax, as `d3hr.generation.soft_labels` stores
  them; store `softmax(logits)`, not logits); optional `mean` / `std` (C,). Float images saved in normalised space
  ((x - mean) / std) need their `mean` / `std` (in the file or as parameters) and are mapped back to [0, 1].
  Rows keep the file's order.

The set is checked against the split it will be scored on: every class present, the same count per class (IPC),
the split's channels and image size, finite values in range. Every problem raises `ExternalSetError` naming the
file and what to change. `export_set` writes one of our sets in these formats (the round trip is exact for uint8
images and for tensor files).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError  # only the error torch.load(weights_only=True) raises; nothing is unpickled
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageMode
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from diffdistill.config import ConfigError, option
from diffdistill.data.atomic import temporary_sibling, write_atomic
from diffdistill.data.bundle import TensorBundle
from diffdistill.data.images import DECODE_ERRORS, describe_error, list_image_files, to_channels

FORMATS = ("auto", "folder", "safetensors", "pt")
TENSOR_KEYS = ("images", "labels", "soft_labels", "mean", "std")
SUFFIX_FORMATS = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt"}
# Float images may overshoot [0, 1] by rounding (e.g. after undoing a normalisation); the same slack as evaluation.
RANGE_TOLERANCE = 1e-4
SOFT_LABEL_SUM_TOLERANCE = 1e-3
_RESAVE = ("re-save it as a dict of tensors, torch.save({'images': images, 'labels': labels}, path) "
           "(plain torch tensors, optional 'soft_labels', 'mean', 'std'), or as .safetensors")


class ExternalSetError(ConfigError):
    """An external distilled set that cannot be scored; the message names the file and what to change."""


@dataclass
class ExternalSetConfig:
    """`evaluate.external.<name>`: one distilled set made elsewhere (read when the graph is built: `ipc` names it)."""

    path: str = option(help="image folder, .safetensors or .pt file; relative paths from the project root")
    ipc: int = option(min=1, help="images per class; part of the namespace external_<name>_ipc<ipc>")
    format: str = option("auto", choices=FORMATS, help="auto: a folder, or from the suffix")
    mean: list[float] | None = option(None, help="per-channel mean of float images stored normalised")
    std: list[float] | None = option(None, help="per-channel std of float images stored normalised")

    def check(self, path: str) -> None:
        if (self.mean is None) != (self.std is None):
            raise ConfigError(f"{path}.mean and {path}.std must be given together (the normalisation the images "
                              "were stored in), or both left out")
        if self.std is not None and (len(self.std) != len(self.mean or ()) or min(self.std) <= 0):
            raise ConfigError(f"{path}.std must be positive and as long as {path}.mean, got {self.std}")


def resolve_format(path: str | os.PathLike[str], format: str = "auto") -> str:
    """`folder`, `safetensors` or `pt`: `format` itself, or (auto) a directory or the file's suffix."""
    path = Path(path)
    if format not in FORMATS:
        raise ExternalSetError(f"{path}: format {format!r} is not one of {', '.join(FORMATS)}")
    if not path.exists():
        raise ExternalSetError(f"{path} does not exist; point the set's path at an image folder, a .safetensors "
                               "or a .pt file (relative paths start at the project root)")
    if format == "auto":
        if path.is_dir():
            return "folder"
        if path.suffix.lower() not in SUFFIX_FORMATS:
            raise ExternalSetError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; use a folder, "
                                   f"a {' / '.join(SUFFIX_FORMATS)} file, or set format to folder, safetensors or pt")
        return SUFFIX_FORMATS[path.suffix.lower()]
    if (format == "folder") != path.is_dir():
        kind = "a folder" if path.is_dir() else "a file"
        raise ExternalSetError(f"{path} is {kind} but format is {format!r}; set format to auto")
    return format


def load_external_set(path: str | os.PathLike[str], split: TensorBundle, *, format: str = "auto",
                      ipc: int | None = None, mean: list[float] | None = None,
                      std: list[float] | None = None) -> TensorBundle:
    """The set at `path` as a distilled-set bundle, checked against `split` (the real split it is scored on).

    Images stay uint8 when stored as uint8, else float32 in [0, 1]. `ipc` (None: inferred) must equal the count
    of every class. `mean` / `std` undo a normalisation of float images (else the file's `mean` / `std` do; both
    given and different is an error). Meta: `method` "external", `ipc`, `num_classes`, `class_names`, `source`
    of the split, and `external` = {`path` (resolved), `format`, `sha256` (of the file; of a folder, of the
    `sha256sum`-style manifest of its images), `num_files` (folders), `mean` / `std` when undone}.
    """
    fmt = resolve_format(path, format)
    path = Path(path)
    num_classes, shape = split.num_classes, tuple(split["images"].shape[1:])
    if fmt == "folder":
        if mean is not None:
            raise ExternalSetError(f"{path}: mean/std describe float tensors stored normalised; an image folder "
                                   "holds 8-bit images, so remove mean and std for this set")
        tensors, provenance = _read_folder(path, split)
    else:
        tensors, provenance = _read_tensor_file(path, fmt)
    normalisation = _normalisation(path, tensors, mean, std, shape[0])
    images = _checked_images(path, tensors["images"], shape, normalisation)
    labels = _checked_labels(path, tensors["labels"], images.shape[0], num_classes, split.class_names)
    set_ipc = _checked_counts(path, labels, num_classes, split.class_names, ipc)
    out = {"images": images, "labels": labels}
    if "soft_labels" in tensors:
        out["soft_labels"] = _checked_soft_labels(path, tensors["soft_labels"], images.shape[0], num_classes)
    if normalisation is not None:
        provenance["mean"], provenance["std"] = normalisation
    meta = {"method": "external", "ipc": set_ipc, "num_classes": num_classes,
            "class_names": split.class_names or [str(k) for k in range(num_classes)],
            "source": split.meta.get("source"),
            "external": {"path": str(path.resolve()), "format": fmt, **provenance}}
    return TensorBundle(out, meta)


# -- reading ------------------------------------------------------------------------------------


def _read_tensor_file(path: Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    payload = path.read_bytes()
    if fmt == "safetensors":
        try:
            tensors: Any = load_safetensors(payload)
        except Exception as exc:  # safetensors raises its own error types
            raise ExternalSetError(f"{path} is not a readable safetensors file ({describe_error(exc)}); write it "
                                   "with safetensors.torch.save_file({'images': ..., 'labels': ...}, path)") from exc
    else:
        tensors = _load_weights_only(path, payload)
    if not isinstance(tensors, dict):
        raise ExternalSetError(f"{path} holds a {type(tensors).__name__}, not a dict of tensors; {_RESAVE}")
    unknown = sorted(str(k) for k in tensors if k not in TENSOR_KEYS)
    if unknown:
        raise ExternalSetError(f"{path} has unknown entries {unknown}; it may hold only {', '.join(TENSOR_KEYS)} "
                               "(rename or drop the others)")
    not_tensors = sorted(k for k, v in tensors.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ExternalSetError(f"{path}: entries {not_tensors} are not tensors; {_RESAVE}")
    if "images" not in tensors or "labels" not in tensors:
        lacking = [k for k in ("images", "labels") if k not in tensors]
        raise ExternalSetError(f"{path} has no {' and no '.join(repr(k) for k in lacking)} tensor (it has "
                               f"{sorted(tensors) or 'none'}); store the images as 'images' (N, C, H, W) and the "
                               "class ids as 'labels' (N,)")
    return tensors, {"sha256": hashlib.sha256(payload).hexdigest()}


def _load_weights_only(path: Path, payload: bytes) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, no code from the file runs."""
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"it needs pickle to rebuild {found.group(1)}" if found else "it is not plain tensors"
        raise ExternalSetError(f"{path} cannot be read with torch.load(weights_only=True): {what}, and pickled "
                               f"code from elsewhere is never run here; {_RESAVE}") from exc
    except (RuntimeError, EOFError, ValueError) as exc:  # not a torch.save archive (truncated, another format)
        raise ExternalSetError(f"{path} is not a readable torch.save file ({describe_error(exc)}); "
                               f"{_RESAVE}") from exc


def _class_ids(root: Path, names: list[str], split: TensorBundle) -> list[int]:
    """Class index of each class folder: its name as a class index, or its position in the split's class names."""
    num_classes, class_names = split.num_classes, split.class_names
    ids = []
    for name in names:
        by_name = class_names.index(name) if name in class_names else None
        by_index = int(name) if name.isdecimal() and int(name) < num_classes else None
        if by_name is not None and by_index is not None and by_name != by_index:
            raise ExternalSetError(f"{root / name}: the folder name is class {by_index} as an index but class "
                                   f"{by_name} as a class name; rename the folders all by index (0..{num_classes - 1})"
                                   " or all by name")
        if by_name is None and by_index is None:
            raise ExternalSetError(f"{root / name} is not a class of the test split: name class folders by index "
                                   f"(0..{num_classes - 1}) or by class name ({_names_hint(class_names)})")
        ids.append(by_name if by_name is not None else by_index)
    twice = sorted({k for k in ids if ids.count(k) > 1})
    if twice:
        folders = [n for n, k in zip(names, ids, strict=True) if k in twice]
        raise ExternalSetError(f"{root}: folders {folders} name the same class; merge them into one folder per class")
    return ids


def _read_folder(root: Path, split: TensorBundle) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    stray = [p.name for p in entries if not p.is_dir()]
    if stray:
        raise ExternalSetError(f"{root} has files outside class folders ({stray[:3]}); put every image in "
                               f"{root}/<class index or class name>/")
    folders = [p.name for p in entries]
    if not folders:
        raise ExternalSetError(f"{root} has no class folders; lay the set out as {root}/<class>/<image files>")
    channels, height, width = split["images"].shape[1:]
    files: list[tuple[int, Path]] = []
    for class_id, name in sorted(zip(_class_ids(root, folders, split), folders, strict=True)):
        files += [(class_id, f) for f in list_image_files(root / name)]
    images = torch.empty((len(files), channels, height, width), dtype=torch.uint8)
    manifest = {}  # relative path -> a `sha256sum` line: the folder's digest is reproducible with sha256sum
    for row, (_, file) in enumerate(files):
        payload = file.read_bytes()
        relative = file.relative_to(root).as_posix()
        manifest[relative] = f"{hashlib.sha256(payload).hexdigest()}  {relative}\n"
        images[row] = _decoded(file, payload, channels, height, width)
    labels = torch.tensor([class_id for class_id, _ in files], dtype=torch.int64)
    digest = hashlib.sha256("".join(manifest[k] for k in sorted(manifest)).encode()).hexdigest()
    return {"images": images, "labels": labels}, {"sha256": digest, "num_files": len(files)}


def _decoded(file: Path, payload: bytes, channels: int, height: int, width: int) -> torch.Tensor:
    """One image file -> uint8 (C, H, W), refused unless it already has the split's channels and size."""
    try:
        with Image.open(io.BytesIO(payload)) as img:
            img.load()
            mode, size = img.mode, img.size
            pixels = np.array(to_channels(img, channels), dtype=np.uint8)
    except DECODE_ERRORS as exc:
        raise ExternalSetError(f"{file} is not a readable image ({describe_error(exc)}); replace or remove it "
                               "(every class needs the same number of images)") from exc
    file_channels = 1 if ImageMode.getmode(mode).basemode == "L" else 3
    if file_channels != channels:
        raise ExternalSetError(f"{file} has {file_channels} channel{'s' if file_channels > 1 else ''} (mode {mode}), "
                               f"the test split has {channels}; save the images as "
                               f"{'greyscale (mode L)' if channels == 1 else 'RGB'}")
    if size != (width, height):
        raise ExternalSetError(f"{file} is {size[0]}×{size[1]} px, the test split's images are {width}×{height}; "
                               f"resize the set to {width}×{height}")
    return torch.from_numpy(pixels.reshape(height, width, channels)).permute(2, 0, 1)


# -- checks ---------------------------------------------------------------------------------------


def _names_hint(class_names: list[str], limit: int = 10) -> str:
    shown = ", ".join(class_names[:limit])
    return shown + (", ..." if len(class_names) > limit else "") if class_names else "the split has none"


def _normalisation(path: Path, tensors: dict[str, torch.Tensor], mean: list[float] | None,
                   std: list[float] | None, channels: int) -> tuple[list[float], list[float]] | None:
    """(mean, std) the float images were stored in: the parameters, else the file's `mean` / `std`, else None."""
    if ("mean" in tensors) != ("std" in tensors):
        raise ExternalSetError(f"{path} has only one of 'mean' and 'std'; store both or neither")
    stored = None
    if "mean" in tensors:
        stored = ([float(v) for v in tensors["mean"].double().flatten()],
                  [float(v) for v in tensors["std"].double().flatten()])
    given = None if mean is None else ([float(v) for v in mean], [float(v) for v in std or []])
    if stored is not None and given is not None and not np.allclose(stored, given, rtol=1e-5, atol=1e-7):
        raise ExternalSetError(f"{path} stores mean/std {stored[0]}/{stored[1]} but the parameters give "
                               f"{given[0]}/{given[1]}; remove mean and std from the parameters (the file's are used)")
    chosen = given if given is not None else stored
    if chosen is not None and (len(chosen[0]) != channels or len(chosen[1]) != channels or min(chosen[1]) <= 0):
        raise ExternalSetError(f"{path}: mean/std {chosen[0]}/{chosen[1]} need {channels} entries (one per channel "
                               "of the test split) with std > 0")
    return chosen


def _checked_images(path: Path, images: torch.Tensor, shape: tuple[int, ...],
                    normalisation: tuple[list[float], list[float]] | None) -> torch.Tensor:
    channels, height, width = shape
    if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        raise ExternalSetError(f"{path}: images are {tuple(images.shape)}, channels last; store them as (N, C, H, W),"
                               " e.g. images.permute(0, 3, 1, 2).contiguous()")
    if images.ndim != 4:
        hint = " (greyscale without a channel axis: images.unsqueeze(1))" if images.ndim == 3 else ""
        raise ExternalSetError(f"{path}: images must be (N, C, H, W), got shape {tuple(images.shape)}{hint}")
    if images.shape[0] == 0:
        raise ExternalSetError(f"{path} holds no images; a distilled set needs at least one image per class")
    if images.shape[1] != channels:
        raise ExternalSetError(f"{path}: images have {images.shape[1]} channels, the test split's have {channels} "
                               f"(test images are {channels}×{height}×{width}); store the set with {channels} "
                               f"channel{'s' if channels > 1 else ''}")
    if tuple(images.shape[2:]) != (height, width):
        raise ExternalSetError(f"{path}: images are {images.shape[2]}×{images.shape[3]} px, the test split's are "
                               f"{height}×{width}; resize the set to {height}×{width}")
    if images.dtype == torch.uint8:
        if normalisation is not None:
            raise ExternalSetError(f"{path}: images are uint8 but mean/std are given; mean/std describe float "
                                   "images stored normalised, so remove them (uint8 is read as 0..255)")
        return images.contiguous()
    if not images.is_floating_point():
        raise ExternalSetError(f"{path}: images have dtype {str(images.dtype).replace('torch.', '')}; store uint8 "
                               "0..255 or float in [0, 1]")
    images = images.float()
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad_rows = (~finite).flatten(1).any(dim=1).nonzero().flatten()
        raise ExternalSetError(f"{path}: {int((~finite).sum())} image values are NaN or inf, in "
                               f"{len(bad_rows)} image{'s' if len(bad_rows) > 1 else ''} (first: row {int(bad_rows[0])}); the set diverged or was "
                               "saved wrongly — re-create or re-export it")
    if normalisation is not None:
        mean, std = (torch.tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) for v in normalisation)
        images = images * std + mean
    low, high = float(images.min()), float(images.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        undone = " after undoing mean/std" if normalisation is not None else ""
        raise ExternalSetError(f"{path}: float images span [{low:.4g}, {high:.4g}]{undone}, outside [0, 1]; "
                               f"{_range_hint(low, high, normalisation is not None)}")
    return images.clamp_(0.0, 1.0)


def _range_hint(low: float, high: float, normalised: bool) -> str:
    if normalised:
        return "check that mean/std are the normalisation the images were stored in"
    if low >= -1 - RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE:
        return "images in [-1, 1] (the diffusion range) need (x + 1) / 2 before saving"
    if low >= -RANGE_TOLERANCE and high <= 255 + RANGE_TOLERANCE:
        return "0..255 values must be stored as uint8 (or divided by 255)"
    return "images stored normalised need their mean and std (as 'mean' / 'std' tensors or parameters)"


def _class_label(k: int, class_names: list[str]) -> str:
    return f"{k} ({class_names[k]})" if k < len(class_names) and class_names[k] != str(k) else str(k)


def _checked_labels(path: Path, labels: torch.Tensor, count: int, num_classes: int,
                    class_names: list[str]) -> torch.Tensor:
    if labels.ndim == 2 and labels.shape == (count, num_classes) and labels.is_floating_point():
        raise ExternalSetError(f"{path}: 'labels' is (N, {num_classes}) floats; store the class ids as 'labels' (N,) "
                               "int64 and the probabilities as 'soft_labels'")
    if labels.ndim != 1 or labels.shape[0] != count:
        raise ExternalSetError(f"{path}: 'labels' must be ({count},), one class id per image, got "
                               f"{tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ExternalSetError(f"{path}: 'labels' have dtype {str(labels.dtype).replace('torch.', '')}; store "
                               "integer class ids (int64)")
    labels = labels.long()
    outside = sorted(set(labels[(labels < 0) | (labels >= num_classes)].tolist()))
    if outside:
        raise ExternalSetError(f"{path}: labels {outside[:10]} are not classes of the test split, which has "
                               f"{num_classes} classes (0..{num_classes - 1}: {_names_hint(class_names)}); "
                               "map the set's labels to the split's class ids")
    return labels


def _checked_counts(path: Path, labels: torch.Tensor, num_classes: int, class_names: list[str],
                    ipc: int | None) -> int:
    """Every class of the split present, the same count each; returns that count (the IPC)."""
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    missing = [_class_label(k, class_names) for k, n in enumerate(counts) if n == 0]
    if missing:
        raise ExternalSetError(f"{path} has no images of class{'es' if len(missing) > 1 else ''} "
                               f"{', '.join(missing)} of the test split's {num_classes} classes; add images of "
                               f"{'them' if len(missing) > 1 else 'it'} (the set is scored on every class)")
    if len(set(counts)) > 1:
        per_class = ", ".join(f"{_class_label(k, class_names)}: {n}" for k, n in enumerate(counts))
        raise ExternalSetError(f"{path} is unbalanced (images per class: {per_class}); a distilled set has the same "
                               f"number (IPC) in every class — keep {min(counts)} of each class, or add images")
    if ipc is not None and counts[0] != ipc:
        raise ExternalSetError(f"{path} has {counts[0]} images per class but the parameters say ipc: {ipc}; set ipc "
                               f"to {counts[0]}")
    return counts[0]


def _checked_soft_labels(path: Path, soft: torch.Tensor, count: int, num_classes: int) -> torch.Tensor:
    if soft.ndim != 2 or tuple(soft.shape) != (count, num_classes):
        raise ExternalSetError(f"{path}: 'soft_labels' must be ({count}, {num_classes}), one probability per image "
                               f"and class of the test split, got {tuple(soft.shape)}")
    if not soft.is_floating_point():
        raise ExternalSetError(f"{path}: 'soft_labels' have dtype {str(soft.dtype).replace('torch.', '')}; store "
                               "float class probabilities")
    soft = soft.float()
    if not bool(torch.isfinite(soft).all()):
        raise ExternalSetError(f"{path}: 'soft_labels' hold {int((~torch.isfinite(soft)).sum())} NaN or inf values; "
                               "re-create them")
    sums = soft.sum(dim=1)
    if float(soft.min()) < -1e-6 or float((sums - 1).abs().max()) > SOFT_LABEL_SUM_TOLERANCE:
        raise ExternalSetError(f"{path}: 'soft_labels' must be probabilities (>= 0, each row summing to 1), got "
                               f"values from {float(soft.min()):.4g} and row sums in [{float(sums.min()):.4g}, "
                               f"{float(sums.max()):.4g}]; for logits store softmax(logits, dim=1)")
    return soft.contiguous()


# -- export ---------------------------------------------------------------------------------------


def export_set(bundle: TensorBundle, path: str | os.PathLike[str], *, format: str = "auto") -> Path:
    """Write a distilled set where `load_external_set` reads it: a PNG folder, .safetensors or .pt (auto: suffix).

    A folder gets `<class index>/<position in class, 5 digits>.png`, 8-bit greyscale or RGB (float images are
    rounded to 0..255, soft labels are left out); the folder must not exist or be empty, and appears complete or
    not at all. Tensor files hold `images`, `labels` (int64) and `soft_labels` when present, the bundle's dtypes
    and row order unchanged.
    """
    path = Path(path)
    fmt = format if format != "auto" else SUFFIX_FORMATS.get(path.suffix.lower(), "folder")
    if fmt not in FORMATS[1:]:
        raise ValueError(f"export format {format!r} is not one of {', '.join(FORMATS)}")
    images, labels = bundle["images"], bundle["labels"].long()
    if fmt == "folder":
        _export_folder(images, labels, path)
        return path
    tensors = {"images": images.contiguous(), "labels": labels.contiguous()}
    if "soft_labels" in bundle:
        tensors["soft_labels"] = bundle["soft_labels"].contiguous()
    if fmt == "safetensors":
        payload = save_safetensors(tensors)
        return write_atomic(path, lambda tmp: tmp.write_bytes(payload))
    return write_atomic(path, lambda tmp: torch.save(tensors, tmp))


def _export_folder(images: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"a PNG folder holds greyscale or RGB images; got images of shape {tuple(images.shape)}")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path} already exists and is not an empty folder; export into a new folder")
    pixels = images if images.dtype == torch.uint8 else (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    tmp = temporary_sibling(path)
    try:
        for class_id in torch.unique(labels).tolist():
            folder = tmp / str(class_id)
            folder.mkdir(parents=True)
            for position, row in enumerate(torch.nonzero(labels == class_id).flatten().tolist()):
                array = pixels[row].permute(1, 2, 0).numpy()
                Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(folder / f"{position:05d}.png")
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
