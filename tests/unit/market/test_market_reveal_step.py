"""reveal_step: who reveals and who publishes in a unit whose replicas both committed (pure logic, no chain)."""

from __future__ import annotations

import hashlib

import pytest

from fedchain.chain.market import ZERO_ADDRESS, UnitInfo, UnitStatus
from fedchain.market.worker import REVEAL_GRACE, RevealStep, reveal_step

DURATION = 600
OPENED = 10_000
MINE = hashlib.sha256(b"mine").digest()
OTHER = hashlib.sha256(b"other").digest()
SEAL = hashlib.sha256(b"commitment").digest()


def unit(seals: tuple[bytes, bytes], revealed: tuple[bool, bool]) -> UnitInfo:
    values = (UnitStatus.REVEALING, 0, [ZERO_ADDRESS] * 3, [0, 0, 0], list(seals), list(revealed))
    return UnitInfo.from_tuple((*values, OPENED + DURATION, b"\x00" * 32, 0, 0, 0))


@pytest.mark.parametrize("slot", [0, 1])
def test_nobody_revealed_replica_0_reveals_at_once_replica_1_after_the_grace(slot: int) -> None:
    info = unit((SEAL, SEAL), (False, False))
    early = reveal_step(slot, info, MINE, OPENED + 1, DURATION)
    assert early == (RevealStep.REVEAL if slot == 0 else RevealStep.WAIT)
    assert reveal_step(slot, info, MINE, OPENED + REVEAL_GRACE, DURATION) == RevealStep.REVEAL


def test_the_second_replica_publishes_on_an_equal_tag_and_reveals_on_a_different_one() -> None:
    assert reveal_step(1, unit((MINE, SEAL), (True, False)), MINE, OPENED + 1, DURATION) == RevealStep.PUBLISH
    assert reveal_step(0, unit((SEAL, MINE), (False, True)), MINE, OPENED + 1, DURATION) == RevealStep.PUBLISH
    # a different tag: never publish (the digest could be copied by the arbiter); reveal ours to open the dispute
    assert reveal_step(1, unit((OTHER, SEAL), (True, False)), MINE, OPENED + 1, DURATION) == RevealStep.REVEAL


def test_both_revealed_and_equal_replica_0_publishes_replica_1_only_after_half_the_window() -> None:
    both = unit((MINE, MINE), (True, True))
    assert reveal_step(0, both, MINE, OPENED + 1, DURATION) == RevealStep.PUBLISH
    assert reveal_step(1, both, MINE, OPENED + 1, DURATION) == RevealStep.WAIT
    assert reveal_step(1, both, MINE, OPENED + DURATION // 2, DURATION) == RevealStep.PUBLISH


@pytest.mark.parametrize("slot", [0, 1])
def test_revealed_and_waiting_or_disputed_means_wait(slot: int) -> None:
    mine_only = (MINE, SEAL) if slot == 0 else (SEAL, MINE)
    revealed = (slot == 0, slot == 1)
    assert reveal_step(slot, unit(mine_only, revealed), MINE, OPENED + 1, DURATION) == RevealStep.WAIT
    disputed = (MINE, OTHER) if slot == 0 else (OTHER, MINE)
    assert reveal_step(slot, unit(disputed, (True, True)), MINE, OPENED + 1, DURATION) == RevealStep.WAIT
