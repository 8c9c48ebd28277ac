"""Learning tests run single-threaded: results are bit-reproducible and several runs share small CI machines."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    torch.set_num_threads(1)
