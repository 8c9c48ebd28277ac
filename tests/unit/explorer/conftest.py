"""Fixtures of the explorer's unit tests (the fake node and IPFS live in explorer_fakes.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from explorer_fakes import Scenario, build_scenario, dump


@pytest.fixture
def scenario() -> Scenario:
    return build_scenario()


@pytest.fixture
def dump_index() -> Callable[..., dict[str, list[tuple[Any, ...]]]]:
    return dump
