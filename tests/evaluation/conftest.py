"""One intra-op thread: these tensors are tiny, and on a shared 2-core box extra threads only contend."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
