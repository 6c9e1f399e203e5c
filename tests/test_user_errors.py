"""User errors of `kedro run` answered in one line, before the session starts: no traceback, non-zero exit, nothing
written under data/, no MLflow store created (`diffdistill.user_errors`, the project's `run` command in cli.py)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from kedro.io.core import Version
from kedro.pipeline import Node, Pipeline

from diffdistill.config import ConfigError
from diffdistill.pipelines.graph import GRAPH_KEYS
from diffdistill.user_errors import (
    SECTION_CHECKS,
    UserError,
    check_pipeline_names,
    check_sections,
    one_line_errors,
    phase_names,
    plan_upstream,
    refuse_graph_keys,
)
from tests.kedro_project import PROJECT_ROOT, kedro, scratch_project

# Printed by every kedro command before it runs (Kedro's logging-setup line, MLflow's import-time warning); not the
# refusal's output. The "quiet logs" part of issue #13 removes them; then this filter drops nothing.
STARTUP_RECORDS = ("asloggingconfiguration.", "mlflow/pyfunc/utils/data_validation.py")  # without whitespace
RECORD_START = re.compile(r"^(\[[^\]]*\]\s+|\s+)(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s")


def own_lines(output: str) -> list[str]:
    """The output's non-blank lines but the startup log records (a record: its first line and the indented ones
    after it, as Kedro's rich console wraps them; markers are matched with the wrapping's whitespace removed)."""
    records: list[list[str]] = []
    for line in output.splitlines():
        if RECORD_START.match(line) or not line[:1].isspace() or not records:
            records.append([line])
        else:
            records[-1].append(line)
    kept = [r for r in records if not any(marker in "".join("".join(r).split()) for marker in STARTUP_RECORDS)]
    return [line for record in kept for line in record if line.strip()]


def written(root: Path) -> dict[str, int]:
    """Every file under data/ and the MLflow stores, with its size."""
    paths = [p for p in (root / "data").rglob("*") if p.is_file()]
    paths += [p for p in (root / "mlruns").rglob("*") if p.is_file()] + [p for p in [root / "mlflow.db"] if p.exists()]
    return {str(p.relative_to(root)): p.stat().st_size for p in paths}


def refused(root: Path, *args: str, timeout: float = 600) -> str:
    """Run `kedro run ARGS`; check it is refused in one line and wrote nothing; return that line without `Error: `."""
    before = written(root)
    result = kedro(root, "run", *args, check=False, timeout=timeout)
    output = result.stdout + result.stderr
    lines = own_lines(output)
    assert result.returncode != 0, output
    assert "Traceback" not in output and "╭" not in output, output  # no traceback, plain or rich
    assert len(lines) <= 5, output
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], output
    assert written(root) == before  # nothing saved, no MLflow store created or touched
    return errors[0].removeprefix("Error: ")


@pytest.fixture(scope="module")
def empty_project(tmp_path_factory) -> Path:
    return scratch_project(tmp_path_factory.mktemp("user_errors"))


# --- the refusals, end to end (one per mistake) ---------------------------------------------------------------------

@pytest.mark.slow
def test_unknown_pipeline_suggests_the_close_name(empty_project: Path) -> None:
    message = refused(empty_project, "--pipelines", "preprocss", "--env", "test")
    assert message.startswith("no pipeline named 'preprocss'; did you mean 'preprocess'? pipelines: baselines,")


@pytest.mark.slow
def test_unknown_environment_lists_the_environments(empty_project: Path) -> None:
    message = refused(empty_project, "--pipelines", "preprocess", "--env", "nosuch")
    assert message.startswith("environment 'nosuch' does not exist (no folder conf/nosuch); pass --env with one of: ")
    assert "test" in message.split("one of: ")[1].split(", ") and "base" not in message.split("one of: ")[1]


@pytest.mark.slow
def test_graph_key_in_params_says_where_to_set_it(empty_project: Path) -> None:
    message = refused(empty_project, "--pipelines", "preprocess", "--env", "test", "--params", "ipcs=[0]")
    assert message == ("--params ipcs=[0]: 'ipcs' is read when the pipeline graph is built (it decides which nodes "
                       "exist), before --params apply; set it in conf/test/parameters.yml (or run another --env)")


@pytest.mark.slow
def test_unknown_parameter_key_lists_the_valid_ones(empty_project: Path) -> None:
    message = refused(empty_project, "--pipelines", "preprocess", "--env", "test", "--params", "preprocess.imgsize=16")
    assert message.startswith("unknown key preprocess.imgsize; valid keys: allowed_image_sizes, channels, image_size,")
    assert message.endswith("(given by --params preprocess.imgsize)")


@pytest.mark.slow
def test_badly_typed_parameter_is_named(empty_project: Path) -> None:
    message = refused(empty_project, "--pipelines", "preprocess", "--env", "test", "--params",
                      "preprocess.image_size=abc")
    assert message == "preprocess.image_size='abc' must be an int (given by --params preprocess.image_size)"


@pytest.mark.slow
def test_missing_dataset_folder_says_what_to_install(empty_project: Path, tmp_path: Path) -> None:
    message = refused(empty_project, "--pipelines", "preprocess", "--env", "fashion_mnist", "--params",
                      f"preprocess.root={tmp_path / 'nowhere'}")
    assert message == (f"data root '{tmp_path / 'nowhere'}' (preprocess.root) does not exist; install the Debian "
                       "package dataset-fashion-mnist, or set root to a folder of the IDX files (given by --params "
                       "preprocess.root)")


@pytest.mark.slow
def test_unknown_parameter_section_suggests_the_close_name(empty_project: Path) -> None:
    message = refused(empty_project, "--pipelines", "preprocess", "--env", "test", "--params", "prepocess.seed=1")
    assert message.startswith("--params prepocess: no parameter 'prepocess' in this environment; did you mean "
                              "'preprocess'? top-level parameters: ")


@pytest.mark.slow
def test_missing_upstream_names_the_pipelines_that_write_it(empty_project: Path) -> None:
    # Naming the writers builds every phase's graph (this error path only): minutes on a loaded 2-core machine.
    message = refused(empty_project, "--pipelines", "d3hr", "--env", "test", timeout=1500)
    lacks, command = message.split("; run `kedro run --pipelines ")
    assert lacks == ("--pipelines d3hr reads artifacts with no saved version yet: class_gaussians (written by "
                     "gaussians), prior_model (written by prior), teacher_model (written by teacher), train_set "
                     "(written by preprocess)")
    phases, tail = command.split(" ", 1)
    order = phases.split(",")
    assert tail == "--env test` first"
    assert sorted(order) == ["gaussians", "latents", "preprocess", "prior", "teacher"]  # latents: gaussians' input
    assert order[0] == "preprocess" and order.index("prior") < order.index("latents") < order.index("gaussians")


@pytest.mark.slow
def test_pinned_version_that_does_not_exist_lists_the_saved_ones(tmp_path: Path) -> None:
    import torch

    from diffdistill.data.bundle import TensorBundle
    from diffdistill.datasets import ImageBundleDataset

    root = scratch_project(tmp_path)
    saved = "2026-01-02T03.04.05.006Z"
    split = TensorBundle({"images": torch.zeros(2, 1, 16, 16, dtype=torch.uint8), "labels": torch.tensor([0, 1])},
                         {"class_names": ["0", "1"], "num_classes": 2, "split": "train", "source": "digits"})
    ImageBundleDataset(filepath=str(root / "data/03_primary/train_set.safetensors"),
                       version=Version(None, saved)).save(split)
    message = refused(root, "--pipelines", "teacher", "--env", "test", "--load-versions",
                      "train_set:2020-01-01T00.00.00.000Z")
    assert message == ("--load-versions train_set:2020-01-01T00.00.00.000Z: train_set has no saved version "
                       f"2020-01-01T00.00.00.000Z; saved versions (newest last): {saved}")


# --- the pieces, in process -----------------------------------------------------------------------------------------

def test_known_user_errors_become_one_line_and_bugs_keep_their_traceback() -> None:
    with pytest.raises(click.ClickException, match=r"^ld3m\.lr must be a number$"):
        with one_line_errors():
            raise ConfigError("ld3m.lr must be a number")
    with pytest.raises(click.ClickException, match="^no pipeline"):
        with one_line_errors():
            raise UserError("no pipeline named 'x'")
    with pytest.raises(KeyError):  # a bug is not a user error: it propagates as is
        with one_line_errors():
            raise KeyError("train_set")


def test_phase_names_are_the_pipeline_packages() -> None:
    packages = sorted(p.parent.name for p in (PROJECT_ROOT / "src/diffdistill/pipelines").glob("*/pipeline.py"))
    assert phase_names() == packages
    check_pipeline_names(["__default__", *packages])  # every registered name passes
    with pytest.raises(UserError, match=r"^no pipeline named 'gausians'; did you mean 'gaussians'\?"):
        check_pipeline_names(["preprocess", "gausians"])


@pytest.mark.parametrize("given", [*GRAPH_KEYS, f"{GRAPH_KEYS[0]}.part"])
def test_every_graph_key_and_its_parts_are_refused(given: str) -> None:
    tree: dict = {}
    node = tree
    *parents, leaf = given.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = 1
    key = next(k for k in GRAPH_KEYS if given == k or given.startswith(k + "."))
    with pytest.raises(UserError) as refusal:
        refuse_graph_keys(tree, PROJECT_ROOT / "conf", "test")
    message = str(refusal.value)
    assert message.startswith(f"--params {given}=1: {key!r} is read when the pipeline graph is built")
    assert re.search(r"set it in \S*conf/(test|base)/parameters\w*\.yml", message), message
    refuse_graph_keys({"ld3m": {"iterations": {"dm": 5}}, "preprocess": {"seed": 1}}, PROJECT_ROOT / "conf", "test")


def test_graph_key_refusal_names_the_file_to_edit(monkeypatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    conf = PROJECT_ROOT / "conf"
    for env, where in [("test", "set it in conf/test/parameters.yml "),  # the environment sets it: that file
                       ("local", "set it in conf/local/parameters.yml (the default is in conf/base/parameters.yml) "),
                       (None, "set it in conf/base/parameters.yml ")]:
        with pytest.raises(UserError) as refusal:
            refuse_graph_keys({"ipcs": [0]}, conf, env)
        assert where in str(refusal.value), (env, str(refusal.value))
    with pytest.raises(UserError, match=r"set it in conf/local/parameters_ld3m\.yml \(the default is in conf/base/"):
        refuse_graph_keys({"ld3m": {"runs": []}}, conf, "local")


def test_upstream_plan_credits_the_smallest_writer_and_brings_its_own_inputs() -> None:
    def node(inputs: list[str], outputs: list[str], name: str) -> Node:
        return Node(lambda *a: a, inputs=inputs, outputs=outputs, name=name)

    phases = {
        "make_a": Pipeline([node(["raw"], ["a"], "make_a")]),
        "with_a_inside": Pipeline([node(["raw"], ["a"], "make_a"), node(["a"], ["b"], "make_b")]),
        "make_c": Pipeline([node(["a"], ["c"], "make_c")]),
    }
    written_by, order = plan_upstream(["c", "b"], phases, lambda name: name in {"a", "b", "c"})
    assert written_by == {"c": "make_c", "b": "with_a_inside"}
    assert order == ["make_a", "make_c", "with_a_inside"]  # `a` (needed by make_c) from the smaller phase, first


def test_unknown_requested_pipeline_leaves_the_others_registered(monkeypatch) -> None:
    """`find_pipelines(raise_errors=True)` would raise ImportError for a missing name; the registry then registers
    the phases that exist, so Kedro's own lookup can answer with "did you mean"."""
    from kedro.framework.project import configure_project, pipelines

    from diffdistill.pipelines.graph import set_run_environment

    monkeypatch.chdir(PROJECT_ROOT)
    configure_project("diffdistill")
    set_run_environment("test")
    try:
        pipelines.set_requested(["preprocss", "preprocess"])
        assert sorted(pipelines.keys()) == ["__default__", "preprocess"]
        assert {n.name for n in pipelines["preprocess"].nodes} == {"load_raw_source", "summarise_data_report"}
    finally:
        pipelines.set_requested(None)
        set_run_environment(None)


