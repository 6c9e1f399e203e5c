"""RuntimeHook: run-wide torch settings come from parameters, and bad values are named."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from diffdistill.hooks import RuntimeHook


@pytest.fixture
def restore_torch_settings():
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    yield
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(precision)


def _run(params: dict) -> None:
    """The hook reads the config loader's parameters (context.params would build every pipeline)."""
    context = SimpleNamespace(config_loader={"parameters": params}, env=None, project_path=Path.cwd())
    RuntimeHook().after_context_created(context)


def test_parameters_set_threads_and_matmul_precision(restore_torch_settings) -> None:
    _run({"torch_threads": 1, "float32_matmul_precision": "high"})
    assert torch.get_num_threads() == 1 and torch.get_float32_matmul_precision() == "high"
    _run({"torch_threads": None, "float32_matmul_precision": None})  # null leaves torch as it is
    assert torch.get_num_threads() == 1 and torch.get_float32_matmul_precision() == "high"


@pytest.mark.parametrize(("params", "name"), [({"torch_threads": 0}, "torch_threads"),
                                              ({"float32_matmul_precision": "tf32"}, "float32_matmul_precision")])
def test_bad_runtime_parameters_are_named(restore_torch_settings, params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _run(params)
