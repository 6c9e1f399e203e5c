"""Helpers to run the real Kedro project in a scratch copy (so tests never write into the checkout)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def scratch_project(tmp_path: Path) -> Path:
    """A copy of pyproject + conf + notebooks with empty data folders; the package is imported from src."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(PROJECT_ROOT / ".telemetry", root / ".telemetry")
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    if (PROJECT_ROOT / "notebooks").exists():
        shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks")
    (root / "data").mkdir()
    (root / "src").mkdir()  # the package itself is installed (editable) in the venv
    return root


def kedro(root: Path, *args: str, timeout: float = 600, check: bool = True,
          env_overrides: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run the `kedro` CLI of this venv inside `root`; `env_overrides` set (or, with None, remove) variables."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "true", "KEDRO_DISABLE_TELEMETRY": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for key, value in (env_overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    kedro_bin = Path(sys.executable).with_name("kedro")
    result = subprocess.run([str(kedro_bin), *args], cwd=root, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"kedro {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def versions(root: Path, relative: str) -> list[str]:
    """Saved versions of a versioned dataset folder, oldest first."""
    folder = root / relative
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.exists() else []
