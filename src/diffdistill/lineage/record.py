"""The lineage record of one run, kept as the run goes and rewritten atomically after every save.

It stores the git SHA (+ dirty flag), the save version (= run id), the environment, the command line as typed
(`argv`) and as the `kedro run` command that repeats the run (`kedro_command`: every option spelled out, `--env`
and `--params` included), the resolved load version of every dataset read and the version of every dataset
written, per node, the parameters hash and the MLflow run id, in `<project>/data/lineage/<save_version>.json`.
Rewritten after every save (status "running"), so a run killed later still leaves every version it saved
traceable; finished with status "completed" or "failed". No Kedro: the hook hands in names, versions and the
pipeline's nodes.
"""

from __future__ import annotations

import json
import re
import shlex
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


# Kedro passes the runner as an instance; its run params keep only `str(instance)`.
_RUNNER_REPR = re.compile(r"^<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-f]+>$")
_LIST_OPTIONS = (("pipeline_names", "--pipelines"), ("namespaces", "--namespaces"), ("tags", "--tags"),
                 ("node_names", "--nodes"), ("from_nodes", "--from-nodes"), ("to_nodes", "--to-nodes"),
                 ("from_inputs", "--from-inputs"), ("to_outputs", "--to-outputs"))


def _dotted(params: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested `--params` (as `kedro run` parses them) back to `key.sub=value` pairs."""
    pairs: list[tuple[str, Any]] = []
    for key, value in params.items():
        if isinstance(value, dict) and value:
            pairs.extend(_dotted(value, f"{prefix}{key}."))
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def _param_value(value: Any) -> str:
    # YAML spellings, which is how `kedro run --params` (OmegaConf) reads them back. A list or mapping (only a
    # `--config` file can pass one) is printed as JSON; on the command line kedro would split it at its commas.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def kedro_run_command(run_params: dict[str, Any], env: str | None) -> str:
    """The `kedro run` command line that repeats a run, from Kedro's run params.

    Every option the run used is spelled out, `--env` always (a run without `--env` used the default run
    environment, which is named here), so the command means the same whatever the default is later.
    """
    args = ["kedro", "run"]
    for key, option in _LIST_OPTIONS:
        values = run_params.get(key) or []
        if isinstance(values, str):
            values = [values]
        if values:
            args.append(f"{option}={','.join(values)}")
    if env:
        args.append(f"--env={env}")
    runtime_params = run_params.get("runtime_params") or {}
    if runtime_params:
        args.append("--params=" + ",".join(f"{k}={_param_value(v)}" for k, v in _dotted(runtime_params)))
    load_versions = run_params.get("load_versions") or {}
    if load_versions:
        args.append("--load-versions=" + ",".join(f"{k}:{v}" for k, v in sorted(load_versions.items())))
    runner = str(run_params.get("runner") or "")
    match = _RUNNER_REPR.match(runner)
    runner = match.group(1) if match else runner
    if runner and runner not in ("None", "SequentialRunner"):
        args.append(f"--runner={runner}")
    if run_params.get("only_missing_outputs"):
        args.append("--only-missing-outputs")
    return shlex.join(args)


def command_line(argv: list[str]) -> str:
    """The process's command line as typed (`sys.argv`), the kedro entry point shown as `kedro`.

    `python -m kedro` leaves `sys.argv[0] == "python -m kedro"` (kedro/__main__.py sets it).
    """
    if not argv:
        return ""
    program = argv[0]
    if program == "python -m kedro" or Path(program).name == "kedro":
        return shlex.join(["kedro", *argv[1:]])
    return shlex.join(argv)


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

    def run_started(self, run_params: dict[str, Any], mlflow_run_id: str | None, *, env: str | None,
                    argv: list[str]) -> None:
        """`env`: the environment the run's configuration came from (the default run env when none was given)."""
        pipeline_names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        self.record.update(run_id=run_params.get("run_id") or run_params.get("session_id"),
                           pipeline_names=list(pipeline_names), namespaces=list(run_params.get("namespaces") or []),
                           env=env, runtime_params=run_params.get("runtime_params") or {},
                           argv=list(argv),
                           kedro_command=kedro_run_command(run_params, env), mlflow_run_id=mlflow_run_id)

    def _node(self, node: str) -> dict[str, Any]:
        return self.record["nodes"].setdefault(node, {"inputs": {}, "outputs": {}})

    def loaded(self, dataset: str, node: str, version: str | None) -> None:
        with self._lock:
            self.record["inputs"].setdefault(dataset, version)
            self._node(node)["inputs"][dataset] = version

    def saved(self, dataset: str, node: str, version: str | None, mlflow_run_id: str | None,
              nbytes: int | None = None) -> None:
        """`nbytes`: the size on disk of what the save wrote (every file of a directory artifact)."""
        with self._lock:
            self.record["outputs"][dataset] = version
            self._node(node)["outputs"][dataset] = version
            if nbytes is not None:
                self._node(node).setdefault("output_bytes", {})[dataset] = int(nbytes)
            self.record["mlflow_run_id"] = mlflow_run_id
            self.persist("running")

    def node_finished(self, node: str, cost: dict[str, float | None]) -> None:
        """What a node cost (`wall_s`, `cpu_s`, `peak_rss_mb`, `cuda_peak_mb`: see `LineageHook`)."""
        with self._lock:
            self._node(node)["cost"] = {k: v for k, v in cost.items() if v is not None}
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
