"""The `evaluate` nodes: every set under the common protocol and under its paper's, one results entry per protocol."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from diffdistill.config import ConfigError, build
from diffdistill.data.bundle import TensorBundle
from diffdistill.evaluation import get_protocol, train_classifier
from diffdistill.evaluation.config import EvaluateConfig
from diffdistill.evaluation.saved import classifier_to_bundle
from diffdistill.pipelines.evaluate import nodes
from diffdistill.pipelines.ld3m.params import method_name

PROJECT = Path(__file__).resolve().parents[2]
NUM_CLASSES, SIDE = 3, 8
PARAMS = {
    "archs": ["convnet"], "unseen_archs": [], "protocol": "dc", "seeds": [0], "protocol_overrides": {"epochs": 2},
    "full_data": {"seeds": [0], "protocol_overrides": {"epochs": 1}},
    "paper_protocols": {"random": ["dc_reference", "soft_label_reference"], "ld3m_mtt_pixel": "dc_reference",
                        "full": ["dc_reference"]},
    "paper_protocol_overrides": {"dc_reference": {"epochs": 2}, "soft_label_reference": {"epochs": 2}},
}


def _split(per_class: int, seed: int) -> TensorBundle:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    images = torch.randint(0, 256, (len(labels), 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    return TensorBundle({"images": images, "labels": labels},
                        {"class_names": ["a", "b", "c"], "num_classes": NUM_CLASSES, "source": "digits"})


def _distilled(method: str, **meta) -> TensorBundle:
    real = _split(2, seed=3)
    return TensorBundle({"images": real["images"].float() / 255, "labels": real["labels"]},
                        {"method": method, "ipc": 2, "class_names": ["a", "b", "c"], "num_classes": NUM_CLASSES,
                         "source": "digits", **meta})


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the resumable rows live under ./data/checkpoints


@pytest.fixture(scope="module")
def teacher() -> TensorBundle:
    train = _split(4, seed=0)
    model = train_classifier(train, arch="convnet", protocol=get_protocol("dc", epochs=1, batch_size=8), seed=0,
                             net_overrides={"width": 4})
    return classifier_to_bundle(model, {"arch": "convnet", "in_channels": 1, "num_classes": NUM_CLASSES,
                                        "image_size": SIDE, "net_overrides": {"width": 4}})


def test_an_mtt_set_is_scored_under_the_common_protocol_and_mtts_own(teacher) -> None:
    train, test = _split(4, seed=0), _split(2, seed=1)
    mtt = _distilled("mtt", syn_lr=0.02)
    results, metrics = nodes.evaluate_set(mtt, train, test, teacher, PARAMS, "cpu", set_name="ld3m_mtt_pixel_ipc2")
    # top level: the common protocol, as before
    assert results["protocol"]["name"] == "dc" and results["status"] == "done"
    assert [(r["protocol"], r["lr"], r["lr_source"], r["epochs"]) for r in results["rows"]] == [
        ("dc", 0.01, "protocol", 2)]
    assert set(results["summary"]) == {"convnet"}
    # the paper's: keyed by name, every row naming it; MTT trains with the set's learned syn_lr
    assert list(results["paper_protocols"]) == ["dc_reference"]
    paper = results["paper_protocols"]["dc_reference"]
    assert paper["protocol"]["name"] == "dc_reference" and paper["protocol"]["extra_epoch"] is True
    (row,) = paper["rows"]
    assert (row["protocol"], row["lr"], row["lr_source"], row["net"], row["epochs"]) == (
        "dc_reference", 0.02, "meta.syn_lr", "convnet", 2)
    assert paper["summary"]["convnet"]["mean"] == pytest.approx(100 * row["test_accuracy"])
    assert {"convnet_mean", "dc_reference.convnet_mean"} <= set(metrics)


def test_baselines_are_scored_under_every_paper_protocol_they_are_compared_under(teacher) -> None:
    train, test = _split(4, seed=0), _split(2, seed=1)
    results, _ = nodes.evaluate_set(_distilled("random"), train, test, teacher, PARAMS, "cpu",
                                    set_name="random_ipc2")
    assert list(results["paper_protocols"]) == ["dc_reference", "soft_label_reference"]
    (dc_row,) = results["paper_protocols"]["dc_reference"]["rows"]
    assert (dc_row["lr"], dc_row["lr_source"]) == (0.01, "protocol")  # no learned syn_lr: MTT's initial one
    (soft,) = results["paper_protocols"]["soft_label_reference"]["rows"]
    # D3HR's batch size at IPC 2 (15, capped by the 6 images) and RDED's BatchNorm ConvNet
    assert (soft["protocol"], soft["net"], soft["batch_size"], soft["lr"]) == (
        "soft_label_reference", "convnet_bn", 15, 1e-3)
    assert results["rows"][0]["batch_size"] == 256 and results["rows"][0]["net"] == "convnet"


def test_the_full_data_bound_is_scored_under_the_listed_hard_label_protocols() -> None:
    train, test = _split(4, seed=0), _split(2, seed=1)
    results, _ = nodes.evaluate_full_data(train, test, PARAMS, "cpu")
    assert results["rows"][0]["protocol"] == "dc" and list(results["paper_protocols"]) == ["dc_reference"]
    assert results["paper_protocols"]["dc_reference"]["rows"][0]["epochs"] == 1  # full_data's overrides on top
    assert results["split"] == "digits/? (6)"  # the test split it was measured on (this one names no split)
    soft = {**PARAMS, "paper_protocols": {"full": ["soft_label_reference"]}}
    with pytest.raises(ConfigError, match=r"full-data bound trains with hard labels .* \['soft_label_reference'\]"):
        nodes.evaluate_full_data(train, test, soft, "cpu")


def test_a_method_without_an_entry_gets_the_common_protocol_and_a_warning(teacher, caplog) -> None:
    train, test = _split(4, seed=0), _split(2, seed=1)
    with caplog.at_level(logging.WARNING):
        results, _ = nodes.evaluate_set(_distilled("herding"), train, test, teacher, PARAMS, "cpu",
                                        set_name="herding_ipc2")
    assert results["paper_protocols"] == {} and results["rows"][0]["protocol"] == "dc"
    assert "evaluate.paper_protocols has no entry for 'herding'" in caplog.text
    missing, _ = nodes.evaluate_set(None, train, test, teacher, PARAMS, "cpu", set_name="d3hr_ipc2")
    assert missing["status"] == "missing" and missing["paper_protocols"] == {}


def test_an_arch_budget_trains_that_architecture_shorter_with_fewer_seeds_and_common_protocol_only(teacher) -> None:
    train, test = _split(4, seed=0), _split(2, seed=1)
    params = {**PARAMS, "archs": ["convnet", "alexnet"], "unseen_archs": ["alexnet"], "seeds": [0, 1],
              "arch_budget": {"alexnet": {"seeds": [0], "epochs": 1, "common_only": True}}}
    results, _ = nodes.evaluate_set(_distilled("random"), train, test, teacher, params, "cpu", set_name="random_ipc2")
    assert [(r["arch"], r["seed"], r["epochs"]) for r in results["rows"]] == [
        ("convnet", 0, 2), ("convnet", 1, 2), ("alexnet", 0, 1)]
    assert results["summary"]["alexnet"]["n"] == 1 and results["summary"]["unseen_mean"]["archs"] == ["alexnet"]
    for entry in results["paper_protocols"].values():  # the budgeted architecture is left out of the paper protocols
        assert {r["arch"] for r in entry["rows"]} == {"convnet"}
    # the same set without a budget reuses the unbudgeted rows (same keys) and trains only what is new
    unbudgeted = {**params, "arch_budget": {}}
    again, _ = nodes.evaluate_set(_distilled("random"), train, test, teacher, unbudgeted, "cpu", set_name="random_ipc2")
    assert [(r["arch"], r["seed"], r["epochs"]) for r in again["rows"]] == [
        ("convnet", 0, 2), ("convnet", 1, 2), ("alexnet", 0, 2), ("alexnet", 1, 2)]
    assert again["rows"][:2] == results["rows"][:2]


@pytest.mark.parametrize(("change", "message"), [
    ({"arch_budget": {"vit": {"seeds": [0]}}}, r"evaluate.arch_budget has \['vit'\], which are not in"),
    ({"arch_budget": {"convnet": {"seeds": []}}}, r"evaluate.arch_budget.convnet.seeds is empty"),
    ({"arch_budget": {"convnet": {"epochs": 0}}}, r"evaluate.arch_budget.convnet.epochs"),
    ({"paper_protocols": {"d3hr": "d3hr"}}, r"evaluate.paper_protocols.d3hr has 'd3hr'; valid protocols: dc, glad"),
    ({"paper_protocols": {"random": ["dc"]}}, r"lists 'dc', the common protocol \(evaluate.protocol\)"),
    ({"paper_protocols": {"random": ["glad", "glad"]}}, r"evaluate.paper_protocols.random lists a protocol twice"),
    ({"paper_protocol_overrides": {"mtt": {}}}, r"evaluate.paper_protocol_overrides has 'mtt', which is not a"),
    ({"paper_protocol_overrides": {"dc_reference": {"epoch": 3}}},
     r"unknown key evaluate.paper_protocol_overrides.dc_reference.epoch"),
])
def test_the_protocol_map_is_checked_with_the_key_path(change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build(EvaluateConfig, {**PARAMS, **change}, "evaluate")


def _parameters(env: str, name: str) -> dict:
    path = PROJECT / "conf" / env / f"parameters_{name}.yml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _merged(base: dict, env: dict) -> dict:
    out = dict(base)
    for key, value in env.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


@pytest.mark.parametrize("env", ["base", "paper", "test"])
def test_every_set_of_the_graph_has_its_papers_protocol(env: str) -> None:
    evaluate = _merged(_parameters("base", "evaluate")["evaluate"],
                       _parameters(env, "evaluate").get("evaluate", {}) if env != "base" else {})
    config = build(EvaluateConfig, evaluate, "evaluate")
    runs = _parameters("base", "ld3m")["ld3m"]["runs"]
    methods = [*config.methods, *(method_name(r["objective"], r["space"], r.get("variant")) for r in runs), "full"]
    assert sorted(config.paper_protocols) == sorted(methods)
    used = {name for method in methods for name in config.paper_protocols_of(method)}
    assert used == {"dc_reference", "glad_reference", "soft_label_reference"}
    for baseline in ("random", "herding"):  # every comparison carries the baselines
        assert set(config.paper_protocols_of(baseline)) == used
    assert config.paper_protocols_of("ld3m_mtt_pixel") == ["dc_reference"]
    assert config.paper_protocols_of("d3hr") == ["soft_label_reference"]
    assert config.paper_protocols_of("ld3m_dm_latent") == ["glad_reference"]
    assert set(config.paper_protocol_overrides) == used


def test_the_tour_keeps_to_the_common_protocol() -> None:
    evaluate = _merged(_parameters("base", "evaluate")["evaluate"], _parameters("tour", "evaluate")["evaluate"])
    config = build(EvaluateConfig, evaluate, "evaluate")
    runs = _parameters("tour", "ld3m")["ld3m"]["runs"]
    methods = [*config.methods, *(method_name(r["objective"], r["space"], r.get("variant")) for r in runs), "full"]
    assert all(config.paper_protocols_of(method) == [] for method in methods)


def test_the_split_name_says_source_subset_split_and_size() -> None:
    test = _split(2, seed=1)
    test.meta.update({"source": "imagenet_subset", "subset": "imagenette", "split": "val"})
    assert nodes.split_name(test) == "imagenet_subset:imagenette/val (6)"


def test_the_paper_environment_reads_the_papers_imagenet_subset_and_imagenette2_has_its_own() -> None:
    paper = _parameters("paper", "preprocess")["preprocess"]
    assert (paper["source"], paper["subset"]) == ("imagenet_subset", "imagenette")  # ImageNet val: 50 per class
    own = _parameters("imagenette", "preprocess")["preprocess"]
    assert (own["source"], own["root"]) == ("image_folder", "data/01_raw/imagenette2")
