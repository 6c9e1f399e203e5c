"""Lineage records -> the transitive chain of producers (`kedro lineage show`)."""

import json
from pathlib import Path

from click.testing import CliRunner

from diffdistill.cli import cli
from diffdistill.lineage import format_tree, load_records, trace


def _write(root: Path, save_version: str, pipeline: str, nodes: dict, mlflow: str) -> None:
    inputs = {k: v for n in nodes.values() for k, v in n["inputs"].items()}
    outputs = {k: v for n in nodes.values() for k, v in n["outputs"].items()}
    record = {"save_version": save_version, "pipeline_names": [pipeline], "nodes": nodes, "inputs": inputs,
              "outputs": outputs, "git_sha": "abc123", "git_dirty": False, "params_hash": "p", "mlflow_run_id": mlflow}
    (root / "data" / "lineage").mkdir(parents=True, exist_ok=True)
    (root / "data" / "lineage" / f"{save_version}.json").write_text(json.dumps(record))


def _project(tmp_path: Path) -> Path:
    _write(tmp_path, "v1", "preprocess", {"load": {"inputs": {}, "outputs": {"train_set": "v1"}}}, "m1")
    _write(tmp_path, "v2", "preprocess", {"load": {"inputs": {}, "outputs": {"train_set": "v2"}}}, "m2")
    _write(tmp_path, "v3", "prior", {"train": {"inputs": {"train_set": "v1"}, "outputs": {"prior_model": "v3"}}}, "m3")
    _write(tmp_path, "v4", "latents", {
        "encode": {"inputs": {"train_set": "v2", "prior_model": "v3"}, "outputs": {"latents": "v4"}},
        "invert": {"inputs": {"latents": "v4", "prior_model": "v3"}, "outputs": {"noise": "v4"}},
    }, "m4")
    return tmp_path


def test_trace_follows_the_recorded_versions_transitively(tmp_path: Path) -> None:
    records = load_records(_project(tmp_path))
    tree = trace(records, "noise")
    assert (tree.dataset, tree.version, tree.node) == ("noise", "v4", "invert")
    parents = {p.dataset: p for p in tree.parents}
    assert parents["latents"].version == "v4"
    latents_parents = {p.dataset: p for p in parents["latents"].parents}
    assert latents_parents["train_set"].version == "v2"  # the version actually read, not the latest-at-the-time
    prior = parents["prior_model"]
    assert prior.run["mlflow_run_id"] == "m3"
    assert prior.parents[0].dataset == "train_set" and prior.parents[0].version == "v1"
    text = format_tree(tree)
    assert "mlflow m3" in text and "train_set @ v1" in text


def test_cli_shows_a_pinned_version_and_explains_unknown_names(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(_project(tmp_path))
    runner = CliRunner()
    result = runner.invoke(cli, ["lineage", "show", "train_set", "--version", "v1"])
    assert result.exit_code == 0 and "train_set @ v1" in result.output and "mlflow m1" in result.output
    result = runner.invoke(cli, ["lineage", "show", "nope"])
    assert result.exit_code != 0 and "prior_model" in result.output


class _Versioned:
    """The slice of a catalog dataset the lineage hook reads."""

    _version = True
    metadata = None

    def __init__(self, version: str) -> None:
        self.version = version

    def resolve_save_version(self) -> str:
        return self.version


def test_a_run_killed_after_a_save_leaves_that_version_traceable(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from diffdistill.hooks import LineageHook

    hook = LineageHook()
    hook.after_context_created(SimpleNamespace(project_path=tmp_path, params={"a": 1}))
    hook.after_catalog_created(SimpleNamespace(get=lambda name: _Versioned("v9")), "v9", {})
    hook.before_pipeline_run({"run_id": "v9", "pipeline_names": ["prior"], "env": "test"}, None)
    hook.after_dataset_saved("prior_model", SimpleNamespace(name="build_prior"))
    # SIGKILL here: no after_pipeline_run / on_pipeline_error ever runs.
    (record,) = load_records(tmp_path)
    assert record["status"] == "running" and record["outputs"] == {"prior_model": "v9"}
    tree = trace([record], "prior_model")
    assert (tree.version, tree.node) == ("v9", "build_prior")
    assert "status running" in format_tree(tree)
    hook.after_pipeline_run()  # a run that does finish replaces the record
    (record,) = load_records(tmp_path)
    assert record["status"] == "completed" and "status" not in format_tree(trace([record], "prior_model"))
