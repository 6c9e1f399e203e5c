"""Raw sources -> uint8 TensorBundles: every source, every bad input, determinism."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffdistill.data.sources import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    SOURCE_NAMES,
    SourceConfig,
    cap_per_class,
    decode_jpeg_slices,
    load_source,
    make_generator,
    read_idx,
    stratified_split,
    stratified_test_counts,
)

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def _bytes(bundle) -> tuple[bytes, bytes]:
    return bundle.images.numpy().tobytes(), bundle.labels.numpy().tobytes()


# ----------------------------------------------------------------------------- digits


def _bilinear_2x_reference(x: np.ndarray) -> np.ndarray:
    """align_corners=False 2× upsampling written out: out[2i] = ¼x[i-1] + ¾x[i], out[2i+1] = ¾x[i] + ¼x[i+1]."""

    def along(a: np.ndarray, axis: int) -> np.ndarray:
        a = np.moveaxis(a, axis, -1)
        prev = np.concatenate([a[..., :1], a[..., :-1]], axis=-1)
        nxt = np.concatenate([a[..., 1:], a[..., -1:]], axis=-1)
        out = np.empty(a.shape[:-1] + (2 * a.shape[-1],))
        out[..., 0::2] = 0.25 * prev + 0.75 * a
        out[..., 1::2] = 0.75 * a + 0.25 * nxt
        return np.moveaxis(out, -1, axis)

    return along(along(x, -1), -2)


def test_digits_split_sizes_stratification_and_upsampling_maths() -> None:
    from sklearn.datasets import load_digits

    train, test, report = load_source(SourceConfig(source="digits", image_size=16, seed=0))
    assert train.images.shape == (1347, 1, 16, 16) and test.images.shape == (450, 1, 16, 16)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    class_sizes = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    test_counts = torch.bincount(test.labels, minlength=10).tolist()
    assert test_counts == stratified_test_counts(class_sizes, 450)
    assert all(abs(k - n * 450 / 1797) < 1 for k, n in zip(test_counts, class_sizes, strict=True))
    assert (
        torch.bincount(train.labels, minlength=10) + torch.bincount(test.labels, minlength=10)
    ).tolist() == class_sizes
    assert report["counts"]["test"] == dict(zip([str(d) for d in range(10)], test_counts, strict=True))

    digits = load_digits()
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, 450, make_generator(0, "digits-split"))
    assert torch.equal(test.labels, labels[test_idx]) and torch.equal(train.labels, labels[train_idx])
    expected = np.rint(_bilinear_2x_reference(digits.images[test_idx.numpy()] * (255 / 16)))
    assert np.array_equal(test.images[:, 0].numpy(), np.clip(expected, 0, 255).astype(np.uint8))
    assert train.meta == {**test.meta, "split": "train"}
    assert test.meta["class_names"] == [str(d) for d in range(10)] and test.meta["image_size"] == 16


def test_digits_native_size_is_the_exact_rescale_and_rgb_repeats_grey() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test, _ = load_source(SourceConfig(source="digits", image_size=8, channels=3, test_size=0.25))
    assert len(test) == 450  # ceil(0.25 · 1797)
    every_image = torch.cat([train.images, test.images])
    assert torch.equal(every_image[:, 0], every_image[:, 1]) and torch.equal(every_image[:, 0], every_image[:, 2])
    expected = np.sort(np.rint(digits.images.reshape(1797, -1) * 255 / 16).astype(np.uint8), axis=0)
    assert np.array_equal(np.sort(every_image[:, 0].reshape(1797, -1).numpy(), axis=0), expected)


def test_digits_same_seed_same_bytes_other_seed_other_split() -> None:
    a_train, a_test, _ = load_source(SourceConfig(source="digits", seed=3))
    b_train, b_test, _ = load_source(SourceConfig(source="digits", seed=3))
    c_train, _, _ = load_source(SourceConfig(source="digits", seed=4))
    assert _bytes(a_train) == _bytes(b_train) and _bytes(a_test) == _bytes(b_test)
    assert _bytes(a_train) != _bytes(c_train)


def test_max_per_class_keeps_a_seeded_subset_without_moving_the_test_split() -> None:
    full_train, full_test, _ = load_source(SourceConfig(source="digits", seed=1))
    train, test, report = load_source(SourceConfig(source="digits", seed=1, max_per_class=5))
    assert torch.bincount(train.labels).tolist() == [5] * 10
    assert _bytes(test) == _bytes(full_test)
    keep = cap_per_class(full_train.labels, 5, make_generator(1, "cap-train"))
    assert torch.equal(train.images, full_train.images[keep])
    assert report["counts"]["train"] == {str(d): 5 for d in range(10)}


# ----------------------------------------------------------------------------- fashion_mnist


def _write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def _fake_fashion(root: Path, *, compress: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8)[::-1].copy(),
    }
    root.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        _write_idx(root / (stem + (".gz" if compress else "")), array, compress=compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx_round_trip_and_resize(tmp_path: Path, compress: bool) -> None:
    arrays = _fake_fashion(tmp_path, compress=compress)
    train, test, report = load_source(
        SourceConfig(source="fashion_mnist", root=str(tmp_path), image_size=28, image_size_multiple=4)
    )
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert train.class_names == FASHION_MNIST_CLASSES and report["counts"]["train"]["Ankle boot"] == 2

    train32, _, _ = load_source(SourceConfig(source="fashion_mnist", root=str(tmp_path)))  # default 32 px
    reference = F.interpolate(
        torch.from_numpy(arrays["train-images-idx3-ubyte"]).float()[:, None],
        size=(32, 32),
        mode="bilinear",
        align_corners=False,
    )
    assert torch.equal(train32.images, reference.round().clamp(0, 255).to(torch.uint8))


def test_idx_parser_rejects_bad_magic_and_wrong_sizes(tmp_path: Path) -> None:
    good = tmp_path / "good-idx3-ubyte"
    _write_idx(good, np.zeros((2, 3, 4), np.uint8), compress=False)
    assert read_idx(good).shape == (2, 3, 4)
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(b"\x01\x02" + good.read_bytes()[2:])
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx(bad_magic)
    short = tmp_path / "short"
    short.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(ValueError, match="need 24 data bytes but it holds 23"):
        read_idx(short)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(good.read_bytes())[:-10])
    with pytest.raises(ValueError, match="cannot be read"):
        read_idx(broken_gz)


def test_fashion_mnist_label_file_must_match_the_images(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match="must hold 10 uint8 labels"):
        load_source(SourceConfig(source="fashion_mnist", root=str(tmp_path)))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="lacks t10k-labels-idx1-ubyte"):
        load_source(SourceConfig(source="fashion_mnist", root=str(tmp_path)))


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package() -> None:
    train, test, report = load_source(SourceConfig(source="fashion_mnist", max_per_class=30, max_test_per_class=10))
    assert train.images.shape == (300, 1, 32, 32) and test.images.shape == (100, 1, 32, 32)
    assert report["counts"]["test"] == {name: 10 for name in FASHION_MNIST_CLASSES}
    raw_images = read_idx(FASHION_ROOT / "train-images-idx3-ubyte.gz")
    raw_labels = read_idx(FASHION_ROOT / "train-labels-idx1-ubyte.gz")
    assert raw_images.shape == (60000, 28, 28) and raw_images.dtype == np.uint8
    assert np.bincount(raw_labels).tolist() == [6000] * 10 and raw_labels[0] == 9  # the first one is an ankle boot
    keep = cap_per_class(torch.from_numpy(raw_labels.astype(np.int64)), 30, make_generator(0, "cap-train"))
    assert train.labels.tolist() == raw_labels[keep.numpy()].tolist()


# ----------------------------------------------------------------------------- cifar10


def _fake_cifar_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 10, n).astype(np.uint8), rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_fake_cifar(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official binary layout: per record one label byte, then the R, G, B planes (1024 bytes each)."""
    root.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}.bin": _fake_cifar_batch(4, i) for i in range(1, 6)}
    batches["test_batch.bin"] = _fake_cifar_batch(6, 9)
    for name, (labels, data) in batches.items():
        (root / name).write_bytes(np.concatenate([labels[:, None], data], axis=1).tobytes())
    (root / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return batches


def test_cifar10_binary_folder(tmp_path: Path) -> None:
    batches = _write_fake_cifar(tmp_path)
    train, test, report = load_source(
        SourceConfig(source="cifar10", root=str(tmp_path), min_per_class=0, min_test_per_class=0)
    )
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (6, 3, 32, 32)
    first = batches["data_batch_1.bin"][1][0]
    assert np.array_equal(train.images[0, 0].numpy().ravel(), first[:1024])  # records are R, G, B planes
    assert np.array_equal(train.images[0, 2].numpy().ravel(), first[2048:])
    assert train.labels.tolist() == np.concatenate([batches[f"data_batch_{i}.bin"][0] for i in range(1, 6)]).tolist()
    assert test.class_names == CIFAR10_CLASSES and report["cifar10_format"] == "binary"

    grey, _, _ = load_source(
        SourceConfig(
            source="cifar10", root=str(tmp_path), channels=1, image_size=16, min_per_class=0, min_test_per_class=0
        )
    )
    rgb = train.images.to(torch.int64)
    luma = ((rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16).float()[:, None]
    reference = F.interpolate(luma, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(grey.images, reference.round().clamp(0, 255).to(torch.uint8))


def test_cifar10_truncated_batch_or_bad_labels_are_named(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"data_batch_3\.bin.*not a whole number of 3073-byte records"):
        load_source(SourceConfig(source="cifar10", root=str(tmp_path)))
    _write_fake_cifar(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[0] = 42
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"labels outside 0\.\.9"):
        load_source(SourceConfig(source="cifar10", root=str(tmp_path)))


def test_cifar10_incomplete_or_unknown_folder(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(ValueError, match=r"lacks \['data_batch_4.bin'\]"):
        load_source(SourceConfig(source="cifar10", root=str(tmp_path)))
    other = tmp_path / "other"
    other.mkdir()
    (other / "data_batch_1").write_bytes(b"\x80\x02}q\x00.")  # the python (pickle) version is not read
    with pytest.raises(ValueError, match="neither the binary batches.*binary version"):
        load_source(SourceConfig(source="cifar10", root=str(other)))


@pytest.mark.shared_data
def test_cifar10_jpeg_npz_from_shared_data(shared_data: Path) -> None:
    root = shared_data / "cifar10"
    if not (root / "cifar10_jpeg.npz").is_file():
        pytest.skip("shared/data/cifar10/cifar10_jpeg.npz is absent")
    config = SourceConfig(source="cifar10", root=str(root), max_per_class=6, max_test_per_class=3, seed=5)
    train, test, report = load_source(config)
    assert train.images.shape == (60, 3, 32, 32) and test.images.shape == (30, 3, 32, 32)
    assert report["counts"]["test"] == {name: 3 for name in CIFAR10_CLASSES} and "lossy" in report["cifar10_format"]
    with np.load(root / "cifar10_jpeg.npz", allow_pickle=False) as archive:
        jpeg, offsets, labels = archive["jpeg_test"], archive["offsets_test"], archive["y_test"]
    keep = cap_per_class(torch.from_numpy(labels.astype(np.int64)), 3, make_generator(5, "cap-test"))
    assert test.labels.tolist() == labels[keep.numpy()].tolist()
    for row, i in enumerate(keep.tolist()[:5]):
        direct = np.array(Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
        assert np.array_equal(test.images[row].permute(1, 2, 0).numpy(), direct)
    again, _, _ = load_source(config)
    assert _bytes(again) == _bytes(train)


@pytest.mark.shared_data
def test_cifar10_npz_full_test_split_matches_the_published_hash(shared_data: Path) -> None:
    path = shared_data / "cifar10" / "cifar10_jpeg.npz"
    if not path.is_file():
        pytest.skip("shared/data/cifar10/cifar10_jpeg.npz is absent")
    with np.load(path, allow_pickle=False) as archive:
        jpeg, offsets = archive["jpeg_test"], archive["offsets_test"]
    images = decode_jpeg_slices(jpeg, offsets, list(range(len(offsets) - 1)), path, "test")
    digest = hashlib.sha256(images.permute(0, 2, 3, 1).contiguous().numpy().tobytes()).hexdigest()
    assert digest == "5a6aa8185204d80b65d3dfb540696dadd5f10d185ded226a96665d3e0fc6259f"  # PROVENANCE.md


# ----------------------------------------------------------------------------- image folders


def _png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def _write_tree(root: Path, classes: list[str], per_class: int, splits=("train", "val"), *, colour_of=None) -> None:
    """Each class folder holds `per_class` RGB images whose red value encodes the class (k·20 + 5)."""
    for split in splits:
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            colour = colour_of(k) if colour_of else (k * 20 + 5, 100, 200)
            for i in range(per_class):
                Image.new("RGB", (24 + i, 20), colour).save(folder / f"img{i}.jpg" if i % 2 else folder / f"img{i}.png")


def _write_mixed_tree(root: Path) -> None:
    """Two classes, every Pillow mode the reader must convert, plus four unreadable files."""
    _write_tree(root, ["cat", "dog"], 2)
    cat = root / "train" / "cat"
    Image.new("L", (30, 20), 50).save(cat / "grey.png")
    Image.new("RGBA", (30, 20), (10, 20, 30, 255)).save(cat / "rgba.png")
    Image.new("CMYK", (30, 20), (0, 0, 0, 0)).save(cat / "cmyk.jpg")
    Image.fromarray(np.full((20, 30), 257 * 60, np.uint16)).save(cat / "deep.png")
    palette = Image.new("P", (30, 20), 1)
    palette.putpalette([0, 0, 0, 40, 50, 60] + [0] * 762)
    palette.save(cat / "palette.gif")
    (cat / "sub").mkdir()
    Image.new("RGB", (20, 30), (1, 2, 3)).save(cat / "sub" / "nested.png")
    dog = root / "train" / "dog"
    full = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    (dog / "truncated.png").write_bytes(full[: len(full) // 2])
    (dog / "random.png").write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    (dog / "notes.txt").write_text("a class description")
    corrupt = bytearray(_png_bytes(Image.new("RGB", (16, 16), (9, 9, 9))))
    corrupt[40:60] = b"\xff" * 20  # inside the IHDR / IDAT chunk: CRC or zlib failure
    (dog / "corrupt.png").write_bytes(bytes(corrupt))
    (dog / ".DS_Store").write_bytes(b"\x00\x01")


def test_image_folder_converts_modes_and_reports_skipped_files(tmp_path: Path) -> None:
    _write_mixed_tree(tmp_path)
    train, test, report = load_source(
        SourceConfig(source="image_folder", root=str(tmp_path), image_size=16, max_bad_fraction=0.5)
    )
    assert train.class_names == ["cat", "dog"] and train.meta["channels"] == 3
    assert report["counts"] == {"train": {"cat": 8, "dog": 2}, "test": {"cat": 2, "dog": 2}}
    assert train.images.shape == (10, 3, 16, 16) and test.images.shape == (4, 3, 16, 16)
    assert sorted(Path(s["path"]).name for s in report["skipped"]) == [
        "corrupt.png",
        "notes.txt",
        "random.png",
        "truncated.png",
    ]
    assert all(s["split"] == "train" and s["reason"] for s in report["skipped"])
    assert report["num_skipped"] == {"train": 4, "test": 0}
    assert report["source_modes"]["train"] == {"CMYK": 1, "I;16": 1, "L": 1, "P": 1, "RGB": 5, "RGBA": 1}
    # cat files in sorted relative-path order: cmyk, deep, grey, img0, img1, palette, rgba, sub/nested
    centre = train.images[:8, :, 8, 8].tolist()
    assert centre[0] == [255, 255, 255] and centre[1] == [60, 60, 60] and centre[2] == [50, 50, 50]
    assert centre[5] == [40, 50, 60] and centre[6] == [10, 20, 30] and centre[7] == [1, 2, 3]
    assert train.labels.tolist() == [0] * 8 + [1] * 2


def test_image_folder_grey_output_and_test_dir_alias(tmp_path: Path) -> None:
    _write_tree(tmp_path, ["a", "b", "c"], 3, splits=("train", "test"))
    train, test, report = load_source(SourceConfig(source="image_folder", root=str(tmp_path), image_size=8, channels=1))
    assert train.images.shape == (9, 1, 8, 8) and report["splits"] == {"train": "train", "test": "test"}
    expected = [(k * 20 + 5, 100, 200) for k in range(3)]
    assert train.images[::3, 0, 4, 4].tolist() == [
        (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16 for r, g, b in expected
    ]


def test_image_folder_too_many_bad_files_names_folder_and_fraction(tmp_path: Path) -> None:
    _write_mixed_tree(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"split folder '.*train': at least 1 of its 14 files \(7\.14%\) are unreadable, more than max_bad_fraction=0\.01",
    ):
        load_source(SourceConfig(source="image_folder", root=str(tmp_path), image_size=16))


def test_image_folder_class_below_min_per_class(tmp_path: Path) -> None:
    _write_tree(tmp_path, ["a", "b"], 3)
    (tmp_path / "train" / "b" / "img0.png").unlink()
    with pytest.raises(ValueError, match=r"train split: class\(es\) \{'b': 2\} have fewer than min_per_class=3"):
        load_source(SourceConfig(source="image_folder", root=str(tmp_path), image_size=8, min_per_class=3))
    for f in (tmp_path / "val" / "a").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"test split: class\(es\) \{'a': 0\}.*min_test_per_class=1"):
        load_source(SourceConfig(source="image_folder", root=str(tmp_path), image_size=8))


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    _write_tree(tmp_path, ["a", "b"], 1, splits=("train", "val", "test"))
    with pytest.raises(ValueError, match="set preprocess.test_split"):
        load_source(SourceConfig(source="image_folder", root=str(tmp_path), image_size=8))
    train, test, _ = load_source(SourceConfig(source="image_folder", root=str(tmp_path), image_size=8, test_split="test"))
    assert len(train) == 2 and len(test) == 2
    (tmp_path / "val" / "zebra").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) \['zebra'\] that train/ lacks"):
        load_source(SourceConfig(source="image_folder", root=str(tmp_path), image_size=8, test_split="val"))
    with pytest.raises(ValueError, match="has no train/ folder"):
        load_source(SourceConfig(source="image_folder", root=str(tmp_path / "val"), image_size=8))


def test_image_folder_max_per_class_is_seeded(tmp_path: Path) -> None:
    _write_tree(tmp_path, ["a", "b"], 8, colour_of=lambda k: (k * 100, 0, 0))
    for i in range(8):  # make every file distinct so subsets are visible in the bytes
        Image.new("RGB", (20, 20), (i * 30, i, 7)).save(tmp_path / "train" / "a" / f"img{i}.png")

    def config(seed: int) -> SourceConfig:
        return SourceConfig(source="image_folder", root=str(tmp_path), image_size=8, max_per_class=3, seed=seed)

    a, b = load_source(config(0))[0], load_source(config(0))[0]
    assert _bytes(a) == _bytes(b)
    assert torch.bincount(a.labels).tolist() == [3, 3]
    assert any(_bytes(load_source(config(s))[0]) != _bytes(a) for s in (1, 2, 3))  # C(8,3) = 56 subsets


# ----------------------------------------------------------------------------- imagenet_subset


def test_imagenet_subset_reads_the_subset_wnids_in_label_order(tmp_path: Path) -> None:
    from diffdistill.data.imagenet_subsets import SUBSETS

    woof = SUBSETS["imagewoof"]
    # folders in sorted (ImageFolder) order would give other labels; colours encode the subset label
    _write_tree(tmp_path, [w for w, _, _ in woof], 2, colour_of=lambda k: (k * 20 + 5, 0, 0))
    _write_tree(tmp_path, ["n01440764"], 2)  # a class outside the subset is ignored
    train, test, report = load_source(
        SourceConfig(source="imagenet_subset", root=str(tmp_path), subset="imagewoof", image_size=8)
    )
    assert train.class_names == [name for _, _, name in woof] and train.class_names[0] == "Australian terrier"
    assert train.meta["wnids"] == [w for w, _, _ in woof] and train.meta["subset"] == "imagewoof"
    assert train.meta["imagenet_indices"] == [193, 182, 258, 162, 155, 167, 159, 273, 207, 229]
    red = train.images[:, 0, 4, 4].to(torch.int64)
    assert (red - (train.labels * 20 + 5)).abs().max() <= 3  # every other file is a (lossy) JPEG
    assert train.labels.tolist() == [k for k in range(10) for _ in range(2)] and len(test) == 20
    assert report["subset"] == "imagewoof"


def test_imagenet_subset_missing_wnid_folder(tmp_path: Path) -> None:
    from diffdistill.data.imagenet_subsets import SUBSETS

    wnids = [w for w, _, _ in SUBSETS["imagenette"]]
    _write_tree(tmp_path, wnids[:-1], 1)
    with pytest.raises(ValueError, match=rf"lacks class folder\(s\) \['{wnids[-1]}'\]"):
        load_source(SourceConfig(source="imagenet_subset", root=str(tmp_path), subset="imagenette", image_size=8))


# ----------------------------------------------------------------------------- configuration errors


def test_unknown_source_and_subset_list_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r"source='mnist' is not a known source; use one of \['digits'"):
        SourceConfig(source="mnist")
    with pytest.raises(ValueError, match=r"subset='imagenet-z'.*\['imagenet-a', 'imagenet-b'.*'imagewoof'\]"):
        SourceConfig(source="imagenet_subset", root="/tmp", subset="imagenet-z")
    with pytest.raises(ValueError, match=r"subset=None"):
        SourceConfig(source="imagenet_subset", root="/tmp")
    assert set(SOURCE_NAMES) == {"digits", "fashion_mnist", "cifar10", "image_folder", "imagenet_subset"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 20}, r"image_size=20 is not accepted: it must be a positive multiple of image_size_multiple=8"),
        ({"image_size": 1024}, r"image_size=1024 is not accepted.*at most max_image_size=512"),
        ({"image_size": 0}, r"image_size=0 must be a positive multiple"),
        ({"image_size": 16.0}, r"image_size=16.0 must be"),
        (
            {"image_size": 64, "allowed_image_sizes": [128, 256]},
            r"image_size=64 is not in allowed_image_sizes=\[128, 256\]",
        ),
        ({"image_size": 256, "max_image_size": 128}, r"at most max_image_size=128"),
        ({"channels": 2}, r"channels=2: use 1"),
        ({"max_bad_fraction": 1.5}, r"max_bad_fraction=1.5 must be in \[0, 1\)"),
        ({"max_per_class": 2, "min_per_class": 5}, r"max_per_class=2 is below min_per_class=5"),
        ({"seed": -1}, r"seed=-1 must be an integer >= 0"),
        ({"test_split": "valid"}, r"test_split='valid'"),
    ],
)
def test_bad_configuration_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SourceConfig(source="digits", **kwargs)


def test_image_size_rule_follows_the_configured_multiple_and_defaults() -> None:
    assert SourceConfig(source="fashion_mnist", image_size=28, image_size_multiple=4).resolved_image_size == 28
    assert SourceConfig(source="image_folder", root="/x", allowed_image_sizes=[128, 256]).resolved_image_size == 128
    assert SourceConfig(source="digits").resolved_image_size == 16


def test_digits_test_size_out_of_range() -> None:
    for bad in (5, 1790, 1.0, True):
        with pytest.raises(ValueError, match="test_size"):
            load_source(SourceConfig(source="digits", test_size=bad))


def test_missing_empty_or_unset_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"root is required for source 'image_folder'"):
        SourceConfig(source="image_folder")
    with pytest.raises(ValueError, match=r"data root '.*nowhere' \(preprocess.root\) does not exist"):
        load_source(SourceConfig(source="image_folder", root=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match=r"data root '.*' \(preprocess.root\) is empty"):
        load_source(SourceConfig(source="cifar10", root=str(tmp_path)))
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"split folder '.*train' holds no files.*it is empty"):
        load_source(SourceConfig(source="image_folder", root=str(tmp_path), image_size=8))


def test_from_dict_names_unknown_parameters() -> None:
    assert SourceConfig.from_dict({"source": "digits", "image_size": 8}).image_size == 8
    with pytest.raises(ValueError, match=r"unknown key preprocess.imgsize; valid keys: allowed_image_sizes"):
        SourceConfig.from_dict({"source": "digits", "imgsize": 8})


def test_bundles_meta_is_the_interface_contract() -> None:
    train, test, report = load_source(SourceConfig(source="digits", image_size=8, max_per_class=2, max_test_per_class=1))
    for bundle, split in ((train, "train"), (test, "test")):
        assert set(bundle.tensors) == {"images", "labels"}
        assert {"class_names", "source", "seed", "image_size", "channels"} <= set(bundle.meta)
        assert bundle.meta["split"] == split and bundle.num_classes == 10
    assert report["totals"] == {"train": 20, "test": 10} and report["skipped"] == []
