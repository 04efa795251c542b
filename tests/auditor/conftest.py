"""The science tests run torch on one thread: as fast for these small models, and the
batched and one-at-a-time trainers then sum in the same order."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
