"""Bad data on disk: random bytes named .png, truncated images and IDX files, truncated safetensors, edited
sidecars, sidecars of other versions, broken JSON / PNG artifacts and broken prior folders.

Every case must end in a clear error naming the file (tests/badinput/clarity.py), and nothing already saved
may change: other versions stay byte-identical and no partial version becomes visible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kedro.io.core import Version
from PIL import Image

from diffdistill.data.bundle import TensorBundle
from diffdistill.data.sources import SourceConfig, load_source
from diffdistill.datasets import AtomicJSONDataset, DiffusersFolderDataset, ImageGridDataset, TensorBundleDataset
from diffdistill.prior import LatentPrior
from tests.badinput.clarity import assert_clear_error, snapshot
from tests.badinput.strategies import bounded

FILES = bounded(25)


def _fresh(tmp_path: Path, name: str) -> Path:
    """A new empty folder per hypothesis example (tmp_path is shared by all examples of one test)."""
    folder = tmp_path / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


# ----------------------------------------------------------------------------- image folders


def _png_bytes(seed: int, size: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(seed: int, size: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def _image_tree(root: Path, per_class: int = 3) -> None:
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{i}.png").write_bytes(_png_bytes(hash((split, label, i)) % 1000))


@FILES
@given(payload=st.one_of(st.binary(max_size=300), st.binary(min_size=1, max_size=40).map(lambda b: b"\x89PNG" + b)),
       split=st.sampled_from(["train", "val"]))
def test_random_bytes_named_png(tmp_path: Path, payload: bytes, split: str) -> None:
    root = _fresh(tmp_path, "tree")
    _image_tree(root)
    bad = root / split / "dog" / "broken.png"
    bad.write_bytes(payload)
    before = snapshot(root)
    config = SourceConfig.from_dict({"source": "image_folder", "root": str(root), "image_size": 8,
                                     "max_bad_fraction": 0.0})
    assert_clear_error(lambda: load_source(config), str(bad), "max_bad_fraction",
                       case="image_folder/random bytes named .png")
    assert snapshot(root) == before  # reading never touches the data
    # With tolerance the file is skipped and reported, never silently decoded into an image
    tolerant = SourceConfig.from_dict({"source": "image_folder", "root": str(root), "image_size": 8,
                                       "max_bad_fraction": 0.5})
    train, test, report = load_source(tolerant)
    assert [s["path"] for s in report["skipped"]] == [str(bad)]
    assert len(train) + len(test) == 12


@FILES
@given(fraction=st.floats(0.0, 0.98), kind=st.sampled_from(["png", "jpeg"]))
def test_truncated_image(tmp_path: Path, fraction: float, kind: str) -> None:
    root = _fresh(tmp_path, "tree")
    _image_tree(root)
    data = _png_bytes(7) if kind == "png" else _jpeg_bytes(7)
    bad = root / "train" / "cat" / f"truncated.{kind}"
    bad.write_bytes(data[: int(len(data) * fraction)])
    config = SourceConfig.from_dict({"source": "image_folder", "root": str(root), "image_size": 8,
                                     "max_bad_fraction": 0.0})
    try:
        train, _, _ = load_source(config)
    except Exception:  # noqa: BLE001 - judged below
        assert_clear_error(lambda: load_source(config), str(bad), case=f"image_folder/truncated {kind}")
        return
    # Only the trailer was cut (e.g. PNG's IEND): every pixel is there, so reading it is right, not damage.
    bad.write_bytes(data)
    assert torch.equal(load_source(config)[0]["images"], train["images"])


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fashion_root(root: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28))
        labels = np.arange(n) % 10
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))


@FILES
@given(which=st.sampled_from(["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"]), fraction=st.floats(0, 0.99),
       flip=st.booleans())
def test_truncated_or_corrupt_idx_file(tmp_path: Path, which: str, fraction: float, flip: bool) -> None:
    root = _fresh(tmp_path, "fashion")
    _fashion_root(root)
    path = root / which
    data = path.read_bytes()
    if flip:  # same length, garbage header
        data = bytes([data[0] ^ 0xFF]) + data[1:]
    else:
        data = data[: int(len(data) * fraction)]
    path.write_bytes(data)
    config = SourceConfig.from_dict({"source": "fashion_mnist", "root": str(root), "image_size": 32})
    assert_clear_error(lambda: load_source(config), str(path), case="fashion_mnist/truncated or corrupt IDX")


# ----------------------------------------------------------------------------- tensor bundles


def _bundle(seed: int, size: int = 4) -> TensorBundle:
    g = torch.Generator().manual_seed(seed)
    return TensorBundle({"images": torch.randint(0, 256, (6, 1, size, size), generator=g, dtype=torch.uint8),
                         "labels": torch.arange(6) % 2}, {"class_names": ["a", "b"], "seed": seed})


def _two_versions(root: Path) -> tuple[str, TensorBundleDataset, Path, Path]:
    """Two saved versions of one versioned bundle; returns (filepath, dataset, v1 file, v2 file)."""
    filepath = str(root / "train_set.safetensors")
    for i, version in enumerate(("2024-01-01T00.00.00.000Z", "2024-01-02T00.00.00.000Z")):
        TensorBundleDataset(filepath=filepath, version=Version(None, version)).save(_bundle(i, size=4 + 4 * i))
    files = sorted(Path(filepath).glob("*/train_set.safetensors"))
    return filepath, TensorBundleDataset(filepath=filepath, version=Version(None, None)), files[0], files[1]


def _pinned_v1(filepath: str) -> TensorBundleDataset:
    return TensorBundleDataset(filepath=filepath, version=Version("2024-01-01T00.00.00.000Z", None))


def _corrupt_latest(kind: str, v1: Path, v2: Path, draw) -> None:
    """Damage version 2 in one of the ways a disk, an editor or a copy between versions does."""
    sidecar = Path(f"{v2}.json")
    spec = json.loads(sidecar.read_text())
    if kind == "truncated tensor file":
        data = v2.read_bytes()
        v2.write_bytes(data[: draw(st.integers(0, len(data) - 1))])
    elif kind == "flipped byte":
        data = bytearray(v2.read_bytes())
        data[draw(st.integers(0, len(data) - 1))] ^= 0xFF
        v2.write_bytes(bytes(data))
    elif kind == "sidecar sha edited":
        spec["sha256"] = draw(st.text("0123456789abcdef", min_size=1, max_size=64))
        sidecar.write_text(json.dumps(spec))
    elif kind == "sidecar of another version":
        shutil.copy(f"{v1}.json", sidecar)
    elif kind == "tensor file of another version":
        shutil.copy(v1, v2)
    elif kind == "sidecar shape edited":
        spec["tensors"]["images"]["shape"][draw(st.integers(0, 3))] += draw(st.integers(1, 5))
        sidecar.write_text(json.dumps(spec))
    elif kind == "sidecar truncated":
        text = sidecar.read_text()
        sidecar.write_text(text[: draw(st.integers(0, len(text) - 2))])
    elif kind == "sidecar deleted":
        sidecar.unlink()
    elif kind == "sidecar not an object":
        sidecar.write_text(json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=4),
                                                     st.integers(), st.none()))))
    elif kind == "sidecar meta not an object":
        spec["meta"] = draw(st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=4), st.integers()))
        sidecar.write_text(json.dumps(spec))
    elif kind == "sidecar tensor spec malformed":
        spec["tensors"]["images"] = draw(st.one_of(st.just({}), st.text(max_size=3), st.just({"shape": "big"}),
                                                   st.integers()))
        sidecar.write_text(json.dumps(spec))
    elif kind == "random bytes, matching sha":
        data = draw(st.binary(max_size=200))
        v2.write_bytes(data)
        spec["sha256"] = hashlib.sha256(data).hexdigest()
        sidecar.write_text(json.dumps(spec))
    else:
        raise AssertionError(kind)


BUNDLE_DAMAGE = ["truncated tensor file", "flipped byte", "sidecar sha edited", "sidecar of another version",
                 "tensor file of another version", "sidecar shape edited", "sidecar truncated", "sidecar deleted",
                 "sidecar not an object", "sidecar meta not an object", "sidecar tensor spec malformed",
                 "random bytes, matching sha"]


@pytest.mark.parametrize("kind", BUNDLE_DAMAGE)
@bounded(6)
@given(data=st.data())
def test_damaged_tensor_bundle(tmp_path: Path, kind: str, data) -> None:
    root = _fresh(tmp_path, "bundles")
    filepath, latest, v1, v2 = _two_versions(root)
    v1_bytes = snapshot(v1.parent)
    _corrupt_latest(kind, v1, v2, data.draw)
    damaged = snapshot(v2.parent)
    assert_clear_error(latest.load, str(v2), case=f"TensorBundleDataset.load/{kind}")
    # the failed load changed nothing; the earlier version still loads, byte-identical
    assert snapshot(v1.parent) == v1_bytes and snapshot(v2.parent) == damaged
    assert torch.equal(_pinned_v1(filepath).load()["images"], _bundle(0)["images"])


@FILES
@given(data=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.just({"images": torch.zeros(2)}),
                      st.builds(lambda: TensorBundle({"images": torch.zeros(2, 3)[:, 0]}))))
def test_failed_save_leaves_saved_versions_alone(tmp_path: Path, data) -> None:
    root = _fresh(tmp_path, "save")
    filepath, _, v1, v2 = _two_versions(root)
    before = snapshot(root)
    dataset = TensorBundleDataset(filepath=filepath, version=Version(None, "2024-01-03T00.00.00.000Z"))
    if isinstance(data, TensorBundle):  # a strided view saves fine (it is made contiguous): not an error
        dataset.save(data)
        assert snapshot(root) != before and all(snapshot(root)[k] == v for k, v in before.items())
        return
    expected = "None" if data is None else "TensorBundle"  # kedro itself refuses to save None
    assert_clear_error(lambda: dataset.save(data), expected, case="TensorBundleDataset.save/not a bundle")
    assert snapshot(root) == before


def test_save_of_tensors_sharing_memory(tmp_path: Path) -> None:
    """Two names for one storage (a node returning `x` twice): saved as two tensors or refused clearly."""
    filepath, _, v1, _ = _two_versions(tmp_path)
    before = snapshot(v1.parent)
    x = torch.zeros(4, 3)
    bundle = TensorBundle({"images": x, "images_again": x, "row": x[0]})
    dataset = TensorBundleDataset(filepath=filepath, version=Version(None, "2024-01-03T00.00.00.000Z"))
    try:
        dataset.save(bundle)
    except Exception:  # noqa: BLE001 - judged by the definition below (the failed save wrote nothing)
        assert_clear_error(lambda: dataset.save(bundle), "shar", case="TensorBundleDataset.save/shared memory")
    else:
        loaded = TensorBundleDataset(filepath=filepath, version=Version("2024-01-03T00.00.00.000Z", None)).load()
        assert torch.equal(loaded["row"], x[0]) and torch.equal(loaded["images_again"], x)
    assert snapshot(v1.parent) == before


# ----------------------------------------------------------------------------- JSON and PNG artifacts


@FILES
@given(cut=st.integers(0, 30), garbage=st.binary(max_size=20))
def test_damaged_json_artifact(tmp_path: Path, cut: int, garbage: bytes) -> None:
    root = _fresh(tmp_path, "json")
    filepath = str(root / "report.json")
    AtomicJSONDataset(filepath=filepath, version=Version(None, "2024-01-01T00.00.00.000Z")).save(
        {"a": 1, "b": [1, 2, 3], "c": "text"})
    (path,) = Path(filepath).glob("*/report.json")
    text = path.read_bytes()
    payload = text[: min(cut, len(text) - 1)] + garbage
    try:
        json.loads(payload)
        return  # still valid JSON (e.g. a complete prefix): not damage
    except ValueError:
        pass
    path.write_bytes(payload)
    dataset = AtomicJSONDataset(filepath=filepath, version=Version(None, None))
    assert_clear_error(dataset.load, str(path), case="AtomicJSONDataset.load/truncated or garbage")


@FILES
@given(payload=st.one_of(st.binary(max_size=200), st.integers(1, 90).map(lambda k: _png_bytes(1)[:k])))
def test_damaged_png_artifact(tmp_path: Path, payload: bytes) -> None:
    root = _fresh(tmp_path, "png")
    filepath = str(root / "grid.png")
    ImageGridDataset(filepath=filepath, version=Version(None, "2024-01-01T00.00.00.000Z")).save(
        torch.zeros(3, 8, 8, dtype=torch.uint8))
    (path,) = Path(filepath).glob("*/grid.png")
    path.write_bytes(payload)
    dataset = ImageGridDataset(filepath=filepath, version=Version(None, None))
    assert_clear_error(dataset.load, str(path), case="ImageGridDataset.load/random bytes or truncated")


# ----------------------------------------------------------------------------- prior folders


@pytest.fixture(scope="module")
def saved_prior(tmp_path_factory) -> Path:
    from tests.prior.tiny import build_prior

    folder = tmp_path_factory.mktemp("prior") / "prior"
    build_prior("kl", "unet_identity").save_pretrained(folder)
    return folder


def _break_prior(folder: Path, kind: str, draw) -> str:
    """Damage a saved prior folder; returns the file / name the error must mention."""
    if kind == "adapter config truncated":
        path = folder / "adapter_config.json"
        text = path.read_text()
        path.write_text(text[: draw(st.integers(0, len(text) - 2))])
        return str(path)
    if kind == "adapter config not an object":
        path = folder / "adapter_config.json"
        path.write_text(json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.none()))))
        return str(path)
    if kind == "adapter config lacks class_ids":
        path = folder / "adapter_config.json"
        spec = json.loads(path.read_text())
        del spec["class_ids"]
        path.write_text(json.dumps(spec))
        return "class_ids"
    if kind == "label table truncated":
        path = folder / "label_table.safetensors"
        data = path.read_bytes()
        path.write_bytes(data[: draw(st.integers(0, len(data) - 1))])
        return str(path)
    if kind == "label table of another prior":
        from safetensors.torch import save_file

        path = folder / "label_table.safetensors"
        save_file({"weight": torch.zeros(draw(st.integers(1, 6)), draw(st.integers(1, 40)))}, path)
        return "label_table"
    if kind == "vae weights truncated":
        (path,) = (folder / "vae").glob("*.safetensors")
        data = path.read_bytes()
        path.write_bytes(data[: draw(st.integers(0, len(data) - 1))])
        return str(folder / "vae")
    if kind == "denoiser config garbage":
        path = folder / "denoiser" / "config.json"
        path.write_text(draw(st.sampled_from(["", "{", "[]", "not json"])))
        return str(folder / "denoiser")
    if kind == "scheduler folder missing":
        shutil.rmtree(folder / "scheduler")
        return "scheduler"
    if kind == "denoiser of another prior":
        from tests.prior.tiny import tiny_unet

        shutil.rmtree(folder / "denoiser")
        tiny_unet("identity", in_channels=3).save_pretrained(folder / "denoiser")
        return "channel"
    raise AssertionError(kind)


PRIOR_DAMAGE = ["adapter config truncated", "adapter config not an object", "adapter config lacks class_ids",
                "label table truncated", "label table of another prior", "vae weights truncated",
                "denoiser config garbage", "scheduler folder missing", "denoiser of another prior"]


@pytest.mark.parametrize("kind", PRIOR_DAMAGE)
@bounded(4)
@given(data=st.data())
def test_broken_prior_folder(tmp_path: Path, saved_prior: Path, kind: str, data) -> None:
    folder = _fresh(tmp_path, "copy") / "prior"
    shutil.copytree(saved_prior, folder)
    name = _break_prior(folder, kind, data.draw)
    before = snapshot(folder)
    assert_clear_error(lambda: LatentPrior.from_pretrained(folder), name, case=f"LatentPrior.from_pretrained/{kind}")
    assert snapshot(folder) == before


def test_missing_prior_folder_through_the_dataset(tmp_path: Path) -> None:
    dataset = DiffusersFolderDataset(filepath=str(tmp_path / "prior_model"), version=Version(None, None))
    assert_clear_error(dataset.load, "prior_model", case="DiffusersFolderDataset.load/no version")


class _FailingModel:
    """Writes part of a folder, then fails (a full disk, a killed process)."""

    def save_pretrained(self, directory: str) -> None:
        Path(directory).mkdir(parents=True)
        (Path(directory) / "half.bin").write_bytes(b"\0" * 10)
        raise OSError("No space left on device")


def test_failed_prior_save_leaves_no_partial_version(tmp_path: Path, saved_prior: Path) -> None:
    filepath = str(tmp_path / "prior_model")
    first = DiffusersFolderDataset(filepath=filepath, version=Version(None, "2024-01-01T00.00.00.000Z"))
    first.save(LatentPrior.from_pretrained(saved_prior))
    before = snapshot(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - the disk error itself, whatever kedro wraps it in
        DiffusersFolderDataset(filepath=filepath, version=Version(None, "2024-01-02T00.00.00.000Z")).save(
            _FailingModel())
    assert snapshot(tmp_path) == before  # no partial folder, the earlier version untouched
    assert DiffusersFolderDataset(filepath=filepath, version=Version(None, None)).load().num_classes == 3
