"""The layer order of src/diffdistill: imports only run downward or sideways, and no module imports itself back.

    rng, config, progress, ddranking  ->  data  ->  workdir, nets, augment, diffusion  ->  prior  ->  distill, evaluation
                 ->  datasets, lineage, pipelines, hooks, run_summary, cli, results (the Kedro side and the tools)

Read from the source (every `import` / `from ... import`, also inside functions, so a lazy import counts too;
only `if TYPE_CHECKING:` imports are left out, since they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "diffdistill"
LAYERS = [
    {"rng", "config", "progress", "ddranking", "published"},
    {"data"},
    {"workdir", "nets", "augment", "diffusion"},
    {"prior"},
    {"distill", "evaluation"},
    {"datasets", "lineage", "pipelines", "hooks", "run_summary", "cli", "results", "settings", "pipeline_registry",
     "__main__", "__init__", "user_errors"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for block in ast.walk(tree):  # imports only a type checker runs are not arrows
        if isinstance(block, ast.If) and getattr(block.test, "id", getattr(block.test, "attr", "")) == "TYPE_CHECKING":
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # `from pkg import module`
    found.discard("diffdistill")  # `from diffdistill import rng` imports the module, not the package's __init__
    return {name for name in found if name == "diffdistill" or name.startswith("diffdistill.")}


def modules() -> dict[str, set[str]]:
    paths = sorted(SRC.rglob("*.py"))
    names = {module_name(p) for p in paths}
    return {module_name(p): {i for i in imports(p) if i in names and i != module_name(p)} for p in paths}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_room_has_a_layer():
    unknown = sorted({room(m) for m in modules()} - set(RANK))
    assert not unknown, f"add {unknown} to LAYERS in tests/test_layers.py"


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{m} -> {i}" for m, targets in modules().items() for i in targets
                    if RANK.get(room(i), 99) > RANK.get(room(m), 99))
    assert not upward, "imports that run up the layer order:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = modules()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target.startswith(node + "."):  # a package importing its own submodules is not a cycle
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if state.get(target) is None and (cycle := visit(target)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
