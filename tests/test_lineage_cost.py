"""`artifact_cost`: each producing (run, node) counted once, peaks as maxima, bytes of the artifact and its inputs."""

from __future__ import annotations

from diffdistill.lineage import artifact_cost, trace


def _record(version: str, nodes: dict) -> dict:
    outputs = {ds: version for entry in nodes.values() for ds in entry["outputs"]}
    return {"save_version": version, "status": "completed", "nodes": nodes, "outputs": outputs, "inputs": {}}


def test_costs_sum_over_the_dag_once_per_node_and_peaks_are_maxima():
    up = _record("v1", {
        "load": {"inputs": {}, "outputs": {"train_set": "v1", "test_set": "v1"},
                 "cost": {"wall_s": 2.0, "cpu_s": 3.0, "peak_rss_mb": 500.0},
                 "output_bytes": {"train_set": 1000, "test_set": 400}},
        "prior": {"inputs": {"train_set": "v1"}, "outputs": {"prior_model": "v1"},
                  "cost": {"wall_s": 10.0, "cpu_s": 19.0, "peak_rss_mb": 900.0, "cuda_peak_mb": 80.0},
                  "output_bytes": {"prior_model": 5000}}})
    down = _record("v2", {
        "distill": {"inputs": {"train_set": "v1", "prior_model": "v1"}, "outputs": {"s.distilled_set": "v2"},
                    "cost": {"wall_s": 5.0, "cpu_s": 5.5, "peak_rss_mb": 700.0}, "output_bytes": {"s.distilled_set": 64}},
        "old": {"inputs": {"s.distilled_set": "v2", "test_set": "v1"}, "outputs": {"s.eval": "v2"}}})
    cost = artifact_cost(trace([up, down], "s.distilled_set"))
    # load (once, though train_set is read by prior and distill), prior, distill
    assert (cost["wall_s"], cost["cpu_s"]) == (17.0, 27.5)
    assert (cost["peak_rss_mb"], cost["cuda_peak_mb"]) == (900.0, 80.0)
    assert cost["bytes"] == 64 and cost["upstream_bytes"] == 1000 + 5000
    assert (cost["nodes"], cost["nodes_without_cost"]) == (3, 0)
    evaluated = artifact_cost(trace([up, down], "s.eval"))
    assert evaluated["nodes_without_cost"] == 1 and evaluated["bytes"] is None  # a record that predates costs
    assert evaluated["upstream_bytes"] == 64 + 1000 + 400 + 5000


def test_cost_rows_give_one_row_per_distilled_set(tmp_path):
    import json

    from diffdistill import results

    record = _record("v1", {
        "load": {"inputs": {}, "outputs": {"train_set": "v1"}, "cost": {"wall_s": 1.0, "cpu_s": 1.0, "peak_rss_mb": 9.0},
                 "output_bytes": {"train_set": 2048}},
        "make": {"inputs": {"train_set": "v1"}, "outputs": {"random_ipc1.distilled_set": "v1"},
                 "cost": {"wall_s": 0.5, "cpu_s": 0.25, "peak_rss_mb": 10.0},
                 "output_bytes": {"random_ipc1.distilled_set": 1024}}})
    (tmp_path / "data/lineage").mkdir(parents=True)
    (tmp_path / "data/lineage/v1.json").write_text(json.dumps(record))
    (row,) = results.cost_rows(tmp_path)
    assert row["set"] == "random_ipc1" and (row["wall_s"], row["cpu_s"], row["peak_rss_mb"]) == (1.5, 1.25, 10.0)
    assert (row["set_bytes"], row["upstream_bytes"], row["nodes"]) == (1024, 2048, 2)
    assert "| random_ipc1 | 1.5 | 1.2 | 10.0 | – | 1.0 | 0.0 | 2 (0) |" in results.cost_table(
        [{k: str(v) for k, v in row.items()}])
