"""`kedro airflow create` on the sharded project graph: one TaskGroup per class shard, merges downstream of all.

The DAG is checked twice: by parsing it (always; needs only kedro-airflow) and by importing it with Airflow's own
DagBag in the separate venv `.ci/run` builds (`build/airflow-venv`, or $AIRFLOW_PYTHON): Airflow 3 pins an older
fastapi than kedro-viz needs, so it cannot share the project venv. The import check skips when that venv is absent.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.kedro_project import PROJECT_ROOT, kedro, scratch_project

pytest.importorskip("kedro_airflow")
pytestmark = pytest.mark.slow

TEMPLATE = PROJECT_ROOT / "src/diffdistill/pipelines/airflow_dag.j2"
SHARDS = ["shard0of2", "shard1of2"]

DAGBAG_SCRIPT = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dags = {dag_id: {t.task_id: {"group": t.task_group.group_id if t.task_group else None,
                             "upstream": sorted(t.upstream_task_ids)} for t in dag.tasks}
        for dag_id, dag in bag.dags.items()}
print("DAGBAG=" + json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags}))
"""


@pytest.fixture(scope="module")
def dag_file(tmp_path_factory) -> Path:
    root = scratch_project(tmp_path_factory.mktemp("airflow"))
    params = root / "conf/base/parameters.yml"
    params.write_text(re.sub(r"(?m)^shards: \d+", "shards: 2", params.read_text()))
    kedro(root, "airflow", "create", "--env", "test", "--jinja-file", str(TEMPLATE),
          "--target-dir", "dags")
    (path,) = (root / "dags").glob("*.py")
    return path


def _parsed(path: Path) -> tuple[dict[str, str | None], dict[str, set[str]]]:
    """{kedro node: its TaskGroup or None} and {kedro node: upstream kedro nodes} from the DAG's source."""
    groups: dict[str, str | None] = {}
    upstream: dict[str, set[str]] = {}

    def task_key(node: ast.AST) -> str | None:  # tasks["<node name>"]
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "tasks":
            return node.slice.value if isinstance(node.slice, ast.Constant) else None
        return None

    def visit(statements: list[ast.stmt], group: str | None) -> None:
        for stmt in statements:
            if isinstance(stmt, ast.With):
                call = stmt.items[0].context_expr
                assert isinstance(call, ast.Call) and call.func.id == "TaskGroup"
                visit(stmt.body, next(k.value.value for k in call.keywords if k.arg == "group_id"))
            elif isinstance(stmt, ast.Assign) and task_key(stmt.targets[0]):
                groups[task_key(stmt.targets[0])] = group
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.BinOp):
                upstream.setdefault(task_key(stmt.value.right), set()).add(task_key(stmt.value.left))

    dag_function = next(n for n in ast.parse(path.read_text()).body
                        if isinstance(n, ast.FunctionDef) and any(getattr(d, "func", d).id == "dag"
                                                                  for d in n.decorator_list))
    visit(dag_function.body, None)
    return groups, upstream


def test_each_shard_is_one_task_group_with_the_same_nodes(dag_file):
    groups, _ = _parsed(dag_file)
    assert sorted({g for g in groups.values() if g}) == SHARDS
    per_shard = [{name.split(".", 1)[1] for name, g in groups.items() if g == shard} for shard in SHARDS]
    assert per_shard[0] == per_shard[1]
    assert {"encode_and_invert_classes", "fit_gaussians_classes", "d3hr_ipc1.d3hr_classes",
            "ld3m_dm_latent_ipc1.distill_ld3m_classes"} <= per_shard[0]
    assert all(name.startswith(f"{g}.") for name, g in groups.items() if g)


def test_every_merge_runs_after_all_shards_and_outside_them(dag_file):
    groups, upstream = _parsed(dag_file)
    merges = [name for name in groups if name.endswith("merge_shards")]
    assert {"latents.merge_shards", "gaussians.merge_shards", "d3hr_ipc1.merge_shards",
            "ld3m_dm_latent_ipc1.merge_shards"} <= set(merges)
    for merge in merges:
        assert groups[merge] is None
        assert sorted(groups[parent] for parent in upstream[merge] if groups[parent]) == SHARDS, merge
    # the next phase's shards wait for the previous phase's merge
    assert upstream["shard0of2.fit_gaussians_classes"] == {"latents.merge_shards"}
    assert "gaussians.merge_shards" in upstream["shard1of2.d3hr_ipc1.d3hr_classes"]


def _airflow_python() -> Path | None:
    candidate = Path(os.environ.get("AIRFLOW_PYTHON", PROJECT_ROOT / "build/airflow-venv/bin/python"))
    return candidate if candidate.exists() else None


def test_airflow_imports_the_dag_with_one_task_group_per_shard(dag_file, tmp_path):
    python = _airflow_python()
    if python is None:
        pytest.skip("no Airflow venv (build/airflow-venv, made by .ci/run, or $AIRFLOW_PYTHON); the DAG was checked "
                    "by parsing only")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([str(python), "-c", DAGBAG_SCRIPT, str(dag_file.parent)], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    bag = json.loads(out.split("DAGBAG=", 1)[1])
    assert bag["errors"] == {}
    (tasks,) = bag["dags"].values()
    groups, _ = _parsed(dag_file)
    assert len(tasks) == len(groups)
    assert sorted({t["group"] for t in tasks.values() if t["group"]}) == SHARDS
    for task_id, task in tasks.items():
        if task_id.endswith("merge-shards"):
            assert task["group"] is None
            assert sorted({tasks[u]["group"] for u in task["upstream"]} - {None}) == SHARDS, task_id
    assert {"shard0of2.encode-and-invert-classes", "shard1of2.encode-and-invert-classes"} <= set(
        tasks["latents-merge-shards"]["upstream"])
    assert tasks["shard1of2.fit-gaussians-classes"]["upstream"] == ["latents-merge-shards"]
