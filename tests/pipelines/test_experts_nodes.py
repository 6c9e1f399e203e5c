"""The `experts` node: trajectory bundle layout and lineage meta, per-expert resume, final-score maths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import diffdistill.distill.experts as core_experts
from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.objectives import RealImages, flatten_parameters
from diffdistill.nets import build_net
from diffdistill.pipelines.experts import nodes
from diffdistill.rng import derive_seed
from diffdistill.workdir import WorkDir, split_fingerprint

NUM_CLASSES, SIDE = 3, 8
PARAMS = {"num_experts": 2, "epochs": 2, "lr": 0.05, "batch_size": 8, "net": "convnet",
          "net_overrides": {"width": 4}, "dsa_strategy": "auto", "seed": 3}


def train_set(seed: int = 0) -> TensorBundle:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (NUM_CLASSES * 4, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    labels = torch.arange(NUM_CLASSES * 4) % NUM_CLASSES
    return TensorBundle({"images": images, "labels": labels},
                        {"class_names": ["a", "b", "c"], "num_classes": NUM_CLASSES, "source": "digits"})


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # scratch_dir writes under ./data


def test_bundle_holds_every_snapshot_and_the_lineage_meta():
    real = train_set()
    bundle, metrics = nodes.train_expert_trajectories(real, PARAMS, "cpu")
    net = build_net("convnet", 1, NUM_CLASSES, SIDE, generator=torch.Generator().manual_seed(derive_seed(3, 0)),
                    width=4)
    size = flatten_parameters(net).numel()
    trajectories = bundle["trajectories"]
    assert trajectories.shape == (2, 3, size) and trajectories.dtype == torch.float32
    torch.testing.assert_close(trajectories[0, 0], flatten_parameters(net))  # seeded from (seed, expert) + overrides
    assert not torch.equal(trajectories[0, 0], trajectories[1, 0])
    meta = bundle.meta
    assert meta["train_set_fingerprint"] == split_fingerprint(real)
    assert (meta["arch"], meta["net_overrides"], meta["epochs"], meta["num_experts"]) == ("convnet", {"width": 4}, 2, 2)
    assert meta["dsa_strategy"] == "color_crop_cutout_scale_rotate"  # auto: digits drop flip
    assert [m["step"] for m in metrics["final_train_accuracy"]] == [0, 1]
    assert not list(Path("data").glob("checkpoints/experts/*"))  # finished: scratch removed

    # final scores = the last snapshot's accuracy / mean CE on the un-augmented, normalised train split
    rebuilt = build_net("convnet", 1, NUM_CLASSES, SIDE, width=4)
    torch.nn.utils.vector_to_parameters(trajectories[1, -1], rebuilt.parameters())
    norm = RealImages.from_classes([real["images"][real["labels"] == k] for k in range(NUM_CLASSES)])
    with torch.no_grad():
        logits = rebuilt.train()(norm.normalize(real["images"].float() / 255))
    assert meta["final_train_accuracy"][1] == pytest.approx(float((logits.argmax(1) == real["labels"]).float().mean()))
    assert meta["final_train_loss"][1] == pytest.approx(float(F.cross_entropy(logits, real["labels"])), rel=1e-5)


def test_a_killed_run_resumes_per_expert_with_the_same_bytes(monkeypatch):
    real = train_set()
    whole, _ = nodes.train_expert_trajectories(real, PARAMS, "cpu")

    original = WorkDir.put_tensor

    def die_after_first(work, key, tensor):
        original(work, key, tensor)
        raise KeyboardInterrupt("killed after expert 0")

    monkeypatch.setattr(WorkDir, "put_tensor", die_after_first)
    with pytest.raises(KeyboardInterrupt):
        nodes.train_expert_trajectories(real, PARAMS, "cpu")
    monkeypatch.setattr(WorkDir, "put_tensor", original)
    saved = list((Path("data") / "checkpoints" / "experts").rglob("expert_*.safetensors"))
    assert [p.name for p in saved] == ["expert_00000.safetensors"]

    trained = []
    real_train_expert = core_experts.train_expert
    monkeypatch.setattr(core_experts, "train_expert", lambda *a, **k: trained.append(1) or real_train_expert(*a, **k))
    resumed, _ = nodes.train_expert_trajectories(real, PARAMS, "cpu")
    assert len(trained) == 1  # only expert 1 was trained again
    assert torch.equal(resumed["trajectories"], whole["trajectories"])
    assert resumed.meta == whole.meta
    assert not list(Path("data").glob("checkpoints/experts/*"))


def test_unknown_parameters_are_named():
    with pytest.raises(ValueError, match=r"unknown key experts\.epoch; valid keys: batch_size, dsa_strategy, epochs"):
        nodes.train_expert_trajectories(train_set(), {**PARAMS, "epoch": 3}, "cpu")
