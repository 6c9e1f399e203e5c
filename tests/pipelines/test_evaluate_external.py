"""`evaluate.external`: sets made elsewhere become `external_<name>_ipc<N>` namespaces, are imported with their
provenance, evaluated exactly like our own sets and reported; a bad file stops the run with one clear line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from kedro.io.core import Version

from diffdistill.config import ConfigError
from diffdistill.data.bundle import to_unit
from diffdistill.data.external import ExternalSetError, export_set
from diffdistill.data.sources import SourceConfig, load_source
from diffdistill.datasets import ImageBundleDataset
from diffdistill.distill.baselines import random_real_subset
from diffdistill.pipelines.evaluate.external import evaluate_external_set, import_external_set
from diffdistill.pipelines.evaluate.nodes import evaluate_set
from diffdistill.pipelines.report.nodes import comparison_table
from tests.kedro_project import kedro, scratch_project, versions

EVALUATE = {"archs": ["convnet"], "unseen_archs": [], "protocol": "dc", "seeds": [0],
            "protocol_overrides": {"epochs": 3}, "full_data": {"seeds": [0]}}


def with_external(root: Path, entries: dict, env: str = "base") -> None:
    """Write `evaluate.external` into a scratch project's conf/<env>/parameters_evaluate.yml."""
    path = root / "conf" / env / "parameters_evaluate.yml"
    params = yaml.safe_load(path.read_text())
    params["evaluate"]["external"] = entries
    path.write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def digits():
    train, test, _ = load_source(SourceConfig.from_dict(
        {"source": "digits", "image_size": 16, "max_per_class": 40, "test_size": 200}))
    return train, test


def test_an_exported_set_is_imported_and_evaluated_like_the_original(tmp_path: Path, monkeypatch, digits) -> None:
    monkeypatch.chdir(tmp_path)  # evaluation keeps finished rows under ./data/checkpoints
    train, test = digits
    original = random_real_subset(train, 2, seed=0)
    export_set(original, tmp_path / "pngs")
    params = {**EVALUATE, "external": {"ours": {"path": "pngs", "ipc": 2}}}
    imported, grid = import_external_set(test, train, params, name="ours", set_name="external_ours_ipc2")
    assert torch.equal(to_unit(imported["images"]), original["images"])
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    for key in ("class_names", "num_classes", "source", "mean", "std"):  # what our sets carry from the real split
        assert imported.meta[key] == original.meta[key], key
    baseline, _ = evaluate_set(original, train, test, None, EVALUATE, "cpu", set_name="random_ipc2")
    results, metrics = evaluate_external_set(imported, train, test, None, params, "cpu",
                                             set_name="external_ours_ipc2")
    assert [r["test_accuracy"] for r in results["rows"]] == [r["test_accuracy"] for r in baseline["rows"]]
    assert results["summary"]["convnet"] == baseline["summary"]["convnet"]
    assert results["meta"]["method"] == "external" and results["meta"]["name"] == "ours"
    assert results["meta"]["ipc"] == 2
    assert results["meta"]["external"] == imported.meta["external"]
    assert results["meta"]["external"]["path"] == str((tmp_path / "pngs").resolve())
    assert set(metrics) == {"convnet_mean", "convnet_std"}
    table = comparison_table([baseline, results], ["convnet"])
    assert table[["space", "method", "set"]].values.tolist() == [["real", "random subset", "random_ipc2"],
                                                                 ["external", "ours", "external_ours_ipc2"]]


def test_an_import_error_names_the_file(tmp_path: Path, digits) -> None:
    train, test = digits
    torch.save({"images": torch.rand(20, 3, 16, 16), "labels": torch.arange(10).repeat(2)}, tmp_path / "rgb.pt")
    params = {**EVALUATE, "external": {"theirs": {"path": str(tmp_path / "rgb.pt"), "ipc": 2}}}
    with pytest.raises(ExternalSetError, match="rgb.pt: images have 3 channels, the test split's have 1"):
        import_external_set(test, train, params, name="theirs", set_name="external_theirs_ipc2")