@pytest.mark.slow
@pytest.mark.parametrize("env", sorted(p.name for p in (PROJECT_ROOT / "conf").iterdir()
                                       if p.is_dir() and p.name != "base"))
def test_every_shipped_environment_passes_the_checks(env: str, monkeypatch) -> None:
    """The checks refuse nothing the project ships: every section of every environment builds."""
    from kedro.config import OmegaConfigLoader

    from diffdistill.data import sources
    from diffdistill.pipelines.graph import set_run_environment

    monkeypatch.chdir(PROJECT_ROOT)
    # Whether this machine holds each environment's dataset (ImageNet, Imagenette) is not the configuration's fault.
    monkeypatch.setattr(sources, "check_root", lambda config: None)
    set_run_environment(env)
    try:
        params = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env=env,
                                   merge_strategy={"parameters": "soft"})["parameters"]
        check_sections(set(SECTION_CHECKS), params, {}, PROJECT_ROOT / "conf", env)
    finally:
        set_run_environment(None)


@pytest.mark.slow
def test_a_fresh_clone_default_run_passes_the_checks(tmp_path: Path, monkeypatch) -> None:
    """`kedro run` on nothing saved yet (the README's first command) reads no artifact it does not make itself."""
    from kedro.framework.project import configure_project, pipelines

    from diffdistill.pipelines.graph import set_run_environment
    from diffdistill.user_errors import check_run

    root = scratch_project(tmp_path)
    monkeypatch.chdir(root)
    configure_project("diffdistill")
    try:
        check_run(root, "diffdistill", {"env": "test", "pipelines": [], "params": {}, "load_versions": {}})
        assert len(pipelines["__default__"].nodes) > 50  # the whole graph was built (and is kept for the run)
    finally:
        pipelines.set_requested(None)
        set_run_environment(None)
    assert written(root) == {}


