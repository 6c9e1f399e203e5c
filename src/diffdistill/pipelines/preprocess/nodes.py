"""Nodes of the `preprocess` pipeline (the raw readers are imported inside the node: building the graph stays
light)."""

from __future__ import annotations

from typing import Any

from diffdistill.data.bundle import TensorBundle
from diffdistill.pipelines.metrics import as_mlflow_metrics


def load_raw_source(params: dict[str, Any]) -> tuple[TensorBundle, TensorBundle, dict[str, Any]]:
    """Read the configured raw source into uint8 N×C×H×W tensors plus a data report."""
    from diffdistill.data.sources import SourceConfig, load_source

    return load_source(SourceConfig.from_dict(params))


def summarise_report(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Scalar figures of the data report, for MLflow."""
    return as_mlflow_metrics({
        "train_images": report["totals"]["train"],
        "test_images": report["totals"]["test"],
        "skipped_files": len(report.get("skipped", [])),
    })
