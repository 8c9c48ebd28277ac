"""Benchmark tests that train run single-threaded, as the learning tests do: results are bit-reproducible."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    torch.set_num_threads(1)