def test_section_refusals_say_where_the_value_came_from(monkeypatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    conf, bad = PROJECT_ROOT / "conf", {"preprocess": {"source": "digitz"}}
    with pytest.raises(UserError) as refusal:  # SourceConfig's own ValueError counts as a parameter refusal
        check_sections({"preprocess"}, bad, {}, conf, "test")
    assert str(refusal.value).startswith("preprocess.source='digitz' is not a known source; use one of [")
    assert str(refusal.value).endswith("(set in conf/test/parameters*.yml or conf/base/parameters*.yml)")
    with pytest.raises(UserError, match=r"\(given by --params preprocess\.source\)$"):
        check_sections({"preprocess"}, bad, bad, conf, "test")
    check_sections({"device", "ipcs"}, {"device": "cpu"}, {}, conf, "test")  # sections without a check pass


@pytest.mark.slow
def test_ld3m_section_is_checked_per_set_of_the_graph(monkeypatch) -> None:
    from kedro.config import OmegaConfigLoader

    from diffdistill.pipelines.graph import set_run_environment

    monkeypatch.chdir(PROJECT_ROOT)
    set_run_environment("test")
    try:
        params = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="test",
                                   merge_strategy={"parameters": "soft"})["parameters"]
        params["ld3m"]["sampler"]["variant"] = "paper"
        with pytest.raises(UserError, match=r"paper.*reference.*eq12"):  # the old name, refused naming the new ones
            check_sections({"ld3m"}, params, {}, PROJECT_ROOT / "conf", "test")
        del params["ld3m"]["sampler"]["variant"], params["ld3m"]["iterations"]["mtt"]
        with pytest.raises(UserError, match=r"^ld3m\.iterations needs an entry for objective 'mtt'"):
            check_sections({"ld3m"}, params, {}, PROJECT_ROOT / "conf", "test")
    finally:
        set_run_environment(None)
