"""Node outputs for kedro-mlflow's metric datasets: scalars and per-step histories."""

from __future__ import annotations

from typing import Any


def as_mlflow_metrics(values: dict[str, float], step: int = 0) -> dict[str, dict[str, Any]]:
    """{name: value} -> the {name: {"value", "step"}} form kedro-mlflow's metric datasets take."""
    return {name: {"value": float(value), "step": int(step)} for name, value in values.items()}


def as_mlflow_history(history: dict[str, list[float]]) -> dict[str, list[dict[str, Any]]]:
    """{name: [v0, v1, ...]} -> one MLflow metric per name with one step per entry."""
    return {name: [{"value": float(v), "step": i} for i, v in enumerate(values)]
            for name, values in history.items() if values}
