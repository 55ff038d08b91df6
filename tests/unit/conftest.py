"""Unit tests run torch on one thread: on a shared 2-core machine two spinning threads can be
10-20x slower, and one thread keeps float results reproducible from run to run. Module-scoped
fixtures too (pytest sets up a module's fixtures before a function's autouse ones): test_snapshots'
module-scoped baselines took 125-273 s on two threads beside other work, 26 s on one)."""
from __future__ import annotations

import pytest
import torch


def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


one_torch_thread_per_module = pytest.fixture(autouse=True, scope="module")(_one_thread)
one_torch_thread = pytest.fixture(autouse=True)(_one_thread)
