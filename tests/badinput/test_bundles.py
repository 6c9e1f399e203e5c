"""Bad tensor bundles handed to the evaluation layer and to the nodes: wrong tensors, dtypes, ranges, shapes,
and artifacts of different versions that no longer fit together (train vs test, set vs teacher)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffdistill.data.bundle import TensorBundle
from diffdistill.evaluation import get_protocol, train_and_evaluate, train_classifier
from diffdistill.evaluation.saved import classifier_from_bundle, classifier_to_bundle
from tests.badinput.clarity import assert_clear_error
from tests.badinput.strategies import bounded

FAST = bounded(25)
ONE_EPOCH = get_protocol("dc", epochs=1, batch_size=8)


def real_split(n_per_class: int = 3, classes: int = 2, channels: int = 1, size: int = 8, seed: int = 0,
               split: str = "train") -> TensorBundle:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_per_class * classes, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    meta = {"class_names": [f"c{k}" for k in range(classes)], "num_classes": classes, "source": "digits",
            "seed": seed, "image_size": size, "channels": channels, "split": split}
    return TensorBundle({"images": images, "labels": labels}, meta)


def distilled(ipc: int = 1, classes: int = 2, channels: int = 1, size: int = 8) -> TensorBundle:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(ipc * classes, channels, size, size, generator=g)
    return TensorBundle({"images": images, "labels": torch.arange(classes).repeat_interleave(ipc)},
                        {"method": "random", "ipc": ipc, "class_names": [f"c{k}" for k in range(classes)],
                         "num_classes": classes, "source": "digits", "mean": [0.5] * channels,
                         "std": [0.25] * channels})


def _edit(bundle: TensorBundle, tensors: dict | None = None, meta: dict | None = None,
          drop: tuple[str, ...] = ()) -> TensorBundle:
    new_tensors = {k: v for k, v in bundle.tensors.items() if k not in drop}
    new_tensors.update(tensors or {})
    return TensorBundle(new_tensors, {**bundle.meta, **(meta or {})})


# (name of the corruption, what the message must name, fn(bundle, draw) -> corrupted train bundle)
TRAIN_CORRUPTIONS = {
    "no images": (("images",), lambda b, k: _edit(b, drop=("images",))),
    "no labels": (("labels",), lambda b, k: _edit(b, drop=("labels",))),
    "float labels": (("labels",), lambda b, k: _edit(b, {"labels": b.labels.float()})),
    "labels out of range": (("labels",), lambda b, k: _edit(b, {"labels": b.labels + k + 2})),
    "negative labels": (("labels",), lambda b, k: _edit(b, {"labels": b.labels - k - 1})),
    "labels wrong length": (("labels",), lambda b, k: _edit(b, {"labels": b.labels[: max(len(b) - k - 1, 0)]})),
    "images 3-D": (("images",), lambda b, k: _edit(b, {"images": b.images[:, 0]})),
    "images 5-D": (("images",), lambda b, k: _edit(b, {"images": b.images[:, None]})),
    "images signed": (("images",), lambda b, k: _edit(b, {"images": b.images * 2 - 1 - 0.01 * k})),
    "images above 1": (("images",), lambda b, k: _edit(b, {"images": b.images * (2 + k)})),
    "images int32": (("images",), lambda b, k: _edit(b, {"images": (b.images * 255).int()})),
    "images not square": (("images",), lambda b, k: _edit(b, {"images": b.images[..., : 8 - 1 - k % 4]})),
    "unbalanced": (("unbalanced",), lambda b, k: _edit(b, {"images": b.images[: -1 - k % 2],
                                                           "labels": b.labels[: -1 - k % 2]})),
    "empty": (("empty",), lambda b, k: _edit(b, {"images": b.images[:0], "labels": b.labels[:0]})),
    "meta mean wrong length": (("mean",), lambda b, k: _edit(b, meta={"mean": [0.5] * (k + 2),
                                                                      "std": [0.2] * (k + 2)})),
    "meta std zero": (("std",), lambda b, k: _edit(b, meta={"std": [0.0]})),
    "meta num_classes not a number": (("num_classes",), lambda b, k: _edit(b, meta={"num_classes": "ten" * (k + 1)})),
    "meta num_classes too small": (("labels",), lambda b, k: _edit(b, meta={"num_classes": 1,
                                                                           "class_names": ["c0"]})),
}


@pytest.mark.parametrize("kind", sorted(TRAIN_CORRUPTIONS))
@bounded(4)
@given(k=st.integers(0, 3))
def test_train_and_evaluate_rejects_a_bad_train_bundle(kind: str, k: int) -> None:
    names, corrupt = TRAIN_CORRUPTIONS[kind]
    train = corrupt(distilled(ipc=3), k)
    assert_clear_error(lambda: train_and_evaluate(train, real_split(split="test"), arch="convnet",
                                                  protocol=ONE_EPOCH, seed=0),
                       *names, case=f"train_and_evaluate/train {kind}")


# Artifacts of different versions: the test split or the distilled set was made at another size / channels /
# class count than its partner.
MISMATCHES = {
    "test at another image size": (("test",), lambda: (distilled(), real_split(size=16, split="test"))),
    "test with other channels": (("test",), lambda: (distilled(), real_split(channels=3, split="test"))),
    "test with more classes": (("test", "labels"), lambda: (distilled(), real_split(classes=3, split="test"))),
    "test labels float": (("test", "labels"), lambda: (distilled(), _edit(real_split(split="test"),
                                                                          {"labels": torch.zeros(6)}))),
    "test without images": (("test", "images"), lambda: (distilled(), _edit(real_split(split="test"),
                                                                            drop=("images",)))),
}


@pytest.mark.parametrize("kind", sorted(MISMATCHES))
def test_train_and_evaluate_rejects_mismatched_artifacts(kind: str) -> None:
    names, make = MISMATCHES[kind]
    train, test = make()
    assert_clear_error(lambda: train_and_evaluate(train, test, arch="convnet", protocol=ONE_EPOCH, seed=0),
                       *names, case=f"train_and_evaluate/{kind}")


@FAST
@given(seed=st.one_of(st.text(max_size=4), st.floats(allow_nan=True), st.none(), st.booleans()))
def test_train_and_evaluate_rejects_a_bad_seed(seed) -> None:
    assert_clear_error(lambda: train_and_evaluate(distilled(), real_split(split="test"), arch="convnet",
                                                  protocol=ONE_EPOCH, seed=seed), "seed",
                       case="train_and_evaluate/seed wrong type")


@FAST
@given(arch=st.one_of(st.text(max_size=8).filter(lambda a: a not in ("convnet",)), st.integers(), st.none()))
def test_train_and_evaluate_rejects_an_unknown_arch(arch) -> None:
    from diffdistill.nets import NET_NAMES

    if arch in NET_NAMES:
        return
    assert_clear_error(lambda: train_and_evaluate(distilled(), real_split(split="test"), arch=arch,
                                                  protocol=ONE_EPOCH, seed=0), "net",
                       case="train_and_evaluate/unknown arch")


def test_soft_label_protocol_needs_a_matching_teacher() -> None:
    protocol = get_protocol("soft_label", epochs=1)
    train, test = distilled(), real_split(split="test")
    assert_clear_error(lambda: train_and_evaluate(train, test, arch="convnet", protocol=protocol, seed=0),
                       "teacher", case="train_and_evaluate/soft_label without teacher")
    teacher = train_classifier(real_split(classes=3), arch="convnet", protocol=ONE_EPOCH, seed=0,
                               net_overrides={"width": 4})
    assert_clear_error(lambda: train_and_evaluate(train, test, arch="convnet", protocol=protocol, seed=0,
                                                  teacher=teacher, net_overrides={"width": 4}),
                       "teacher", case="train_and_evaluate/teacher with other classes")


# ----------------------------------------------------------------------------- saved classifiers


@pytest.fixture(scope="module")
def teacher_bundle() -> TensorBundle:
    model = train_classifier(real_split(), arch="convnet", protocol=ONE_EPOCH, seed=0, net_overrides={"width": 4})
    bundle = classifier_to_bundle(model, {"arch": "convnet", "in_channels": 1, "num_classes": 2, "image_size": 8})
    bundle.meta["net_overrides"] = {"width": 4}
    return bundle


TEACHER_EDITS = {
    "arch renamed": (("arch",), lambda b: _edit(b, meta={"arch": "resnet18"})),
    "arch unknown": (("net",), lambda b: _edit(b, meta={"arch": "convnet9"})),
    "num_classes edited": (("num_classes",), lambda b: _edit(b, meta={"num_classes": 5})),
    "image_size edited": (("image_size",), lambda b: _edit(b, meta={"image_size": 16})),
    "in_channels edited": (("in_channels",), lambda b: _edit(b, meta={"in_channels": 3})),
    "kind edited": (("classifier",), lambda b: _edit(b, meta={"kind": "latents"})),
    "meta key missing": (("arch",), lambda b: TensorBundle(b.tensors, {k: v for k, v in b.meta.items()
                                                                        if k != "arch"})),
    "weight dropped": (("classifier",), lambda b: _edit(b, drop=(sorted(b.tensors)[0],))),
    "weight reshaped": (("classifier",), lambda b: _edit(b, {"net.head.weight": b["net.head.weight"][:1]})),
}


@pytest.mark.parametrize("kind", sorted(TEACHER_EDITS))
def test_classifier_from_an_edited_bundle(teacher_bundle: TensorBundle, kind: str) -> None:
    names, edit = TEACHER_EDITS[kind]
    bundle = edit(teacher_bundle)
    assert_clear_error(lambda: classifier_from_bundle(bundle), *names, case=f"classifier_from_bundle/{kind}")
