"""One environment, one graph: the graph-building keys come from the run's environment, never from --params."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from diffdistill.pipelines import graph

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_env(monkeypatch):
    from kedro.framework.startup import bootstrap_project

    monkeypatch.chdir(PROJECT)
    bootstrap_project(PROJECT)  # settings.py (default_run_env), as every kedro command does

    def use(env: str | None) -> None:
        monkeypatch.setattr(graph, "_run_env", {"env": env})
        monkeypatch.delenv("KEDRO_ENV", raising=False)
        monkeypatch.setattr(graph.sys, "argv", ["kedro", "run"])

    return use


def test_the_default_environment_is_the_quick_tour(in_env):
    from diffdistill.pipelines.evaluate.pipeline import evaluated_sets
    from diffdistill.pipelines.experts.pipeline import create_pipeline as experts
    from diffdistill.pipelines.report.pipeline import create_pipeline as report

    in_env(None)  # plain `kedro run`: settings' default_run_env
    assert graph.graph_parameter("ipcs") == [1]
    assert set(evaluated_sets()) == {"random_ipc1", "herding_ipc1", "d3hr_ipc1", "ld3m_dm_latent_ipc1",
                                     "ld3m_dm_pixel_ipc1"}
    assert experts().nodes == []  # no MTT set in the tour: no expert trajectories
    assert [n.name for n in report().nodes] == ["build_report"]  # no no_residual twin: no SNR figure


def test_grid_is_conf_base_and_every_dataset_env_inherits_it(in_env):
    from diffdistill.pipelines.evaluate.pipeline import evaluated_sets

    base = yaml.safe_load((PROJECT / "conf/base/parameters_ld3m.yml").read_text())["ld3m"]["runs"]
    for env, ipcs in (("grid", [1, 10]), ("test", [1, 10]), ("cifar10", [1, 10, 50]), ("fashion_mnist", [1, 10, 50])):
        in_env(env)
        assert graph.graph_parameter("ipcs") == ipcs, env  # the real benchmarks: DC Table 1's IPCs
        assert graph.graph_parameter("ld3m.runs") == base, env
        assert {"ld3m_mtt_pixel_ipc10", "d3hr_factorised_ipc10", "herding_ipc1"} <= set(evaluated_sets()), env


def test_each_dataset_environment_keeps_its_artifacts_apart():
    """Switching `--env` must never read another dataset's latest train_set / teacher / prior: every environment
    whose preprocess reads another source than digits has its own data_root, the one `results collect` reads."""
    from diffdistill.results import data_root_of

    def data_root(env: str) -> str | None:
        path = PROJECT / "conf" / env / "globals.yml"
        return yaml.safe_load(path.read_text()).get("data_root") if path.is_file() else None

    assert data_root("base") == "data" == data_root_of("digits")
    for env_dir in sorted((PROJECT / "conf").iterdir()):
        preprocess = env_dir / "parameters_preprocess.yml"
        source = yaml.safe_load(preprocess.read_text())["preprocess"].get("source") if preprocess.is_file() else None
        if source not in (None, "digits"):
            assert data_root(env_dir.name) == f"data/{env_dir.name}", env_dir.name
    assert data_root_of("cifar10") == data_root("cifar10")
    catalog = "".join(p.read_text() for p in (PROJECT / "conf/base").glob("catalog*.yml"))
    paths = [line.split("filepath:")[1].strip() for line in catalog.splitlines() if "filepath:" in line]
    assert paths and all(p.startswith("${globals:data_root}/") or p == "data/lineage" for p in paths), paths


def test_the_environment_comes_from_the_session_then_kedro_env_then_the_command_line(in_env, monkeypatch):
    in_env(None)
    monkeypatch.setattr(graph.sys, "argv", ["kedro", "run", "--env", "grid"])
    assert graph.run_environment() == "grid"
    monkeypatch.setattr(graph.sys, "argv", ["kedro", "viz", "run", "-e", "test"])
    assert graph.run_environment() == "test"
    monkeypatch.setenv("KEDRO_ENV", "cifar10")
    assert graph.run_environment() == "cifar10"
    graph.set_run_environment("grid")
    assert graph.run_environment() == "grid"


def test_only_graph_keys_are_read_at_build_time(in_env):
    in_env(None)
    with pytest.raises(KeyError, match="not a graph-building key"):
        graph.graph_parameter("evaluate.seeds")
