"""End-to-end fixtures: a real chain (Ganache or Anvil), the real Kubo service, and `fedchain` CLI processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import Cli
from explorer_e2e import ExplorerRun, explorer_scenario

from fedchain.app.devnet import Devnet


def _devnet(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    net = Devnet(tmp_path_factory.mktemp(f"devnet-{kind}"), kind, num_accounts=20)
    net.start()
    try:
        yield net
    finally:
        net.stop()


@pytest.fixture(scope="module")
def ganache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    yield from _devnet("ganache", tmp_path_factory)


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    yield from _devnet("anvil", tmp_path_factory)


@pytest.fixture
def cli(ganache: Devnet, tmp_path: Path) -> Iterator[Cli]:
    assert ganache.state is not None
    runner = Cli(ganache.state, tmp_path)
    try:
        yield runner
    finally:
        runner.stop_all()


@pytest.fixture(scope="session")
def explorer_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExplorerRun]:
    """One finished federated run on Ganache, indexed live by `fedchain explorer` (see explorer_e2e.py)."""
    with explorer_scenario(tmp_path_factory.mktemp("explorer-run")) as run:
        yield run
