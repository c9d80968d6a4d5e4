"""D2IP tests run torch on one thread: the CI box is shared, and OpenMP threads that wait for each
other on an oversubscribed CPU make small workloads tens of times slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
