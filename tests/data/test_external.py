"""External distilled sets (`diffdistill.data.external`): formats, exact round trips, the same accuracy as the
original set, and a clear error naming the file for every kind of bad input. Every file is written by the test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffdistill.config import ConfigError, build
from diffdistill.data.bundle import TensorBundle, to_unit
from diffdistill.data.external import ExternalSetConfig, ExternalSetError, export_set, load_external_set
from diffdistill.data.sources import SourceConfig, load_source
from diffdistill.distill.baselines import random_real_subset
from diffdistill.evaluation import channel_stats, get_protocol, train_and_evaluate
from tests.badinput.clarity import assert_clear_error

CLASSES = ["cat", "dog", "owl", "elk"]


@pytest.fixture
def split() -> TensorBundle:
    """A tiny greyscale 8×8 test split with 4 named classes."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 1, 8, 8), generator=g, dtype=torch.uint8)
    return TensorBundle({"images": images, "labels": torch.arange(4).repeat(3)},
                        {"class_names": CLASSES, "num_classes": 4, "source": "toy"})


def distilled(ipc: int = 2, *, channels: int = 1, size: int = 8, seed: int = 1) -> TensorBundle:
    """A float [0, 1] set on the 1/255 grid (as our random subsets are), with soft labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (4 * ipc, channels, size, size), generator=g).float() / 255
    soft = torch.softmax(torch.randn(4 * ipc, 4, generator=g), dim=1)
    return TensorBundle({"images": images, "labels": torch.arange(4).repeat_interleave(ipc), "soft_labels": soft},
                        {"method": "random", "ipc": ipc, "num_classes": 4})


def write_png_folder(root: Path, layout: dict[str, int], *, size: int = 8, mode: str = "L") -> Path:
    """`root/<folder>/<k>.png` with `layout[folder]` images each."""
    rng = np.random.default_rng(0)
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for k in range(count):
            shape = (size, size) if mode == "L" else (size, size, len(mode))
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / folder / f"{k}.png")
    return root


# -- round trips ----------------------------------------------------------------------------------


def test_png_folder_round_trip_gives_the_same_images_and_labels(tmp_path: Path, split: TensorBundle) -> None:
    original = distilled()
    export_set(original, tmp_path / "set")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["0", "1", "2", "3"]
    loaded = load_external_set(tmp_path / "set", split, ipc=2)
    assert loaded["images"].dtype == torch.uint8 and "soft_labels" not in loaded  # PNG: 8 bits, hard labels
    assert torch.equal(to_unit(loaded["images"]), original["images"])  # values on the 1/255 grid come back exactly
    assert torch.equal(loaded["labels"], original["labels"])
    meta = loaded.meta
    assert (meta["method"], meta["ipc"], meta["num_classes"], meta["class_names"], meta["source"]) == (
        "external", 2, 4, CLASSES, "toy")
    assert meta["external"]["format"] == "folder" and meta["external"]["num_files"] == 8
    assert meta["external"]["path"] == str((tmp_path / "set").resolve())


@pytest.mark.parametrize("name", ["set.pt", "set.safetensors"])
def test_tensor_file_round_trip_keeps_dtype_order_and_soft_labels(tmp_path: Path, split: TensorBundle,
                                                                   name: str) -> None:
    original = distilled()
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3))  # rows not class-sorted: kept as is
    shuffled = TensorBundle({k: v[order] for k, v in original.tensors.items()}, original.meta)
    path = export_set(shuffled, tmp_path / name)
    loaded = load_external_set(path, split)
    for key in ("images", "labels", "soft_labels"):
        assert loaded[key].dtype == shuffled[key].dtype and torch.equal(loaded[key], shuffled[key]), key
    assert loaded.meta["ipc"] == 2  # inferred when not given
    assert loaded.meta["external"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.meta["external"]["format"] == name.split(".")[1]


def test_folder_digest_is_the_sha256sum_manifest_of_its_images(tmp_path: Path, split: TensorBundle) -> None:
    export_set(distilled(), tmp_path / "set")
    files = sorted(p.relative_to(tmp_path / "set").as_posix() for p in (tmp_path / "set").rglob("*.png"))
    manifest = "".join(f"{hashlib.sha256((tmp_path / 'set' / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    loaded = load_external_set(tmp_path / "set", split)
    assert loaded.meta["external"]["sha256"] == hashlib.sha256(manifest.encode()).hexdigest()
    (tmp_path / "set" / "2" / "00001.png").write_bytes((tmp_path / "set" / "2" / "00000.png").read_bytes())
    assert load_external_set(tmp_path / "set", split).meta["external"]["sha256"] != loaded.meta["external"]["sha256"]


def test_class_folders_may_be_named_by_class_name(tmp_path: Path, split: TensorBundle) -> None:
    write_png_folder(tmp_path / "set", {"owl": 1, "cat": 1, "elk": 1, "dog": 1})
    loaded = load_external_set(tmp_path / "set", split)
    assert loaded["labels"].tolist() == [0, 1, 2, 3]  # class by class in class-index order, not folder order
    owl = np.array(Image.open(tmp_path / "set" / "owl" / "0.png"))
    assert torch.equal(loaded["images"][2, 0], torch.from_numpy(owl))


def test_normalised_float_images_are_mapped_back_with_their_mean_and_std(tmp_path: Path,
                                                                          split: TensorBundle) -> None:
    original = distilled()
    mean, std = torch.tensor([0.4]), torch.tensor([0.3])
    normalised = (original["images"] - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    torch.save({"images": normalised, "labels": original["labels"], "mean": mean, "std": std}, tmp_path / "n.pt")
    from_file = load_external_set(tmp_path / "n.pt", split)
    torch.save({"images": normalised, "labels": original["labels"]}, tmp_path / "p.pt")
    from_params = load_external_set(tmp_path / "p.pt", split, mean=[0.4], std=[0.3])
    for loaded in (from_file, from_params):
        assert loaded["images"].dtype == torch.float32
        assert float((loaded["images"] - original["images"]).abs().max()) < 1e-6
        assert loaded.meta["external"]["mean"] == pytest.approx([0.4]) and loaded.meta["external"]["std"] == \
            pytest.approx([0.3])


# -- the same accuracy as the original ----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[TensorBundle, TensorBundle]:
    train, test, _ = load_source(SourceConfig.from_dict(
        {"source": "digits", "image_size": 16, "max_per_class": 40, "test_size": 200}))
    return train, test


def test_an_exported_set_scores_exactly_as_the_original(tmp_path: Path, digits) -> None:
    """Our random IPC-2 set, exported as PNGs and as .pt, trains to the same accuracy bit for bit (CPU, fp32)."""
    train, test = digits
    original = random_real_subset(train, 2, seed=0)
    export_set(original, tmp_path / "pngs")
    export_set(original, tmp_path / "set.pt")
    mean, std = channel_stats(train["images"])  # what the evaluate node normalises every set with
    protocol = get_protocol("dc", epochs=4, mean=mean.tolist(), std=std.tolist())
    scores = {}
    for name, bundle in {"original": original, "png": load_external_set(tmp_path / "pngs", test, ipc=2),
                         "pt": load_external_set(tmp_path / "set.pt", test, ipc=2)}.items():
        result = train_and_evaluate(bundle, test, arch="convnet", protocol=protocol, seed=0)
        scores[name] = (result["test_accuracy"], result["train_loss"])
    assert scores["png"] == scores["original"] and scores["pt"] == scores["original"]
    assert scores["original"][0] > 0.3  # a real set, trained: far above the 10 % of chance


# -- bad input: each a clear error naming the file and what to change ------------------------------------


def test_missing_classes_are_named(tmp_path: Path, split: TensorBundle) -> None:
    root = write_png_folder(tmp_path / "set", {"0": 2, "1": 2, "3": 2})
    error = assert_clear_error(lambda: load_external_set(root, split), str(root), "2 (owl)", case="missing class")
    assert isinstance(error, ExternalSetError) and isinstance(error, ConfigError)
    assert "no images of class 2 (owl) of the test split's 4 classes; add images of it" in str(error)


def test_unbalanced_ipc_gives_the_count_of_every_class(tmp_path: Path, split: TensorBundle) -> None:
    bundle = distilled()
    torch.save({"images": bundle["images"][:-1], "labels": bundle["labels"][:-1]}, tmp_path / "u.pt")
    error = assert_clear_error(lambda: load_external_set(tmp_path / "u.pt", split), str(tmp_path / "u.pt"),
                               case="unbalanced")
    assert "images per class: 0 (cat): 2, 1 (dog): 2, 2 (owl): 2, 3 (elk): 1" in str(error)
    assert "keep 1 of each class" in str(error)


def test_ipc_other_than_the_parameters_says_which_to_set(tmp_path: Path, split: TensorBundle) -> None:
    path = export_set(distilled(), tmp_path / "set.safetensors")
    error = assert_clear_error(lambda: load_external_set(path, split, ipc=10), str(path), "ipc", case="ipc")
    assert "has 2 images per class but the parameters say ipc: 10; set ipc to 2" in str(error)


@pytest.mark.parametrize("fmt", ["folder", "pt"])
def test_wrong_channels_name_both_counts(tmp_path: Path, split: TensorBundle, fmt: str) -> None:
    if fmt == "folder":
        path = write_png_folder(tmp_path / "set", {str(k): 1 for k in range(4)}, mode="RGB")
        expected = "has 3 channels (mode RGB), the test split has 1; save the images as greyscale (mode L)"
        named = str(path / "0" / "0.png")
    else:
        path = export_set(distilled(channels=3), tmp_path / "set.pt")
        expected = "images have 3 channels, the test split's have 1"
        named = str(path)
    error = assert_clear_error(lambda: load_external_set(path, split), named, case=f"channels {fmt}")
    assert expected in str(error)


@pytest.mark.parametrize("fmt", ["folder", "safetensors"])
def test_wrong_image_size_names_both_sizes(tmp_path: Path, split: TensorBundle, fmt: str) -> None:
    if fmt == "folder":
        path = write_png_folder(tmp_path / "set", {str(k): 1 for k in range(4)}, size=16)
        named, expected = str(path / "0" / "0.png"), "is 16×16 px, the test split's images are 8×8; resize the set"
    else:
        path = export_set(distilled(size=16), tmp_path / "set.safetensors")
        named, expected = str(path), "images are 16×16 px, the test split's are 8×8; resize the set to 8×8"
    error = assert_clear_error(lambda: load_external_set(path, split), named, case=f"size {fmt}")
    assert expected in str(error)


def test_nan_images_are_refused_with_where_they_are(tmp_path: Path, split: TensorBundle) -> None:
    bundle = distilled()
    images = bundle["images"].clone()
    images[5, 0, 1, 1] = float("nan")
    images[6, 0, 0, 0] = float("inf")
    save_file({"images": images, "labels": bundle["labels"]}, tmp_path / "nan.safetensors")
    error = assert_clear_error(lambda: load_external_set(tmp_path / "nan.safetensors", split),
                               str(tmp_path / "nan.safetensors"), "NaN", case="nan")
    assert "2 image values are NaN or inf, in 2 images (first: row 5)" in str(error)


@pytest.mark.parametrize(("scale", "hint"), [
    (lambda x: x * 2 - 1, "images in [-1, 1] (the diffusion range) need (x + 1) / 2"),
    (lambda x: x * 255, "0..255 values must be stored as uint8"),
    (lambda x: (x - 0.5) / 0.1, "need their mean and std"),
])
def test_values_out_of_range_say_how_to_store_them(tmp_path: Path, split: TensorBundle, scale, hint: str) -> None:
    bundle = distilled()
    torch.save({"images": scale(bundle["images"]), "labels": bundle["labels"]}, tmp_path / "r.pt")
    error = assert_clear_error(lambda: load_external_set(tmp_path / "r.pt", split), str(tmp_path / "r.pt"),
                               "outside [0, 1]", case="range")
    assert hint in str(error)


def test_a_pickle_only_pt_is_never_unpickled(tmp_path: Path, split: TensorBundle) -> None:
    bundle = distilled()
    torch.save({"images": bundle["images"].numpy(), "labels": bundle["labels"].numpy()}, tmp_path / "np.pt")
    error = assert_clear_error(lambda: load_external_set(tmp_path / "np.pt", split), str(tmp_path / "np.pt"),
                               "weights_only=True", "safetensors", case="pickle")
    assert "it needs pickle to rebuild numpy" in str(error)
    assert "re-save it as a dict of tensors, torch.save({'images': images, 'labels': labels}, path)" in str(error)


def test_missing_labels_key_lists_what_the_file_has(tmp_path: Path, split: TensorBundle) -> None:
    torch.save({"images": distilled()["images"]}, tmp_path / "nolabels.pt")
    error = assert_clear_error(lambda: load_external_set(tmp_path / "nolabels.pt", split),
                               str(tmp_path / "nolabels.pt"), "'labels'", case="labels key")
    assert "has no 'labels' tensor (it has ['images'])" in str(error)


@pytest.mark.parametrize(("tensors", "expected"), [
    ({"imgs": torch.zeros(1)}, "has unknown entries ['imgs']"),
    ({"images": [1, 2], "labels": torch.zeros(2)}, "entries ['images'] are not tensors"),
    ((torch.zeros(1), torch.zeros(1)), "holds a tuple, not a dict of tensors"),
])
def test_a_pt_must_be_a_dict_of_known_tensors(tmp_path: Path, split: TensorBundle, tensors, expected: str) -> None:
    torch.save(tensors, tmp_path / "odd.pt")
    error = assert_clear_error(lambda: load_external_set(tmp_path / "odd.pt", split), str(tmp_path / "odd.pt"),
                               case="pt layout")
    assert expected in str(error)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda t: {**t, "images": t["images"].permute(0, 2, 3, 1).contiguous()[:, :, :, :1].expand(-1, 8, 8, 1)
                .contiguous()},
     "channels last; store them as (N, C, H, W)"),
    (lambda t: {**t, "images": t["images"][:, 0]}, "images.unsqueeze(1)"),
    (lambda t: {**t, "images": (t["images"] * 255).to(torch.int32)}, "store uint8 0..255 or float in [0, 1]"),
    (lambda t: {**t, "labels": t["labels"].float()}, "store integer class ids"),
    (lambda t: {**t, "labels": t["labels"] + 1}, "labels [4] are not classes of the test split"),
    (lambda t: {**t, "labels": torch.nn.functional.one_hot(t["labels"], 4).float()},
     "store the class ids as 'labels' (N,) int64 and the probabilities as 'soft_labels'"),
    (lambda t: {**t, "soft_labels": torch.randn(8, 4)}, "for logits store softmax(logits, dim=1)"),
    (lambda t: {**t, "soft_labels": t["soft_labels"][:, :3].contiguous()}, "'soft_labels' must be (8, 4)"),
    (lambda t: {**t, "mean": torch.tensor([0.5])}, "has only one of 'mean' and 'std'"),
])
def test_malformed_tensors_say_what_to_change(tmp_path: Path, split: TensorBundle, change, expected: str) -> None:
    save_file(change(dict(distilled().tensors)), tmp_path / "bad.safetensors")
    error = assert_clear_error(lambda: load_external_set(tmp_path / "bad.safetensors", split),
                               str(tmp_path / "bad.safetensors"), case="tensors")
    assert expected in str(error)


def test_folder_problems_name_the_file_or_folder(tmp_path: Path, split: TensorBundle) -> None:
    unknown = write_png_folder(tmp_path / "a", {"0": 1, "1": 1, "2": 1, "bat": 1})
    error = assert_clear_error(lambda: load_external_set(unknown, split), str(unknown / "bat"), case="folder name")
    assert "name class folders by index (0..3) or by class name (cat, dog, owl, elk)" in str(error)
    twice = write_png_folder(tmp_path / "b", {"0": 1, "cat": 1, "1": 1, "2": 1, "3": 1})
    error = assert_clear_error(lambda: load_external_set(twice, split), str(twice), case="same class twice")
    assert "folders ['0', 'cat'] name the same class" in str(error)
    broken = write_png_folder(tmp_path / "c", {str(k): 1 for k in range(4)})
    (broken / "2" / "0.png").write_bytes(b"not a png")
    error = assert_clear_error(lambda: load_external_set(broken, split), str(broken / "2" / "0.png"),
                               case="unreadable image")
    assert "is not a readable image" in str(error)
    loose = write_png_folder(tmp_path / "d", {str(k): 1 for k in range(4)})
    (loose / "x.png").write_bytes((loose / "0" / "0.png").read_bytes())
    error = assert_clear_error(lambda: load_external_set(loose, split), str(loose), case="loose file")
    assert "has files outside class folders (['x.png'])" in str(error)
    error = assert_clear_error(lambda: load_external_set(loose, split, mean=[0.5], std=[0.2]), str(loose),
                               case="mean for folder")
    assert "remove mean and std" in str(error)


def test_paths_and_formats_that_cannot_be_read(tmp_path: Path, split: TensorBundle) -> None:
    error = assert_clear_error(lambda: load_external_set(tmp_path / "nowhere.pt", split),
                               str(tmp_path / "nowhere.pt"), case="missing file")
    assert "does not exist" in str(error)
    (tmp_path / "set.npz").write_bytes(b"x")
    error = assert_clear_error(lambda: load_external_set(tmp_path / "set.npz", split), str(tmp_path / "set.npz"),
                               case="suffix")
    assert "cannot tell the format from the suffix '.npz'" in str(error)
    (tmp_path / "cut.safetensors").write_bytes(export_set(distilled(), tmp_path / "whole.safetensors")
                                               .read_bytes()[:100])
    error = assert_clear_error(lambda: load_external_set(tmp_path / "cut.safetensors", split),
                               str(tmp_path / "cut.safetensors"), case="truncated")
    assert "is not a readable safetensors file" in str(error)
    (tmp_path / "cut.pt").write_bytes(export_set(distilled(), tmp_path / "whole.pt").read_bytes()[:200])
    error = assert_clear_error(lambda: load_external_set(tmp_path / "cut.pt", split), str(tmp_path / "cut.pt"),
                               case="truncated pt")
    assert "torch.save" in str(error)


def test_uint8_images_with_mean_and_std_are_refused(tmp_path: Path, split: TensorBundle) -> None:
    bundle = distilled()
    torch.save({"images": (bundle["images"] * 255).round().to(torch.uint8), "labels": bundle["labels"]},
               tmp_path / "u8.pt")
    assert load_external_set(tmp_path / "u8.pt", split)["images"].dtype == torch.uint8
    error = assert_clear_error(lambda: load_external_set(tmp_path / "u8.pt", split, mean=[0.5], std=[0.2]),
                               str(tmp_path / "u8.pt"), case="uint8 with mean")
    assert "images are uint8 but mean/std are given" in str(error)


def test_config_names_its_keys() -> None:
    config = build(ExternalSetConfig, {"path": "data/01_raw/x", "ipc": 10}, "evaluate.external.x")
    assert (config.format, config.mean, config.std) == ("auto", None, None)
    with pytest.raises(ConfigError, match=r"evaluate\.external\.x\.mean and evaluate\.external\.x\.std must be given"):
        build(ExternalSetConfig, {"path": "p", "ipc": 1, "mean": [0.5]}, "evaluate.external.x")
    with pytest.raises(ConfigError, match=r"missing key evaluate\.external\.x\.ipc"):
        build(ExternalSetConfig, {"path": "p"}, "evaluate.external.x")
    with pytest.raises(ConfigError, match=r"evaluate\.external\.x\.format='npz' is not one of auto, folder"):
        build(ExternalSetConfig, {"path": "p", "ipc": 1, "format": "npz"}, "evaluate.external.x")


def test_export_refuses_a_folder_that_holds_files(tmp_path: Path) -> None:
    export_set(distilled(), tmp_path / "set")
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        export_set(distilled(), tmp_path / "set")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folder left behind
