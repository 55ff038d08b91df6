"""Unit tests run torch on one thread: on a shared 2-core machine two spinning threads can be
10-20x slower, and one thread keeps float results reproducible from run to run."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
