"""The MLflow store is the project's, whatever the working directory (a notebook kernel runs in notebooks/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from kedro.config import OmegaConfigLoader

from diffdistill.hooks import RuntimeHook
from tests.kedro_project import PROJECT_ROOT, scratch_project


@pytest.mark.parametrize("env", ["base", "test"])
def test_mlflow_yml_names_the_project_roots_database(tmp_path: Path, env: str) -> None:
    RuntimeHook().after_context_created(SimpleNamespace(config_loader={"parameters": {}}, env=None,
                                                        project_path=tmp_path))
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env=env,
                               config_patterns={"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]})
    mlflow_yml = loader["mlflow"]
    root = tmp_path.resolve().as_posix()
    assert mlflow_yml["server"]["mlflow_tracking_uri"] == f"sqlite:///{root}/mlflow.db"
    artifacts = mlflow_yml["tracking"]["experiment"]["create_experiment_kwargs"]["artifact_location"]
    assert artifacts == f"{root}/mlruns"


@pytest.mark.slow
def test_kedro_ipython_extension_in_notebooks_writes_no_stray_database(tmp_path: Path) -> None:
    """`%load_ext kedro.ipython` from notebooks/ (what the report notebook and `kedro jupyter` do)."""
    root = scratch_project(tmp_path)
    script = ("from IPython.core.interactiveshell import InteractiveShell\n"
              "shell = InteractiveShell.instance()\n"
              "shell.run_line_magic('load_ext', 'kedro.ipython')\n"
              "print(shell.user_ns['context'].mlflow.server.mlflow_tracking_uri)\n")
    env = {**os.environ, "KEDRO_ENV": "test", "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=root / "notebooks", env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == f"sqlite:///{root.resolve().as_posix()}/mlflow.db"
    assert (root / "mlflow.db").is_file()
    assert not (root / "notebooks" / "mlflow.db").exists() and not (root / "notebooks" / "mlruns").exists()
