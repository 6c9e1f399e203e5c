"""Reading lineage records back: which runs and artifact versions produced a given artifact."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffdistill.lineage.record import LINEAGE_DIR


def load_records(project_path: Path) -> list[dict[str, Any]]:
    """All lineage records, oldest first."""
    directory = Path(project_path) / LINEAGE_DIR
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue
    return sorted(records, key=lambda r: str(r.get("save_version")))


@dataclass
class LineageNode:
    dataset: str
    version: str | None
    run: dict[str, Any] | None
    node: str | None
    parents: list[LineageNode] = field(default_factory=list)


def find_producer(records: list[dict[str, Any]], dataset: str, version: str | None) -> tuple[dict | None, str | None]:
    """The run that wrote `dataset` at `version` (the latest one when `version` is None)."""
    for record in reversed(records):
        written = record.get("outputs", {})
        if dataset in written and (version is None or written[dataset] == version):
            return record, written[dataset]
    return None, version


def trace(records: list[dict[str, Any]], dataset: str, version: str | None = None,
          _memo: dict | None = None) -> LineageNode:
    """The chain of upstream artifacts and versions that produced `dataset`, transitively.

    Shared ancestors (a prior read by two later phases) appear under each descendant.
    """
    memo = _memo if _memo is not None else {}
    record, version = find_producer(records, dataset, version)
    key = (dataset, version)
    if key in memo:
        return memo[key]
    if record is None:
        memo[key] = LineageNode(dataset, version, None, None)
        return memo[key]
    node_name, inputs = None, {}
    for name, entry in record.get("nodes", {}).items():
        if dataset in entry.get("outputs", {}):
            node_name, inputs = name, entry.get("inputs", {})
            break
    result = memo[key] = LineageNode(dataset, version, record, node_name)
    for parent, parent_version in sorted(inputs.items()):
        if parent in record.get("outputs", {}):
            parent_version = record["outputs"][parent]  # produced earlier in the same run
        result.parents.append(trace(records, parent, parent_version, memo))
    return result


def format_tree(node: LineageNode, indent: str = "") -> str:
    if node.run is None:
        line = f"{indent}{node.dataset} @ {node.version or '-'}  (no recorded producer: a raw input or an unversioned dataset)"
        return line
    run = node.run
    dirty = " (dirty)" if run.get("git_dirty") else ""
    sha = (run.get("git_sha") or "no-git")[:10]
    # A record still "running" belongs to a run that was killed (or has not finished yet).
    status = "" if run.get("status") in (None, "completed") else f"; status {run.get('status')}"
    line = (f"{indent}{node.dataset} @ {node.version}  <- node {node.node}, run {run.get('save_version')} "
            f"[pipelines {','.join(p for p in run.get('pipeline_names') or [] if p)}; git {sha}{dirty}; "
            f"params {run.get('params_hash')}; mlflow {run.get('mlflow_run_id') or '-'}{status}]")
    lines = [line] + [format_tree(parent, indent + "    ") for parent in node.parents]
    return "\n".join(lines)
