"""Quiet, informative logs: no third-party warning on a normal run, one teacher per project, and commands that run
nothing heavy import neither diffusers nor the prior."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.validation.type_extractor import TypeExtractor
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset

from tests.kedro_project import PROJECT_ROOT, kedro, scratch_project

PHASES = ("preprocess", "teacher", "baselines", "prior", "latents", "gaussians", "d3hr", "experts", "ld3m", "evaluate",
          "report")


def _pipelines(monkeypatch: pytest.MonkeyPatch) -> dict:
    import importlib

    monkeypatch.chdir(PROJECT_ROOT)  # graph-building keys are read from the project's conf
    return {phase: importlib.import_module(f"diffdistill.pipelines.{phase}").create_pipeline() for phase in PHASES}


def test_the_teacher_trains_only_in_its_own_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    pipelines = _pipelines(monkeypatch)
    with_teacher = sorted(p for p, pipe in pipelines.items() if any(n.name == "train_teacher" for n in pipe.nodes))
    assert with_teacher == ["teacher"]
    for phase in ("baselines", "prior", "d3hr", "evaluate"):  # they read the saved teacher
        assert "teacher_model" in pipelines[phase].inputs(), phase
    everything = sum(pipelines.values(), pipelines["preprocess"])
    assert [n.name for n in everything.nodes].count("train_teacher") == 1


def test_every_node_signature_resolves_for_kedros_parameter_validation(monkeypatch, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="kedro.validation")
    TypeExtractor(_pipelines(monkeypatch)).extract_types_from_pipelines()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_metric_datasets_keep_their_catalog_entries(caplog: pytest.LogCaptureFixture) -> None:
    """kedro-mlflow re-creates a metrics dataset without `prefix` at every run (a WARNING, and its metadata lost)."""
    conf = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="test")["catalog"]
    catalog = DataCatalog.from_config(conf)
    metrics = {name: ds for name, ds in catalog.items() if isinstance(ds, MlflowMetricsHistoryDataset)}
    assert {"data_metrics", "teacher_metrics", "prior_metrics", "latents_metrics"} <= set(metrics)
    caplog.set_level(logging.WARNING)
    MlflowHook().after_catalog_created(catalog=catalog, conf_catalog=conf, conf_creds={}, parameters={},
                                       save_version="v", load_versions={})
    assert not [r.getMessage() for r in caplog.records if "Replacing dataset" in r.getMessage()]
    for name, dataset in metrics.items():
        assert catalog[name] is dataset and dataset._prefix == name and dataset.metadata["kedro-viz"], name


LIGHT = """
import sys
from pathlib import Path
from kedro.framework.project import configure_project
import diffdistill.cli, diffdistill.settings  # `kedro --help`, `kedro lineage show`: the CLI, settings and hooks
after_cli = {"torch", "diffusers", "mlflow"} & set(sys.modules)
configure_project("diffdistill")
from diffdistill.pipeline_registry import register_pipelines
register_pipelines()  # `kedro registry list` builds every pipeline
print(sorted(after_cli), sorted({"diffusers", "mlflow", "scipy"} & set(sys.modules)))
"""


def test_the_cli_and_the_graph_import_no_prior_and_no_mlflow() -> None:
    result = subprocess.run([sys.executable, "-c", LIGHT], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=300, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[] []", result.stdout + result.stderr


@pytest.mark.slow
def test_a_preprocess_run_prints_no_warning_and_few_lines(tmp_path: Path) -> None:
    root = scratch_project(tmp_path)
    result = kedro(root, "run", "--pipelines", "preprocess", "--env", "test",
                   env_overrides={"PYTHONWARNINGS": None, "COLUMNS": "120"})  # warnings shown, as for a user
    output = result.stdout + result.stderr
    assert "WARNING" not in output and "Warning" not in output, output
    assert "No typed parameter requirements" not in output and "Replacing dataset" not in output
    assert len(output.strip().splitlines()) < 25, output
    assert "Completed 2 out of 2 tasks" in output  # quiet, not silent
