"""The end of a run: after one that wrote the report, the table, the latest paths and how to browse; after any
other, what it wrote. Read from the catalog, so it holds for every runner."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from kedro.io import DataCatalog
from kedro.io.core import Version

from diffdistill.datasets import AtomicJSONDataset, AtomicTextDataset
from diffdistill.run_summary import LISTED, RunSummaryHook

OLD, THIS = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"
TABLE = "| IPC | method | ConvNet |\n|:--|:--|:--|\n| 1 | herding | 87.0 ± 0.5 |\n"


def finish(catalog: DataCatalog, outputs: list[str], root: Path, env: str | None = None) -> str:
    """Run the hook as Kedro does at the end of a run and return what it printed."""
    stream = io.StringIO()
    hook = RunSummaryHook(stream=stream)
    hook.after_catalog_created(save_version=THIS)
    hook.after_pipeline_run(run_params={"project_path": str(root), "env": env},
                            pipeline=SimpleNamespace(all_outputs=lambda: set(outputs)), catalog=catalog)
    return stream.getvalue()


def report_catalog(root: Path) -> DataCatalog:
    report = root / "data" / "08_reporting" / "report"
    table = AtomicTextDataset(filepath=str(report / "table.md"), latest=str(report / "latest" / "table.md"),
                              version=Version(None, THIS),
                              metadata={"diffdistill": {"print_after_run": True}})
    summary = AtomicJSONDataset(filepath=str(report / "summary.json"), latest=str(report / "latest" / "summary.json"),
                                version=Version(None, THIS))
    table.save(TABLE)
    summary.save({"sets": ["herding_ipc1"]})
    return DataCatalog({"report_table_markdown": table, "report_summary": summary})


def test_a_report_run_ends_with_the_table_the_latest_paths_and_how_to_browse(tmp_path: Path) -> None:
    text = finish(report_catalog(tmp_path), ["report_table_markdown", "report_summary"], tmp_path, env="test")
    lines = text.splitlines()
    assert lines[1] == "Comparison table (data/08_reporting/report/latest/table.md):"  # relative to the project
    assert TABLE.strip() in text
    assert "  data/08_reporting/report/latest/summary.json" in lines
    assert "  data/08_reporting/report/latest/table.md" in lines
    assert f"report/summary.json/{THIS}/summary.json" in text
    assert any(line.strip().startswith("kedro viz run --env test ") and "http://127.0.0.1:4141" in line for line in lines)
    assert any(line.strip().startswith("mlflow ui --backend-store-uri ") and "http://127.0.0.1:5000" in line
               for line in lines)


def test_paths_outside_the_project_stay_absolute(tmp_path: Path) -> None:
    elsewhere = tmp_path / "shared" / "report"
    table = AtomicTextDataset(filepath=str(elsewhere / "table.md"), latest=str(elsewhere / "latest" / "table.md"),
                              version=Version(None, THIS), metadata={"diffdistill": {"print_after_run": True}})
    table.save(TABLE)
    text = finish(DataCatalog({"report_table_markdown": table}), ["report_table_markdown"], tmp_path / "project")
    assert f"Comparison table ({elsewhere}/latest/table.md):" in text
    assert "kedro viz run " in text and "--env" not in text


def test_another_run_lists_what_it_wrote_and_skips_older_versions(tmp_path: Path) -> None:
    def dataset(name: str, version: str) -> AtomicJSONDataset:
        return AtomicJSONDataset(filepath=str(tmp_path / "data" / "08_reporting" / f"{name}.json"),
                                 version=Version(None, version))

    dataset("data_report", THIS).save({"n": 1})
    dataset("old_report", OLD).save({"n": 0})  # a version of an earlier run: not this run's
    catalog = DataCatalog({"data_report": dataset("data_report", THIS), "old_report": dataset("old_report", THIS)})
    text = finish(catalog, ["data_report", "old_report", "not_in_catalog"], tmp_path)
    assert f"This run wrote 1 artifact, version {THIS}" in text
    assert "  data/08_reporting/data_report.json" in text.splitlines()
    assert "old_report" not in text and "Comparison table" not in text
    assert "kedro viz run" in text and "mlflow ui --backend-store-uri" in text


def test_many_artifacts_are_counted_per_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    datasets = {}
    for i in range(LISTED + 3):
        folder = "grids" if i % 3 else "evaluation"
        datasets[f"set{i}"] = AtomicJSONDataset(filepath=f"data/08_reporting/{folder}/set{i}.json",
                                                version=Version(None, THIS))
        datasets[f"set{i}"].save({"i": i})
    text = finish(DataCatalog(datasets), list(datasets), tmp_path)
    assert f"This run wrote {LISTED + 3} artifacts" in text
    counts = {line.split()[0]: int(line.split()[1]) for line in text.splitlines() if line.startswith("  data/")}
    assert counts == {"data/08_reporting/evaluation/": 5, "data/08_reporting/grids/": 10}


def test_a_summary_failure_never_fails_the_run(tmp_path: Path, caplog) -> None:
    class Broken:
        def all_outputs(self):
            raise RuntimeError("graph unavailable")

    stream = io.StringIO()
    hook = RunSummaryHook(stream=stream)
    hook.after_catalog_created(save_version=THIS)
    hook.after_pipeline_run(run_params={"project_path": str(tmp_path)}, pipeline=Broken(), catalog=DataCatalog({}))
    assert stream.getvalue() == "" and "Could not summarise the run: graph unavailable" in caplog.text
