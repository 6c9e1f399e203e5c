"""End to end: `kedro run --pipelines preprocess` in the CI environment, versions, pinning, lineage, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffdistill.datasets import TensorBundleDataset
from tests.kedro_project import kedro, scratch_project, versions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = scratch_project(tmp_path_factory.mktemp("preprocess"))
    kedro(root, "run", "--pipelines", "preprocess", "--env", "test")
    kedro(root, "run", "--pipelines", "preprocess", "--env", "test", "--params", "preprocess.seed=1")
    return root


def test_two_runs_give_two_versions_with_different_splits(project: Path) -> None:
    saved = versions(project, "data/03_primary/train_set.safetensors")
    assert len(saved) == 2
    first, second = (TensorBundleDataset(filepath=str(project / "data/03_primary/train_set.safetensors" / v
                                                       / "train_set.safetensors")).load() for v in saved)
    assert first.images.dtype == torch.uint8 and first.images.shape[1:] == (1, 16, 16)
    assert first.meta["class_names"] == [str(d) for d in range(10)]
    assert not torch.equal(first.images, second.images)  # seed 1 draws another split


def test_lineage_show_prints_the_chain(project: Path) -> None:
    out = kedro(project, "lineage", "show", "train_set").stdout
    assert "train_set @" in out and "load_raw_source" in out and "mlflow" in out
    # The latest train_set comes from the second run: its environment and the command that repeats it.
    assert "pipelines preprocess, env test" in out
    assert "$ kedro run --pipelines=preprocess --env=test --params=preprocess.seed=1" in out
    records = sorted((project / "data" / "lineage").glob("*.json"))
    assert len(records) == 2
    record = json.loads(records[-1].read_text())
    assert record["status"] == "completed" and record["outputs"]["train_set"] == record["save_version"]
    assert "git_sha" in record and record["params_hash"]


def test_every_node_records_its_cost_and_every_save_its_bytes(project: Path) -> None:
    record = json.loads(sorted((project / "data" / "lineage").glob("*.json"))[-1].read_text())
    node = record["nodes"]["load_raw_source"]
    cost = node["cost"]
    assert cost["wall_s"] > 0 and cost["cpu_s"] > 0 and cost["peak_rss_mb"] > 50 and "cuda_peak_mb" not in cost
    version = record["save_version"]
    train = project / "data/03_primary/train_set.safetensors" / version / "train_set.safetensors"
    sidecar = train.with_name(train.name + ".json")
    assert node["output_bytes"]["train_set"] == train.stat().st_size + sidecar.stat().st_size
    out = json.loads(kedro(project, "lineage", "cost", "train_set", "--json").stdout)
    assert out[0]["wall_s"] == cost["wall_s"] and out[0]["bytes"] == node["output_bytes"]["train_set"]
    assert out[0]["nodes"] == 1 and out[0]["nodes_without_cost"] == 0
    line = kedro(project, "lineage", "cost", "train_set").stdout.strip()
    assert line.startswith(f"train_set @ {version}: ") and "s CPU over 1 nodes" in line and "stored " in line
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = MlflowClient().get_run(record["mlflow_run_id"])
    assert run.data.metrics["cost.load_raw_source.wall_s"] == pytest.approx(cost["wall_s"])


def test_mlflow_run_has_params_metrics_and_the_data_report(project: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("diffdistill-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    run = runs[0]
    assert run.data.params["preprocess.source"] == "digits"
    assert run.data.metrics["data_metrics.train_images"] > 0
    assert run.data.tags["diffdistill.save_version"]
    # kedro-mlflow's own tag drops --env and --params; the project's hook writes the full command.
    assert {r.data.tags["kedro_command"] for r in runs} == {
        "kedro run --pipelines=preprocess --env=test",
        "kedro run --pipelines=preprocess --env=test --params=preprocess.seed=1"}
    assert run.data.tags["diffdistill.env"] == "test"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "data_report.json" in artifacts and "lineage" in artifacts


def test_load_versions_pins_an_older_input(project: Path) -> None:
    older = versions(project, "data/03_primary/train_set.safetensors")[0]
    result = kedro(project, "run", "--pipelines", "preprocess", "--env", "test", "--nodes", "summarise_data_report",
                   "--load-versions", f"data_report:{older}")
    assert result.returncode == 0
    record = json.loads(sorted((project / "data" / "lineage").glob("*.json"))[-1].read_text())
    assert record["inputs"]["data_report"] == older


def test_cifar10_environment_reads_the_shared_jpeg_copy(shared_data: Path, tmp_path: Path) -> None:
    root = scratch_project(tmp_path)
    kedro(root, "run", "--pipelines", "preprocess", "--env", "cifar10",
          "--params", f"preprocess.root={shared_data / 'cifar10'},preprocess.max_per_class=20")
    # conf/cifar10/globals.yml: this dataset's artifacts live in data/cifar10, apart from the digits'
    (version,) = versions(root, "data/cifar10/03_primary/train_set.safetensors")
    train = TensorBundleDataset(filepath=str(root / "data/cifar10/03_primary/train_set.safetensors" / version
                                             / "train_set.safetensors")).load()
    assert train.images.shape == (200, 3, 32, 32) and train.meta["class_names"][0] == "airplane"
