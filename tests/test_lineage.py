"""Lineage records -> the DAG of producers (`kedro lineage show`), and the command line every run records."""

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from diffdistill.cli import cli
from diffdistill.lineage import command_line, format_tree, kedro_run_command, lineage_json, load_records, trace


def _write(root: Path, save_version: str, pipeline: str, nodes: dict, mlflow: str, *, env: str = "test",
           command: str | None = None) -> None:
    inputs = {k: v for n in nodes.values() for k, v in n["inputs"].items()}
    outputs = {k: v for n in nodes.values() for k, v in n["outputs"].items()}
    record = {"save_version": save_version, "pipeline_names": [pipeline], "nodes": nodes, "inputs": inputs,
              "outputs": outputs, "git_sha": "abc123", "git_dirty": False, "params_hash": "p", "mlflow_run_id": mlflow,
              "env": env, "argv": ["/venv/bin/kedro", "run", "--pipelines", pipeline, "--env", env],
              "kedro_command": command or f"kedro run --pipelines={pipeline} --env={env}",
              "created_at": f"2026-11-2{save_version[-1]}T10:00:00.000000+00:00", "status": "completed"}
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


SETS = [f"{method}_ipc{ipc}" for method in ("random", "herding", "d3hr", "ld3m_dm_latent", "ld3m_dm_pixel")
        for ipc in (1, 10)]


def _report_project(tmp_path: Path) -> Path:
    """The shape that printed 271 lines: a report over ten sets, each set and its evaluation reading the splits."""
    _write(tmp_path, "r1", "preprocess", {"load_raw_source": {"inputs": {}, "outputs": {
        "train_set": "r1", "test_set": "r1"}}}, "m1")
    _write(tmp_path, "r2", "teacher", {"train_teacher": {"inputs": {"train_set": "r1", "test_set": "r1"},
                                                         "outputs": {"teacher_model": "r2"}}}, "m2")
    _write(tmp_path, "r3", "baselines", {
        f"distill_{name}": {"inputs": {"train_set": "r1", "teacher_model": "r2"}, "outputs": {
            f"{name}.distilled_set": "r3"}} for name in SETS}, "m3")
    _write(tmp_path, "r4", "evaluate", {
        f"evaluate_{name}": {"inputs": {f"{name}.distilled_set": "r3", "train_set": "r1", "test_set": "r1"},
                             "outputs": {f"{name}.eval_results": "r4"}} for name in SETS}, "m4",
        command="kedro run --pipelines=evaluate --env=test --params=evaluate.seeds=3")
    _write(tmp_path, "r5", "report", {"build_report": {"inputs": {f"{name}.eval_results": "r4" for name in SETS},
                                                       "outputs": {"report_table_markdown": "r5"}}}, "m5")
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
    assert latents_parents["prior_model"] is prior  # one node per artifact version: a DAG, not copies
    text = format_tree(tree)
    assert "mlflow m3" in text and "train_set @ v1" in text
    assert "└── prior_model  (see above)" in text.splitlines()  # one version in the DAG: the name suffices
    # Two versions of one dataset in one chain are an audit finding: named, with both versions.
    assert "note: train_set is read at 2 versions (v1, v2)" in text
    _write(tmp_path, "v5", "report", {"report": {"inputs": {"noise": "v4", "train_set": "v1"},
                                                 "outputs": {"report": "v5"}}}, "m5")
    lines = format_tree(trace(load_records(tmp_path), "report")).splitlines()
    assert "└── train_set @ v1  (see above)" in lines  # a reference to one of two versions names it


def test_show_prints_each_artifact_version_once_with_its_run(tmp_path: Path) -> None:
    records = load_records(_report_project(tmp_path))
    text = format_tree(trace(records, "report_table_markdown"))
    lines = text.splitlines()
    tree_lines = lines[:lines.index("runs:")]
    # 24 artifacts (62 edges): one line per artifact, plus at most one line per artifact for its repeated inputs.
    assert len(tree_lines) == 44 <= 2 * 24
    for label in ["report_table_markdown @ r5", "train_set @ r1", "test_set @ r1", "teacher_model @ r2",
                  *[f"{name}.distilled_set @ r3" for name in SETS], *[f"{name}.eval_results @ r4" for name in SETS]]:
        described = [line for line in tree_lines if label in line and " <- " in line]
        assert len(described) == 1, (label, described)
    # Later occurrences are references by name (every dataset has one version here), several to a line.
    assert "│   └── test_set, train_set  (see above)" in tree_lines
    assert "│   │   └── teacher_model, train_set  (see above)" in tree_lines
    references = [line for line in tree_lines if line.endswith("(see above)")]
    assert sum(line.count("train_set") for line in references) == 10 + 10 + 1 - 1  # one mention per edge
    assert "train_set @ r1  <- load_raw_source, run 1" in text
    assert "ld3m_dm_pixel_ipc10.eval_results @ r4  <- evaluate_ld3m_dm_pixel_ipc10, run 4" in text
    # The runs follow once each: pipeline, environment, git, time, and the command that repeats the run.
    run_lines = lines[lines.index("runs:") + 1:]
    assert len(run_lines) == 5 * 2
    assert ("  run 4  r4: pipelines evaluate, env test, git abc123, started 2026-11-24T10:00:00, params p, "
            "mlflow m4") in run_lines
    assert "        $ kedro run --pipelines=evaluate --env=test --params=evaluate.seeds=3" in run_lines
    assert "note:" not in text  # every dataset at one version


