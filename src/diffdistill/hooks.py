"""Project hooks: runtime defaults and the lineage record of every run.

The lineage record answers "which artifact versions produced this one": for each run it stores the
git SHA (+ dirty flag), the save version (= run id), the resolved load version of every dataset read,
the version of every dataset written, per node, the parameters hash and the MLflow run id. It is
written to `data/lineage/<save_version>.json` and attached to the MLflow run as tags + artifact.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from diffdistill.data.atomic import write_json_atomic
from diffdistill.workdir import fingerprint

logger = logging.getLogger(__name__)

LINEAGE_DIR = Path("data") / "lineage"


class RuntimeHook:
    """Offline, telemetry-free defaults for every run (also when started from Python, not make)."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        for key, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true",
                           "MLFLOW_DISABLE_TELEMETRY": "true", "KEDRO_DISABLE_TELEMETRY": "1"}.items():
            os.environ.setdefault(key, value)
        threads = context.params.get("torch_threads")
        if threads is not None:
            import torch

            if not isinstance(threads, int) or threads < 1:
                raise ValueError(f"parameter torch_threads={threads!r} must be null or an int >= 1")
            torch.set_num_threads(threads)
        precision = context.params.get("float32_matmul_precision")
        if precision is not None:
            import torch

            if precision not in ("highest", "high", "medium"):
                raise ValueError(f"parameter float32_matmul_precision={precision!r} must be null, 'highest', 'high' "
                                 "(TF32 tensor cores on CUDA) or 'medium'")
            torch.set_float32_matmul_precision(precision)


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


def _dataset_version(catalog: Any, name: str, *, load: bool) -> str | None:
    try:
        dataset = catalog.get(name)
    except Exception:  # a dataset the catalog cannot build has no version to record
        return None
    if dataset is None or not getattr(dataset, "_version", None):
        return None
    try:
        return dataset.resolve_load_version() if load else dataset.resolve_save_version()
    except Exception:
        return None


