import json
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError, Version

from diffdistill.data.bundle import TensorBundle
from diffdistill.datasets import (
    AtomicJSONDataset,
    DiffusersFolderDataset,
    ImageBundleDataset,
    ImageGridDataset,
    TensorBundleDataset,
)


def make_bundle() -> TensorBundle:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 8, 8), generator=g, dtype=torch.uint8)
    return TensorBundle({"images": images, "labels": torch.tensor([0, 0, 1, 1, 2, 2])},
                        {"class_names": ["a", "b", "c"], "seed": 3})


def test_round_trip_is_byte_identical(tmp_path: Path) -> None:
    ds = TensorBundleDataset(filepath=str(tmp_path / "set.safetensors"))
    bundle = make_bundle()
    ds.save(bundle)
    loaded = ds.load()
    assert loaded.meta == bundle.meta
    for key in bundle.tensors:
        assert loaded.tensors[key].dtype == bundle.tensors[key].dtype
        assert torch.equal(loaded.tensors[key], bundle.tensors[key])
    first = (tmp_path / "set.safetensors").read_bytes()
    ds2 = TensorBundleDataset(filepath=str(tmp_path / "again.safetensors"))
    ds2.save(loaded)
    assert (tmp_path / "again.safetensors").read_bytes() == first
    sidecar = json.loads((tmp_path / "set.safetensors.json").read_text())
    assert sidecar["tensors"]["images"] == {"shape": [6, 1, 8, 8], "dtype": "uint8"}


def test_versioned_saves_make_two_versions_and_pinning_works(tmp_path: Path) -> None:
    path = str(tmp_path / "set.safetensors")
    a = make_bundle()
    TensorBundleDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(a)
    b = TensorBundle({**a.tensors, "labels": a.labels.flip(0)}, a.meta)
    TensorBundleDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(b)
    latest = TensorBundleDataset(filepath=path, version=Version(None, None))
    assert latest.resolve_load_version() == "2026-01-02T00.00.00.000Z"
    assert torch.equal(latest.load().labels, b.labels)
    pinned = TensorBundleDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None))
    assert torch.equal(pinned.load().labels, a.labels)


def test_partial_write_is_invisible(tmp_path: Path) -> None:
    path = tmp_path / "set.safetensors"
    TensorBundleDataset(filepath=str(path), version=Version(None, "2026-01-01T00.00.00.000Z")).save(make_bundle())
    # A killed writer leaves only hidden temporaries (and maybe a sidecar) in a newer version folder.
    newer = path / "2026-01-02T00.00.00.000Z"
    newer.mkdir()
    (newer / ".set.safetensors.partial-deadbeef").write_bytes(b"half")
    (newer / "set.safetensors.json").write_text("{}")
    latest = TensorBundleDataset(filepath=str(path), version=Version(None, None))
    assert latest.resolve_load_version() == "2026-01-01T00.00.00.000Z"


def test_tampered_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "set.safetensors"
    ds = TensorBundleDataset(filepath=str(path))
    ds.save(make_bundle())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="sha256"):
        ds.load()
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DatasetError, match="sha256"):
        ds.load()


def test_missing_sidecar_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "set.safetensors"
    ds = TensorBundleDataset(filepath=str(path))
    ds.save(make_bundle())
    (tmp_path / "set.safetensors.json").unlink()
    with pytest.raises(DatasetError, match="sidecar"):
        ds.load()


def test_previews(tmp_path: Path) -> None:
    ds = TensorBundleDataset(filepath=str(tmp_path / "set.safetensors"))
    ds.save(make_bundle())
    assert ds.preview()["columns"] == ["tensor", "shape", "dtype"]
    image_ds = ImageBundleDataset(filepath=str(tmp_path / "set.safetensors"))
    assert isinstance(image_ds.preview(), str) and len(image_ds.preview()) > 100  # base64 PNG
    grid = ImageGridDataset(filepath=str(tmp_path / "grid.png"))
    grid.save(torch.zeros(3, 10, 12, dtype=torch.uint8))
    assert grid.load().size == (12, 10)
    assert isinstance(grid.preview(), str)
    js = AtomicJSONDataset(filepath=str(tmp_path / "r.json"))
    js.save({"b": 1, "a": [1, 2]})
    assert js.load() == {"a": [1, 2], "b": 1}
    assert '"a"' in js.preview()


class _Saveable:
    def __init__(self, value: int) -> None:
        self.value = value

    def save_pretrained(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "value.json").write_text(json.dumps(self.value))

    @classmethod
    def from_pretrained(cls, path: str) -> "_Saveable":
        return cls(json.loads((Path(path) / "value.json").read_text()))


def test_diffusers_folder_dataset_round_trip_and_atomicity(tmp_path: Path) -> None:
    path = str(tmp_path / "prior")
    cls = f"{__name__}._Saveable"
    DiffusersFolderDataset(filepath=path, model_class=cls, version=Version(None, "2026-01-01T00.00.00.000Z")).save(_Saveable(7))
    (tmp_path / "prior" / "2026-01-02T00.00.00.000Z").mkdir()
    (tmp_path / "prior" / "2026-01-02T00.00.00.000Z" / ".prior.partial-1").mkdir()
    ds = DiffusersFolderDataset(filepath=path, model_class=cls, version=Version(None, None))
    assert ds.resolve_load_version() == "2026-01-01T00.00.00.000Z"
    assert ds.load().value == 7