def test_each_entry_is_one_namespace_with_its_ipc(tmp_path: Path, monkeypatch) -> None:
    root = scratch_project(tmp_path)
    with_external(root, {"glad_release": {"path": "data/01_raw/glad.pt", "ipc": 10},
                         "d4m": {"path": "data/01_raw/d4m", "ipc": 1, "format": "folder"}})
    monkeypatch.chdir(root)
    from diffdistill.pipelines.evaluate.pipeline import create_pipeline, evaluated_sets
    from diffdistill.pipelines.report.pipeline import create_pipeline as report_pipeline

    assert {"external_glad_release_ipc10", "external_d4m_ipc1", "random_ipc1"} <= set(evaluated_sets())
    nodes = {n.name: n for n in create_pipeline().nodes}
    imported = nodes["external_d4m_ipc1.import_external_set"]
    assert set(imported.inputs) == {"test_set", "train_set", "params:evaluate"}
    assert imported.outputs == ["external_d4m_ipc1.distilled_set", "external_d4m_ipc1.distilled_grid"]
    assert "external_d4m_ipc1.distilled_set" in nodes["external_d4m_ipc1.evaluate_set"].inputs
    assert "external_glad_release_ipc10.eval_results" in report_pipeline().inputs()


@pytest.mark.parametrize(("entries", "message"), [
    ({"my-set": {"path": "x.pt", "ipc": 1}}, "evaluate.external.my-set: a set name may hold only letters"),
    ({"x": {"path": "x.pt"}}, "missing key evaluate.external.x.ipc"),
])
def test_a_bad_entry_fails_when_the_graph_is_built(tmp_path: Path, monkeypatch, entries, message: str) -> None:
    root = scratch_project(tmp_path)
    with_external(root, entries)
    monkeypatch.chdir(root)
    from diffdistill.pipelines.evaluate.pipeline import external_sets

    with pytest.raises(ConfigError, match=message):
        external_sets()


@pytest.mark.slow
def test_kedro_run_scores_an_external_set_like_ours(tmp_path: Path) -> None:
    """`kedro run --env test`: a PNG export and a .pt of our random IPC-1 set score what the set scores; a bad
    file stops the run with its path and what to change."""
    root = scratch_project(tmp_path)
    kedro(root, "run", "--env", "test", "--to-outputs", "random_ipc1.distilled_set,teacher_model")
    assert len(versions(root, "data/07_model_output/random_ipc1/distilled_set.safetensors")) == 1
    ours = ImageBundleDataset(filepath=str(root / "data/07_model_output/random_ipc1/distilled_set.safetensors"),
                              version=Version(None, None)).load()
    export_set(ours, root / "data/01_raw/random_pngs")
    pt = export_set(ours, root / "data/01_raw/random.pt")
    unbalanced = {"images": torch.cat([ours["images"][:1], ours["images"]]),
                  "labels": torch.cat([ours["labels"][:1], ours["labels"]])}
    torch.save(unbalanced, root / "data/01_raw/unbalanced.pt")
    with_external(root, {"pngs": {"path": "data/01_raw/random_pngs", "ipc": 1},
                         "pt": {"path": "data/01_raw/random.pt", "ipc": 1},
                         "unbalanced": {"path": "data/01_raw/unbalanced.pt", "ipc": 1}}, env="test")
    kedro(root, "run", "--env", "test", "--pipelines", "evaluate", "--namespaces",
          "random_ipc1,external_pngs_ipc1,external_pt_ipc1")
    results = {}
    for name in ("random_ipc1", "external_pngs_ipc1", "external_pt_ipc1"):
        (saved,) = versions(root, f"data/08_reporting/evaluation/{name}.json")
        results[name] = json.loads((root / f"data/08_reporting/evaluation/{name}.json/{saved}/{name}.json").read_text())
        assert versions(root, f"data/08_reporting/grids/{name}.png") or name == "random_ipc1"
    accuracy = {name: [r["test_accuracy"] for r in r_["rows"]] for name, r_ in results.items()}
    assert accuracy["external_pngs_ipc1"] == accuracy["random_ipc1"] == accuracy["external_pt_ipc1"]
    origin = results["external_pt_ipc1"]["meta"]["external"]
    assert origin["sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest() and origin["format"] == "pt"
    failed = kedro(root, "run", "--env", "test", "--pipelines", "evaluate", "--namespaces",
                   "external_unbalanced_ipc1", check=False)
    assert failed.returncode != 0
    printed = "".join((failed.stdout + failed.stderr).split())  # the log wraps long lines anywhere
    for words in ("unbalanced.pt is unbalanced (images per class: 0: 2, 1: 1, 2: 1", "keep 1 of each class"):
        assert "".join(words.split()) in printed, words
