"""Lineage: which artifact versions, runs and commits produced an artifact. `record` writes one record per run
(`data/lineage/<save_version>.json`, owned here); `read` loads them back and traces an artifact's ancestors."""

from diffdistill.lineage.read import LineageNode, find_producer, format_tree, load_records, trace
from diffdistill.lineage.record import LINEAGE_DIR, LineageRecorder, git_state, params_hash

__all__ = ["LINEAGE_DIR", "LineageNode", "LineageRecorder", "find_producer", "format_tree", "git_state",
           "load_records", "params_hash", "trace"]
