"""Lineage: which artifact versions, runs and commits produced an artifact. `record` writes one record per run
(`data/lineage/<save_version>.json`, owned here); `read` loads them back and traces an artifact's ancestors."""

from diffdistill.lineage.read import (
    LineageNode,
    artifact_cost,
    distilled_set_costs,
    find_producer,
    format_tree,
    lineage_json,
    load_records,
    read_records,
    trace,
)
from diffdistill.lineage.record import (
    LINEAGE_DIR,
    LineageRecorder,
    command_line,
    git_state,
    kedro_run_command,
    params_hash,
)

__all__ = ["LINEAGE_DIR", "LineageNode", "LineageRecorder", "artifact_cost", "command_line", "distilled_set_costs",
           "find_producer", "format_tree", "git_state", "kedro_run_command", "lineage_json", "load_records",
           "params_hash", "read_records", "trace"]
