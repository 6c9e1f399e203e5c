"""The algorithm layers stay plain torch: they import neither kedro nor mlflow."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "diffdistill"
CORE_LAYERS = ["data", "prior", "diffusion", "distill", "nets", "augment", "evaluation"]
FORBIDDEN = ("kedro", "kedro_datasets", "kedro_mlflow", "mlflow")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", CORE_LAYERS)
def test_core_layer_sources_do_not_import_kedro_or_mlflow(layer: str) -> None:
    folder = SRC / layer
    if not folder.exists():
        pytest.skip(f"layer {layer} not present")
    offenders = {str(p.relative_to(SRC)): sorted(_imported_modules(p) & set(FORBIDDEN))
                 for p in folder.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_importing_core_layers_loads_neither_kedro_nor_mlflow() -> None:
    present = [f"diffdistill.{layer}" for layer in CORE_LAYERS if (SRC / layer).exists()]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in present)
            + f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\nprint(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
