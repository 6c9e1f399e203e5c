"""End to end: a truncated `train_set` version makes `kedro run --pipelines baselines` fail with a message that
names the file and says what to do, and every version saved before stays byte-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.io.core import Version

from diffdistill.datasets import TensorBundleDataset
from tests.badinput.clarity import snapshot
from tests.kedro_project import kedro, scratch_project, versions

pytestmark = pytest.mark.slow
TRAIN_SET = "data/03_primary/train_set.safetensors"


def _artifacts(root: Path) -> dict[str, bytes]:
    """Every versioned artifact under data/0*_*/ (lineage records and MLflow runs may grow; artifacts may not)."""
    return {f"{folder.name}/{name}": data for folder in sorted((root / "data").glob("0*_*"))
            for name, data in snapshot(folder).items()}


def test_truncated_train_set_fails_clearly_and_damages_nothing(tmp_path: Path) -> None:
    root = scratch_project(tmp_path)
    kedro(root, "run", "--pipelines", "preprocess", "--env", "test")
    kedro(root, "run", "--pipelines", "preprocess", "--env", "test", "--params", "preprocess.seed=1")
    older, latest = versions(root, TRAIN_SET)
    damaged = root / TRAIN_SET / latest / "train_set.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    before = _artifacts(root)

    result = kedro(root, "run", "--pipelines", "teacher,baselines", "--env", "test", check=False)

    output = result.stdout + result.stderr
    unwrapped = "".join(output.split())  # the console wraps long lines
    assert result.returncode != 0
    assert f"{TRAIN_SET}/{latest}/train_set.safetensors" in unwrapped  # names the file
    assert "sha256" in output and "--load-versions" in unwrapped  # says what happened and what to do
    assert "DatasetError" in output and "SafetensorError" not in output  # our check, not safetensors' parser
    assert _artifacts(root) == before  # nothing saved, nothing rewritten: the older version is intact
    # ... and the intact version is what `--load-versions train_set:<older>` would load
    intact = TensorBundleDataset(filepath=str(root / TRAIN_SET), version=Version(older, None)).load()
    assert intact.images.shape[1:] == (1, 16, 16) and intact.meta["split"] == "train"
