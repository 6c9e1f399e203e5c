"""The lineage record of one run, kept as the run goes and rewritten atomically after every save.

It stores the git SHA (+ dirty flag), the save version (= run id), the resolved load version of every dataset
read and the version of every dataset written, per node, the parameters hash and the MLflow run id, in
`<project>/data/lineage/<save_version>.json`. Rewritten after every save (status "running"), so a run killed
later still leaves every version it saved traceable; finished with status "completed" or "failed". No Kedro:
the hook hands in names, versions and the pipeline's nodes.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diffdistill.data.atomic import write_json_atomic
from diffdistill.workdir import fingerprint

LINEAGE_DIR = Path("data") / "lineage"


def git_state(project_path: Path) -> dict[str, Any]:
    """Current commit and whether the work tree differs from it (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=project_path, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": None if status is None else bool(status)}


def params_hash(params: dict[str, Any]) -> str:
    return fingerprint(params)


class LineageRecorder:
    """Accumulates one run's record; thread-safe (ThreadRunner reports datasets from several threads)."""

    def __init__(self, project_path: Path, params: dict[str, Any]) -> None:
        self.project_path, self.params = Path(project_path), params
        self.record: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self, save_version: str, load_versions: dict[str, str] | None) -> None:
        self.record = {"save_version": save_version, "pinned_load_versions": dict(load_versions or {}),
                       "created_at": datetime.now(UTC).isoformat(), **git_state(self.project_path),
                       "params_hash": params_hash(self.params), "inputs": {}, "outputs": {}, "nodes": {}}

    def run_started(self, run_params: dict[str, Any], mlflow_run_id: str | None) -> None:
        self.record.update(run_id=run_params.get("run_id") or run_params.get("session_id"),
                           pipeline_names=run_params.get("pipeline_names") or [run_params.get("pipeline_name")],
                           env=run_params.get("env"), runtime_params=run_params.get("runtime_params") or {},
                           mlflow_run_id=mlflow_run_id)

    def _node(self, node: str) -> dict[str, Any]:
        return self.record["nodes"].setdefault(node, {"inputs": {}, "outputs": {}})

    def loaded(self, dataset: str, node: str, version: str | None) -> None:
        with self._lock:
            self.record["inputs"].setdefault(dataset, version)
            self._node(node)["inputs"][dataset] = version

    def saved(self, dataset: str, node: str, version: str | None, mlflow_run_id: str | None) -> None:
        with self._lock:
            self.record["outputs"][dataset] = version
            self._node(node)["outputs"][dataset] = version
            self.record["mlflow_run_id"] = mlflow_run_id
            self.persist("running")

    def fill_from_graph(self, nodes: Iterable[Any], version_of: Callable[[str], str | None], status: str) -> None:
        """Nodes whose dataset hooks ran in another process (ParallelRunner) are recorded from the graph.

        Their outputs are the datasets that now have a version equal to this run's save version (all of
        them for a completed run); their inputs carry the version the catalog resolves to after the run.
        """
        save_version = self.record["save_version"]
        with self._lock:
            for node in nodes:
                if node.name in self.record["nodes"]:
                    continue
                outputs = {name: version_of(name) for name in node.outputs}
                outputs = {name: version for name, version in outputs.items() if version == save_version}
                if status != "completed" and not outputs:
                    continue  # a failed run may not have reached this node
                inputs = {name: version_of(name) for name in node.inputs
                          if not name.startswith("params:") and name != "parameters"}
                self.record["nodes"][node.name] = {"inputs": inputs, "outputs": outputs, "recorded_from": "graph"}
                for name, version in inputs.items():
                    self.record["inputs"].setdefault(name, version)
                self.record["outputs"].update(outputs)

    def persist(self, status: str) -> tuple[dict[str, Any], Path]:
        """Write the record so far to data/lineage/<save_version>.json (atomically)."""
        record = {**self.record, "status": status}
        # Only versioned artifacts take part in lineage; memory datasets have no version.
        record["inputs"] = {k: v for k, v in record["inputs"].items() if k not in record["outputs"]}
        path = self.project_path / LINEAGE_DIR / f"{record['save_version']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record, indent=2, sort_keys=True, default=str)
        return record, path
