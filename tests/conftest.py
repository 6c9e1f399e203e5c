"""Shared fixtures: offline, telemetry-free environment; paths to ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

for _key, _value in {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "true", "KEDRO_DISABLE_TELEMETRY": "1",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_key, _value)

# Tiny tensors: one thread avoids oversubscribing the 2-core CI machine (2 threads were up to 10x slower
# with another process running).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when this checkout has no shared folder."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
