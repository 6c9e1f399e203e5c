"""Project hooks: runtime defaults, and the lineage record and MLflow attachments of every run.

`LineageHook` feeds `diffdistill.lineage.LineageRecorder` with the catalog's versions of every dataset read and
written per node, what each node cost (wall / CPU seconds, peak memory; also MLflow metrics `cost.<node>.<key>`)
and the bytes each save wrote, attaches opted-in small artifacts to the MLflow run, and tags the run with its lineage record
and the full command line (`kedro_command`, which kedro-mlflow writes without `--env` and `--params`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from diffdistill.lineage import LineageRecorder, command_line

logger = logging.getLogger(__name__)


class RuntimeHook:
    """Offline, telemetry-free defaults for every run (also when started from Python, not make)."""

    @hook_impl(tryfirst=True)  # before any hook reads context.params (which builds the pipelines)
    def after_context_created(self, context: Any) -> None:
        from diffdistill.pipelines.graph import set_run_environment

        set_run_environment(context.env)  # before the pipelines are built: they read the env's graph keys
        _anchor_project_path(Path(context.project_path))  # before kedro-mlflow reads mlflow.yml
        for key, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true",
                           "MLFLOW_DISABLE_TELEMETRY": "true", "KEDRO_DISABLE_TELEMETRY": "1"}.items():
            os.environ.setdefault(key, value)
        # The loader's parameters (runtime --params merged in), not context.params: in kedro 1.x that validates them
        # against every pipeline's typed requirements, building the graph, which light commands should not pay.
        params = context.config_loader["parameters"]
        threads = params.get("torch_threads")
        if threads is not None:
            import torch

            if not isinstance(threads, int) or threads < 1:
                raise ValueError(f"parameter torch_threads={threads!r} must be null or an int >= 1")
            torch.set_num_threads(threads)
        precision = params.get("float32_matmul_precision")
        if precision is not None:
            import torch

            if precision not in ("highest", "high", "medium"):
                raise ValueError(f"parameter float32_matmul_precision={precision!r} must be null, 'highest', 'high' "
                                 "(TF32 tensor cores on CUDA) or 'medium'")
            torch.set_float32_matmul_precision(precision)


PROJECT_PATH_RESOLVER = "project_path"


def _anchor_project_path(project_path: Path) -> None:
    """`${project_path:}` in configuration is this session's project root.

    mlflow.yml's `sqlite:///${project_path:}/mlflow.db` then names one database whatever the working directory:
    a plain `sqlite:///mlflow.db` is relative to the process's cwd, so a notebook kernel (cwd notebooks/)
    created a second, stray mlflow.db there.
    """
    from omegaconf import OmegaConf

    resolved = project_path.resolve().as_posix()
    OmegaConf.register_new_resolver(PROJECT_PATH_RESOLVER, lambda: resolved, replace=True)


def _configuration_env(context: Any) -> str | None:
    """The environment a context's configuration comes from: its `env`, else the loader's default run env."""
    loader = getattr(context, "config_loader", None)
    return getattr(context, "env", None) or getattr(loader, "default_run_env", None) or None


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
        self._recorder: LineageRecorder | None = None
        self._catalog: Any = None
        self._pipeline: Any = None
        self._mlflow_run_id: str | None = None
        self._env: str | None = None
        self._context: Any = None
        self._versions: tuple[str, dict[str, str]] | None = None
        self._started: dict[str, tuple[float, float]] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        # context.params is read when a run starts, not here: in kedro 1.x it builds every pipeline (typed
        # parameter validation), which commands that run nothing (`catalog list-patterns`) should not pay.
        self._context, self._recorder, self._catalog, self._pipeline, self._mlflow_run_id = (
            context, None, None, None, None)
        self._env = _configuration_env(context)

    @hook_impl
    def after_catalog_created(self, catalog: Any, save_version: str, load_versions: dict[str, str]) -> None:
        self._catalog, self._versions = catalog, (save_version, load_versions)

    def _start_recorder(self) -> None:
        context = self._context
        try:
            params = dict(context.params) if context is not None else {}
        except Exception:  # params that fail to resolve are reported by Kedro itself
            params = {}
        self._recorder = LineageRecorder(Path(context.project_path) if context is not None else Path.cwd(), params)
        if self._versions is not None:
            self._recorder.start(*self._versions)

    def _active(self) -> bool:
        return self._recorder is not None and bool(self._recorder.record)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any) -> None:
        self._start_recorder()
        self._pipeline = pipeline
        self._mlflow_run_id = _active_mlflow_run_id()
        if self._active():
            self._recorder.run_started(run_params, self._mlflow_run_id, env=self._env, argv=sys.argv)
            # kedro-mlflow's before_pipeline_run (called before this one) has just set its own `kedro_command`;
            # correct it now, so a run killed before its end carries the full command line too.
            _tag_mlflow_run(self._mlflow_run_id, self._recorder.record)

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        if self._active():
            self._started[node.name] = node_clock()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        start = self._started.pop(node.name, None)
        if not self._active() or start is None:
            return
        cost = node_cost(start)
        self._recorder.node_finished(node.name, cost)
        _log_cost_metrics(self._mlflow_run_id or _active_mlflow_run_id(), node.name, cost)

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, node: Any) -> None:
        if not self._active() or dataset_name.startswith("params:") or dataset_name == "parameters":
            return
        self._recorder.loaded(dataset_name, node.name, _dataset_version(self._catalog, dataset_name, load=True))

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node: Any) -> None:
        if not self._active():
            return
        if self._mlflow_run_id is None:
            self._mlflow_run_id = _active_mlflow_run_id()
        self._recorder.saved(dataset_name, node.name, _dataset_version(self._catalog, dataset_name, load=False),
                             self._mlflow_run_id, _saved_bytes(self._catalog, dataset_name))
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

    def _write(self, status: str) -> None:
        if not self._active():
            return
        if self._pipeline is not None:
            self._recorder.fill_from_graph(self._pipeline.nodes, lambda name: _dataset_version(
                self._catalog, name, load=True), status)
        record, path = self._recorder.persist(status)
        _tag_mlflow_run(self._mlflow_run_id, record, path)
        self._recorder.record = {}


def node_clock() -> tuple[float, float]:
    """(wall, process CPU) seconds now; resets the CUDA peak-memory counter when CUDA is in use."""
    torch = sys.modules.get("torch")  # never import torch here: a node that does not use it pays nothing
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    return time.perf_counter(), time.process_time()


def node_cost(start: tuple[float, float]) -> dict[str, float | None]:
    """What ran since `start` (`node_clock()`): wall seconds; CPU seconds of this process (every thread: with the
    ThreadRunner, concurrent nodes share it); the process's peak resident memory so far (a high-water mark: a
    node's own peak is at most this); the CUDA peak allocated since `start` (None without CUDA)."""
    import resource

    wall, cpu = start
    torch = sys.modules.get("torch")
    cuda = (torch.cuda.max_memory_allocated() / 2**20
            if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
            "peak_rss_mb": round(peak_kb / 1024, 1), "cuda_peak_mb": None if cuda is None else round(cuda, 1)}


