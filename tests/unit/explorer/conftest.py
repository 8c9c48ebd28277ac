"""Fixtures of the explorer's unit tests (the fake node and IPFS live in explorer_fakes.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from explorer_fakes import Scenario, build_scenario, dump

from fedchain.explorer.index import Indexer
from fedchain.explorer.queries import Explorer, Settings


@pytest.fixture
def scenario() -> Scenario:
    return build_scenario()


@pytest.fixture
def dump_index() -> Callable[..., dict[str, list[tuple[Any, ...]]]]:
    return dump


@pytest.fixture
def indexed_explorer(tmp_path: Path, scenario: Scenario) -> Explorer:
    """The read side over a real index: the Indexer's SQLite file built from the fake chain, reports fetched."""
    path = tmp_path / "index.sqlite"
    indexer = Indexer(path, scenario.chain, scenario.ipfs)  # type: ignore[arg-type]
    indexer.sync()
    indexer.fetch_reports()
    indexer.close()
    explorer = Explorer(Settings("http://127.0.0.1:1", "http://127.0.0.1:2", 31337, path), indexer.status)
    explorer.rpc = scenario.chain  # type: ignore[assignment]
    explorer.ipfs = scenario.ipfs  # type: ignore[assignment]
    return explorer