def test_cli_depth_and_json(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(_report_project(tmp_path))
    runner = CliRunner()
    shallow = runner.invoke(cli, ["lineage", "show", "report_table_markdown", "--depth", "1"])
    assert shallow.exit_code == 0, shallow.output
    tree = shallow.output[:shallow.output.index("runs:")]
    assert "random_ipc1.eval_results @ r4  <- evaluate_random_ipc1, run 4  [3 inputs beyond --depth 1]" in tree
    assert "train_set" not in tree and len(tree.splitlines()) == 11
    result = runner.invoke(cli, ["lineage", "show", "report_table_markdown", "--json"])
    assert result.exit_code == 0, result.output
    dag = json.loads(result.output)
    labels = [a["label"] for a in dag["artifacts"]]
    assert len(labels) == len(set(labels)) == 24 and labels[0] == "report_table_markdown @ r5"
    by_label = {a["label"]: a for a in dag["artifacts"]}
    assert by_label["herding_ipc10.distilled_set @ r3"]["inputs"] == ["teacher_model @ r2", "train_set @ r1"]
    assert sorted(dag["runs"]) == ["r1", "r2", "r3", "r4", "r5"]
    assert dag["runs"]["r4"]["env"] == "test"
    assert dag["runs"]["r4"]["kedro_command"] == "kedro run --pipelines=evaluate --env=test --params=evaluate.seeds=3"
    assert lineage_json(trace(load_records(tmp_path), "train_set"))["artifacts"][0]["run"] == "r1"


def test_cli_shows_a_pinned_version_and_explains_unknown_names(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(_project(tmp_path))
    runner = CliRunner()
    result = runner.invoke(cli, ["lineage", "show", "train_set", "--version", "v1"])
    assert result.exit_code == 0 and "train_set @ v1" in result.output and "mlflow m1" in result.output
    result = runner.invoke(cli, ["lineage", "show", "nope"])
    assert result.exit_code != 0 and "prior_model" in result.output


def test_an_unversioned_output_is_taken_from_its_own_run(tmp_path: Path) -> None:
    """A memory dataset (no version) between two nodes belongs to the run that wrote it, not to a later one."""
    for run in ("u1", "u2"):
        _write(tmp_path, run, "evaluate", {
            "fit": {"inputs": {"train_set": "v0"}, "outputs": {"scores": None}},
            "summarise": {"inputs": {"scores": None}, "outputs": {"summary": run}}}, f"m-{run}")
    records = load_records(tmp_path)
    older = trace(records, "summary", "u1")
    (scores,) = older.parents
    assert scores.run["save_version"] == "u1" and scores.node == "fit"
    assert scores.label == "scores @ - (unversioned, run u1)"
    assert scores.parents[0].run is None  # train_set@v0 has no recorded producer
    assert "train_set @ v0  (no recorded producer" in format_tree(older)


def test_kedro_run_command_spells_out_every_option_kedro_reads_back() -> None:
    from kedro.framework.cli.project import run

    run_params = {"pipeline_names": ["ld3m"], "namespaces": ["ld3m_dm_latent_ipc1"], "tags": None,
                  "node_names": (), "from_nodes": None, "to_nodes": None, "from_inputs": None, "to_outputs": None,
                  "load_versions": {"train_set": "2026-11-23T13.40.00.000Z"},
                  "runtime_params": {"ld3m": {"mtt": {"batch_syn": 50}, "fast": True}, "note": "a b"},
                  "runner": "<kedro.runner.parallel_runner.ParallelRunner object at 0x7f1162652650>",
                  "only_missing_outputs": False}
    command = kedro_run_command(run_params, "paper")
    assert command == ("kedro run --pipelines=ld3m --namespaces=ld3m_dm_latent_ipc1 --env=paper "
                       "'--params=ld3m.mtt.batch_syn=50,ld3m.fast=true,note=a b' "
                       "--load-versions=train_set:2026-11-23T13.40.00.000Z --runner=ParallelRunner")
    parsed = run.make_context("run", shlex.split(command)[2:]).params  # kedro's own option parser
    assert parsed["env"] == "paper" and parsed["params"] == run_params["runtime_params"]
    assert parsed["pipelines"] == ["ld3m"] and parsed["namespaces"] == ["ld3m_dm_latent_ipc1"]
    assert parsed["load_versions"] == run_params["load_versions"] and parsed["runner"] == "ParallelRunner"
    # The default runner and no options: the command still names the environment.
    assert kedro_run_command({"runner": "None", "pipeline_names": []}, "local") == "kedro run --env=local"


def test_command_line_shows_the_kedro_entry_point_as_kedro() -> None:
    assert command_line(["/x/.venv/bin/kedro", "run", "--env", "test"]) == "kedro run --env test"
    assert command_line(["python -m kedro", "run", "--params", "a=1 2"]) == "kedro run --params 'a=1 2'"
    assert command_line(["/x/pytest/__main__.py", "-q"]) == "/x/pytest/__main__.py -q"


class _Versioned:
    """The slice of a catalog dataset the lineage hook reads."""

    _version = True
    metadata = None

    def __init__(self, version: str) -> None:
        self.version = version

    def resolve_save_version(self) -> str:
        return self.version


def test_a_run_killed_after_a_save_leaves_that_version_traceable(tmp_path: Path) -> None:
    from diffdistill.hooks import LineageHook

    hook = LineageHook()
    hook.after_context_created(SimpleNamespace(project_path=tmp_path, params={"a": 1}, env="test"))
    hook.after_catalog_created(SimpleNamespace(get=lambda name: _Versioned("v9")), "v9", {})
    hook.before_pipeline_run({"run_id": "v9", "pipeline_names": ["prior"], "env": "test"}, None)
    hook.after_dataset_saved("prior_model", SimpleNamespace(name="build_prior"))
    # SIGKILL here: no after_pipeline_run / on_pipeline_error ever runs.
    (record,) = load_records(tmp_path)
    assert record["status"] == "running" and record["outputs"] == {"prior_model": "v9"}
    assert record["env"] == "test" and record["kedro_command"] == "kedro run --pipelines=prior --env=test"
    tree = trace([record], "prior_model")
    assert (tree.version, tree.node) == ("v9", "build_prior")
    assert "status running" in format_tree(tree)
    hook.after_pipeline_run()  # a run that does finish replaces the record
    (record,) = load_records(tmp_path)
    assert record["status"] == "completed" and "status" not in format_tree(trace([record], "prior_model"))


@pytest.fixture
def sqlite_mlflow(tmp_path: Path):
    """A file-backed MLflow tracking store in tmp_path, restored afterwards."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    client.create_experiment("lineage-test", artifact_location=(tmp_path / "mlruns").as_uri())
    experiment = mlflow.set_experiment("lineage-test")
    yield experiment
    if mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def test_mlflow_kedro_command_tag_carries_env_and_params(tmp_path: Path, sqlite_mlflow) -> None:
    import mlflow
    from kedro_mlflow.framework.hooks.utils import _generate_kedro_command
    from mlflow.tracking import MlflowClient

    from diffdistill.hooks import LineageHook

    run_params = {"run_id": "v7", "env": None, "pipeline_names": ["preprocess"], "namespaces": None, "tags": (),
                  "node_names": (), "from_nodes": [], "to_nodes": [], "from_inputs": [], "to_outputs": [],
                  "load_versions": {}, "runtime_params": {"preprocess": {"seed": 1}}, "only_missing_outputs": False,
                  "runner": "<kedro.runner.sequential_runner.SequentialRunner object at 0x7f0000000000>"}
    # What kedro-mlflow's before_pipeline_run (called just before ours) writes: no --env, no --params.
    theirs = _generate_kedro_command(tags=(), node_names=(), from_nodes=[], to_nodes=[], from_inputs=[],
                                     load_versions={}, pipeline_names=["preprocess"])
    assert theirs == "kedro run --pipeline=preprocess"
    run = mlflow.start_run(experiment_id=sqlite_mlflow.experiment_id)
    mlflow.set_tag("kedro_command", theirs)

    hook = LineageHook()
    # No --env given: the configuration came from the loader's default run environment, which is recorded.
    hook.after_context_created(SimpleNamespace(project_path=tmp_path, params={}, env=None,
                                               config_loader=SimpleNamespace(env=None, default_run_env="local")))
    hook.after_catalog_created(SimpleNamespace(get=lambda name: _Versioned("v7")), "v7", {})
    hook.before_pipeline_run(run_params, None)
    expected = "kedro run --pipelines=preprocess --env=local --params=preprocess.seed=1"
    client = MlflowClient()
    assert client.get_run(run.info.run_id).data.tags["kedro_command"] == expected  # corrected at the start

    hook.after_dataset_saved("train_set", SimpleNamespace(name="load_raw_source"))
    mlflow.end_run()  # kedro-mlflow ends the run before our after_pipeline_run
    hook.after_pipeline_run()
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["kedro_command"] == expected and tags["diffdistill.env"] == "local"
    assert tags["diffdistill.save_version"] == "v7" and tags["diffdistill.command_line"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "lineage")] == ["lineage/v7.json"]
    (record,) = load_records(tmp_path)
    assert record["env"] == "local" and record["kedro_command"] == expected and record["mlflow_run_id"] == run.info.run_id
