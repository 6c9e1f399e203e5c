"""Prior tests run single-threaded: their tensors are tiny, and on a shared 2-core machine torch's
intra-op threads spin against other processes (measured: 50-100x slower backward passes)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