class LineageHook:
    """Records inputs/outputs and their versions per node; writes one JSON record per run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ThreadRunner calls dataset hooks from several threads
        self._reset()

    def _reset(self) -> None:
        self._catalog: Any = None
        self._project_path = Path.cwd()
        self._params: dict[str, Any] = {}
        self._record: dict[str, Any] = {}
        self._mlflow_run_id: str | None = None
        self._pipeline: Any = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._reset()
        self._project_path = Path(context.project_path)
        try:
            self._params = dict(context.params)
        except Exception:  # params that fail to resolve are reported by Kedro itself
            self._params = {}

    @hook_impl
    def after_catalog_created(self, catalog: Any, save_version: str, load_versions: dict[str, str]) -> None:
        self._catalog = catalog
        self._record = {
            "save_version": save_version,
            "pinned_load_versions": dict(load_versions or {}),
            "created_at": datetime.now(UTC).isoformat(),
            **git_state(self._project_path),
            "params_hash": params_hash(self._params),
            "inputs": {},
            "outputs": {},
            "nodes": {},
        }

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any) -> None:
        self._pipeline = pipeline
        self._record["run_id"] = run_params.get("run_id") or run_params.get("session_id")
        self._record["pipeline_names"] = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
        self._record["env"] = run_params.get("env")
        self._record["runtime_params"] = run_params.get("runtime_params") or {}
        self._mlflow_run_id = _active_mlflow_run_id()
        self._record["mlflow_run_id"] = self._mlflow_run_id

    def _node_entry(self, node: Any) -> dict[str, Any]:
        return self._record["nodes"].setdefault(node.name, {"inputs": {}, "outputs": {}})

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, node: Any) -> None:
        if not self._record or dataset_name.startswith("params:") or dataset_name == "parameters":
            return
        version = _dataset_version(self._catalog, dataset_name, load=True)
        with self._lock:
            self._record["inputs"].setdefault(dataset_name, version)
            self._node_entry(node)["inputs"][dataset_name] = version

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node: Any) -> None:
        if not self._record:
            return
        version = _dataset_version(self._catalog, dataset_name, load=False)
        if self._mlflow_run_id is None:
            self._mlflow_run_id = _active_mlflow_run_id()
        with self._lock:
            self._record["outputs"][dataset_name] = version
            self._node_entry(node)["outputs"][dataset_name] = version
            self._record["mlflow_run_id"] = self._mlflow_run_id
            # Rewritten after every save: a run killed later (SIGKILL runs no hook) still leaves every
            # version it saved traceable, under status "running".
            self._persist("running")
        self._log_artifact(dataset_name)

    def _log_artifact(self, dataset_name: str) -> None:
        """Attach a saved file to the MLflow run when its catalog entry asks for it.

        Catalog entries opt in with `metadata: {diffdistill: {mlflow_artifact: true}}` (small files only:
        reports, grids, tables; never latents or models).
        """
        try:
            dataset = self._catalog.get(dataset_name)
        except Exception:
            return
        options = ((getattr(dataset, "metadata", None) or {}).get("diffdistill") or {})
        if not options.get("mlflow_artifact") or self._mlflow_run_id is None:
            return
        path = _saved_path(dataset)
        if path is None or not path.exists():
            return
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            folder = options.get("artifact_path")
            if path.is_dir():
                client.log_artifacts(self._mlflow_run_id, str(path), artifact_path=folder or path.name)
            else:
                client.log_artifact(self._mlflow_run_id, str(path), artifact_path=folder)
        except Exception as exc:  # a tracking failure must not fail the run that produced the data
            logger.warning("Could not log %s to MLflow: %s", dataset_name, exc)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._write("completed")

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._write("failed")

    def _fill_from_pipeline(self, status: str) -> None:
        """Nodes whose dataset hooks ran in another process (ParallelRunner) are recorded from the graph.

        Their outputs are the datasets that now have a version equal to this run's save version (all of
        them for a completed run); their inputs carry the version the catalog resolves to after the run.
        """
        pipeline = self._pipeline
        if pipeline is None:
            return
        save_version = self._record["save_version"]
        for node in pipeline.nodes:
            if node.name in self._record["nodes"]:
                continue
            outputs = {name: _dataset_version(self._catalog, name, load=True) for name in node.outputs}
            outputs = {name: version for name, version in outputs.items() if version == save_version}
            if status != "completed" and not outputs:
                continue  # a failed run may not have reached this node
            inputs = {name: _dataset_version(self._catalog, name, load=True) for name in node.inputs
                      if not name.startswith("params:") and name != "parameters"}
            self._record["nodes"][node.name] = {"inputs": inputs, "outputs": outputs, "recorded_from": "graph"}
            for name, version in inputs.items():
                self._record["inputs"].setdefault(name, version)
            self._record["outputs"].update(outputs)

    def _write(self, status: str) -> None:
        if not self._record:
            return
        with self._lock:
            self._fill_from_pipeline(status)
        record, path = self._persist(status)
        _tag_mlflow_run(self._mlflow_run_id, record, path)
        self._record = {}

    def _persist(self, status: str) -> tuple[dict[str, Any], Path]:
        """Write the record so far to data/lineage/<save_version>.json (atomically)."""
        record = {**self._record, "status": status}
        # Only versioned artifacts take part in lineage; memory datasets have no version.
        record["inputs"] = {k: v for k, v in record["inputs"].items() if k not in record["outputs"]}
        directory = self._project_path / LINEAGE_DIR
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{record['save_version']}.json"
        write_json_atomic(path, record, indent=2, sort_keys=True, default=str)
        return record, path


def _saved_path(dataset: Any) -> Path | None:
    filepath = getattr(dataset, "_filepath", None)
    if filepath is None:
        return None
    if getattr(dataset, "_version", None):
        return Path(str(dataset._get_versioned_path(dataset.resolve_save_version())))
    return Path(str(filepath))


def _active_mlflow_run_id() -> str | None:
    try:
        import mlflow
    except ImportError:
        return None
    run = mlflow.active_run()
    return run.info.run_id if run else None


def _tag_mlflow_run(run_id: str | None, record: dict[str, Any], path: Path) -> None:
    if run_id is None:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        tags = {
            "diffdistill.git_sha": str(record.get("git_sha")),
            "diffdistill.git_dirty": str(record.get("git_dirty")),
            "diffdistill.save_version": str(record.get("save_version")),
            "diffdistill.params_hash": str(record.get("params_hash")),
        }
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        client.log_artifact(run_id, str(path), artifact_path="lineage")
    except Exception as exc:  # tracking must never lose the run's artifacts
        logger.warning("Could not attach lineage to MLflow run %s: %s", run_id, exc)
