"""End to end in the CI environment: the default pipeline (every phase), the report, then the notebook."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.kedro_project import kedro, scratch_project, versions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = scratch_project(tmp_path_factory.mktemp("evaluation"))
    run = kedro(root, "run", "--env", "test")
    (root / "kedro-run.stdout").write_text(run.stdout)
    return root


def test_report_table_has_every_method_and_the_bounds(project: Path) -> None:
    (version,) = versions(project, "data/08_reporting/report/table.md")
    table = (project / "data/08_reporting/report/table.md" / version / "table.md").read_text()
    for row in ("random subset", "herding", "full data (upper bound)", "noise (D3HR)", "latent (LD3M)", "pixel",
                "decoder only", "condition only", "no residual"):
        assert row in table, row
    assert "Not evaluated yet" not in table
    assert "ConvNet" in table and "AlexNet" in table and "unseen mean" in table
    csv = (project / "data/08_reporting/report/table.csv" / version / "table.csv").read_text()
    lines = csv.strip().splitlines()
    assert lines[0] == ("ipc,space,method,protocol,set,seeds,convnet_mean,convnet_std,alexnet_mean,alexnet_std,"
                        "unseen_mean,wall_s,cpu_s,peak_rss_mb,bytes")
    assert len(lines) > 1 + 9
    # every distilled set carries what it cost to make (from this run's lineage); the full-data bound distils nothing
    for line in lines[1:]:
        wall_s, cpu_s, peak_rss_mb, nbytes = line.split(",")[-4:]
        made = line.split(",")[4] != "full"
        assert all(made == (cell != "") for cell in (wall_s, cpu_s, peak_rss_mb, nbytes)), line
        assert not made or (float(wall_s) > 0 and float(peak_rss_mb) > 100 and int(nbytes) > 0), line
    assert {line.split(",")[3] for line in lines[1:]} >= {"dc", "dc_reference", "glad_reference",
                                                          "soft_label_reference"}  # each set under its paper's too
    assert "DD-Ranking scores (Li et al. 2025" in table and "| ld3m_dm_latent | 1 | dc / glad_reference |" in table


LATEST = ("table.md", "table.html", "table.csv", "accuracy.png", "gradient_snr.png", "summary.json")


def test_latest_report_sits_at_fixed_paths_and_the_run_prints_them(project: Path) -> None:
    report = project / "data/08_reporting/report"
    for name in LATEST:
        (version,) = versions(project, f"data/08_reporting/report/{name}")
        assert (report / "latest" / name).read_bytes() == (report / name / version / name).read_bytes(), name
    printed = (project / "kedro-run.stdout").read_text()
    assert "Comparison table (data/08_reporting/report/latest/table.md):" in printed
    assert (report / "latest" / "table.md").read_text().strip() in printed
    for name in LATEST:
        assert f"  data/08_reporting/report/latest/{name}\n" in printed
    assert "kedro viz run --env test" in printed and "mlflow ui --backend-store-uri sqlite:///mlflow.db" in printed


def test_every_distilled_set_has_a_grid_and_results(project: Path) -> None:
    for name in ("random_ipc1", "random_ipc10", "herding_ipc1", "herding_ipc10", "d3hr_ipc1", "d3hr_factorised_ipc10",
                 "ld3m_dm_latent_ipc1"):
        assert versions(project, f"data/07_model_output/{name}/distilled_set.safetensors")
        assert versions(project, f"data/08_reporting/grids/{name}.png")
        assert versions(project, f"data/08_reporting/evaluation/{name}.json")


def test_notebook_loads_the_report_through_the_catalog(project: Path) -> None:
    notebook = nbformat.read(project / "notebooks" / "report.ipynb", as_version=4)
    os.environ["KEDRO_ENV"] = "test"
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(project / "notebooks")}}).execute()
    finally:
        os.environ.pop("KEDRO_ENV")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 1 + 4  # the plot and one grid per set
    assert any("random subset" in o.get("data", {}).get("text/markdown", "") for o in outputs)
    # %load_ext kedro.ipython from notebooks/: MLflow's store stays the project's (conf/*/mlflow.yml).
    assert not (project / "notebooks" / "mlflow.db").exists() and (project / "mlflow.db").is_file()