def _log_cost_metrics(run_id: str | None, node: str, cost: dict[str, float | None]) -> None:
    if run_id is None:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        for key, value in cost.items():
            if value is not None:
                client.log_metric(run_id, f"cost.{node}.{key}", float(value))
    except Exception as exc:  # a tracking failure must not fail the run that produced the data
        logger.warning("Could not log the cost of %s to MLflow: %s", node, exc)


def _saved_bytes(catalog: Any, name: str) -> int | None:
    try:
        path = _saved_path(catalog.get(name))
    except Exception:  # a dataset the catalog cannot build has no files to measure
        return None
    if path is None or not path.exists():
        return None
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    sidecar = path.with_name(path.name + ".json")  # a TensorBundle's metadata sidecar belongs to the artifact
    return path.stat().st_size + (sidecar.stat().st_size if sidecar.is_file() else 0)


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


def _run_tags(record: dict[str, Any]) -> dict[str, str]:
    """The MLflow tags of a run's lineage record; `kedro_command` replaces kedro-mlflow's own, which drops
    `--env`, `--params`, `--namespaces` and `--runner` (kedro_mlflow.framework.hooks.utils._generate_kedro_command)."""
    return {
        "kedro_command": str(record.get("kedro_command")),
        "diffdistill.command_line": command_line(record.get("argv") or []),
        "diffdistill.env": str(record.get("env")),
        "diffdistill.git_sha": str(record.get("git_sha")),
        "diffdistill.git_dirty": str(record.get("git_dirty")),
        "diffdistill.save_version": str(record.get("save_version")),
        "diffdistill.params_hash": str(record.get("params_hash")),
    }


def _tag_mlflow_run(run_id: str | None, record: dict[str, Any], path: Path | None = None) -> None:
    """Tag the MLflow run with its lineage (and attach the record file at `path`, once the run is over)."""
    if run_id is None:
        return
    try:
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        client = MlflowClient()
        for key, value in _run_tags(record).items():
            if len(value) > MAX_TAG_VAL_LENGTH:  # the lineage record keeps the whole value
                value = value[:MAX_TAG_VAL_LENGTH - 40] + " ... (cut; full value in the lineage record)"
            client.set_tag(run_id, key, value)
        if path is not None:
            client.log_artifact(run_id, str(path), artifact_path="lineage")
    except Exception as exc:  # tracking must never lose the run's artifacts
        logger.warning("Could not attach lineage to MLflow run %s: %s", run_id, exc)
