"""Reading lineage records back: which runs and artifact versions produced a given artifact.

`trace` builds the DAG of an artifact's ancestors: one `LineageNode` per artifact version, shared by every
descendant that read it. `format_tree` prints it depth first, each artifact version once (later occurrences are a
one-line reference), followed by the runs that produced them (pipelines, environment, command line, git state,
time) listed once each; `lineage_json` is the same DAG as plain data; `artifact_cost` what the DAG's nodes cost
(`distilled_set_costs`: for every distilled set).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffdistill.lineage.record import LINEAGE_DIR, command_line


def load_records(project_path: Path) -> list[dict[str, Any]]:
    """All lineage records of a project, oldest first."""
    return read_records(Path(project_path) / LINEAGE_DIR)


def read_records(directory: Path) -> list[dict[str, Any]]:
    """All lineage records in `directory` (a project's `data/lineage`), oldest first; none if it does not exist."""
    directory = Path(directory)
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue
    return sorted(records, key=lambda r: str(r.get("save_version")))


@dataclass(eq=False)
class LineageNode:
    """One artifact version; `run` is the record of the run that wrote it (None: no recorded producer)."""

    dataset: str
    version: str | None
    run: dict[str, Any] | None
    node: str | None
    parents: list[LineageNode] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.version is None and self.run is not None:  # an unversioned output is only known by its run
            return f"{self.dataset} @ - (unversioned, run {self.run.get('save_version')})"
        return f"{self.dataset} @ {self.version or '-'}"


def find_producer(records: list[dict[str, Any]], dataset: str, version: str | None) -> tuple[dict | None, str | None]:
    """The run that wrote `dataset` at `version` (the latest one when `version` is None)."""
    for record in reversed(records):
        written = record.get("outputs", {})
        if dataset in written and (version is None or written[dataset] == version):
            return record, written[dataset]
    return None, version


def _producing_node(record: dict[str, Any], dataset: str) -> tuple[str | None, dict[str, Any]]:
    for name, entry in record.get("nodes", {}).items():
        if dataset in entry.get("outputs", {}):
            return name, entry.get("inputs", {})
    return None, {}


def trace(records: list[dict[str, Any]], dataset: str, version: str | None = None) -> LineageNode:
    """The DAG of upstream artifacts and versions that produced `dataset` (its latest version by default).

    Each (dataset, version) is one node, however many descendants read it. A parent written in the same run is
    that run's output (also when it is unversioned, e.g. a memory dataset); an unversioned parent from outside
    the run has no recorded producer, since no version ties it to one.
    """
    memo: dict[tuple, LineageNode] = {}

    def visit(dataset: str, version: str | None, record: dict[str, Any] | None) -> LineageNode:
        # An unversioned output is only identified by the run that wrote it.
        key = (dataset, version) if version is not None or record is None else (dataset, None, record.get("save_version"))
        if key in memo:
            return memo[key]
        node_name, inputs = _producing_node(record, dataset) if record is not None else (None, {})
        result = memo[key] = LineageNode(dataset, version, record, node_name)  # before the parents: no cycles
        for parent, parent_version in sorted(inputs.items()):
            if parent in record.get("outputs", {}):  # produced earlier in the same run
                result.parents.append(visit(parent, record["outputs"][parent], record))
            elif parent_version is None:
                result.parents.append(visit(parent, None, None))
            else:
                producer, _ = find_producer(records, parent, parent_version)
                result.parents.append(visit(parent, parent_version, producer))
        return result

    record, version = find_producer(records, dataset, version)
    return visit(dataset, version, record)


def _walk(root: LineageNode) -> list[LineageNode]:
    """Every node of the DAG once, depth first, parents in their recorded order."""
    seen: set[int] = set()
    order: list[LineageNode] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        stack.extend(reversed(node.parents))
    return order


def _runs(root: LineageNode) -> list[dict[str, Any]]:
    """The records of the runs that produced the DAG's artifacts, oldest first."""
    runs = {n.run["save_version"]: n.run for n in _walk(root) if n.run is not None}
    return [runs[v] for v in sorted(runs)]


def _run_lines(label: str, run: dict[str, Any]) -> list[str]:
    dirty = " (dirty)" if run.get("git_dirty") else ""
    sha = (run.get("git_sha") or "no git")[:10]
    pipelines = ",".join(p for p in run.get("pipeline_names") or [] if p) or "-"
    # A record still "running" belongs to a run that was killed (or has not finished yet).
    status = "" if run.get("status") in (None, "completed") else f", status {run.get('status')}"
    lines = [f"  {label}  {run.get('save_version')}: pipelines {pipelines}, env {run.get('env') or '-'}, "
             f"git {sha}{dirty}, started {str(run.get('created_at') or '-')[:19]}, params {run.get('params_hash')}, "
             f"mlflow {run.get('mlflow_run_id') or '-'}{status}"]
    typed = command_line(run.get("argv") or [])
    command = run.get("kedro_command")
    if command:
        lines.append(f"        $ {command}")
    if typed and not typed.startswith("kedro run"):  # started from Python (a notebook, a test): say how
        lines.append(f"        (started as: {typed})")
    if not command and not typed:
        lines.append("        (command line not recorded: a record written before it was)")
    return lines


def format_tree(root: LineageNode, depth: int | None = None) -> str:
    """The DAG depth first, each artifact version once, then the runs that produced it.

    An input already printed is not expanded again: a node's repeated inputs share one last line,
    `<dataset>, ...  (see above)` (with `@ <version>` for a dataset the DAG holds at several versions). `depth`
    limits how many levels of inputs are expanded (None: all). A dataset read at several versions is named at the
    end.
    """
    runs = _runs(root)
    run_label = {run["save_version"]: f"run {i}" for i, run in enumerate(runs, 1)}
    versions: dict[str, set[str]] = {}
    for node in _walk(root):
        if node.version is not None:
            versions.setdefault(node.dataset, set()).add(node.version)
    expanded: set[int] = set()

    def reference(node: LineageNode) -> str:
        # The name alone is unambiguous unless the DAG holds the dataset at several versions.
        return node.dataset if node.version is not None and len(versions[node.dataset]) == 1 else node.label

    def describe(node: LineageNode) -> str:
        if node.run is None:
            return f"{node.label}  (no recorded producer: a raw input or an unversioned dataset)"
        return f"{node.label}  <- {node.node or '?'}, {run_label[node.run['save_version']]}"

    def block(node: LineageNode, level: int) -> list[str]:
        """The lines of `node`'s subtree, without the indentation of its place in the tree."""
        if node.parents and depth is not None and level >= depth:
            # Not marked as expanded: a shallower occurrence further down may still show its inputs.
            return [f"{describe(node)}  [{len(node.parents)} inputs beyond --depth {depth}]"]
        expanded.add(id(node))
        children: list[list[str]] = []
        repeats: list[str] = []
        for parent in node.parents:
            if id(parent) in expanded:
                repeats.append(reference(parent))
            else:
                children.append(block(parent, level + 1))
        if repeats:
            children.append([f"{', '.join(repeats)}  (see above)"])
        lines = [describe(node)]
        for i, child in enumerate(children):
            last = i == len(children) - 1
            lines.append(("└── " if last else "├── ") + child[0])
            lines.extend(("    " if last else "│   ") + line for line in child[1:])
        return lines

    lines = block(root, 0)
    mixed = {name: sorted(v) for name, v in sorted(versions.items()) if len(v) > 1}
    for name, found in mixed.items():
        lines.append(f"note: {name} is read at {len(found)} versions ({', '.join(found)})")
    if runs:
        lines.append("runs:")
        for run in runs:
            lines.extend(_run_lines(run_label[run["save_version"]], run))
    return "\n".join(lines)


_RUN_FIELDS = ("save_version", "status", "pipeline_names", "namespaces", "env", "kedro_command", "argv",
               "runtime_params", "git_sha", "git_dirty", "created_at", "params_hash", "mlflow_run_id")


def lineage_json(root: LineageNode) -> dict[str, Any]:
    """The DAG as plain data: artifacts once each (depth-first order, inputs by label) and the runs by save version."""
    return {
        "artifact": root.label,
        "artifacts": [{"label": node.label, "dataset": node.dataset, "version": node.version, "node": node.node,
                       "run": node.run["save_version"] if node.run is not None else None,
                       "inputs": [parent.label for parent in node.parents]} for node in _walk(root)],
        "runs": {run["save_version"]: {k: run.get(k) for k in _RUN_FIELDS} for run in _runs(root)},
    }


COST_KEYS = ("wall_s", "cpu_s")


def artifact_cost(root: LineageNode) -> dict[str, Any]:
    """What producing an artifact cost, from the records of its DAG: every (run, node) that wrote one of its
    ancestors (or itself) counted once.

    `wall_s` / `cpu_s` sum the nodes' wall and process-CPU seconds; `peak_rss_mb` / `cuda_peak_mb` are the largest
    peaks among them; `bytes` is the size on disk of the artifact itself, `upstream_bytes` of every ancestor version
    it was made from. `nodes` counts the producing nodes, `nodes_without_cost` those whose records predate cost
    accounting or ran under the ParallelRunner (their dataset hooks run in other processes): the sums then
    under-count, and say by how many nodes.
    """
    seen: set[tuple[str, str]] = set()
    totals: dict[str, Any] = {key: 0.0 for key in COST_KEYS}
    peaks: dict[str, float] = {}
    missing = 0
    upstream = 0
    own: int | None = None
    for node in _walk(root):
        if node.run is None or node.node is None:
            continue
        entry = node.run.get("nodes", {}).get(node.node, {})
        size = entry.get("output_bytes", {}).get(node.dataset)
        if node is root:
            own = size
        elif size is not None:
            upstream += int(size)
        key = (str(node.run.get("save_version")), node.node)
        if key in seen:
            continue
        seen.add(key)
        cost = entry.get("cost")
        if not cost:
            missing += 1
            continue
        for name in COST_KEYS:
            totals[name] += float(cost.get(name, 0.0))
        for name in ("peak_rss_mb", "cuda_peak_mb"):
            if cost.get(name) is not None:
                peaks[name] = max(peaks.get(name, 0.0), float(cost[name]))
    return {"artifact": root.label, **{k: round(v, 3) for k, v in totals.items()},
            "peak_rss_mb": peaks.get("peak_rss_mb"), "cuda_peak_mb": peaks.get("cuda_peak_mb"), "bytes": own,
            "upstream_bytes": upstream, "nodes": len(seen), "nodes_without_cost": missing}


def distilled_set_costs(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Set name (`<set>`, without `.distilled_set`) -> `artifact_cost` of the latest `<set>.distilled_set` version,
    for every distilled set the records know (shared upstream phases count in full for every set)."""
    names = sorted({name for record in records for name in record.get("outputs", {})
                    if name.endswith(".distilled_set")})
    return {name.removesuffix(".distilled_set"): artifact_cost(trace(records, name)) for name in names}
