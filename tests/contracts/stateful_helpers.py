"""Shared pieces of the stateful (hypothesis state machine) contract tests: expected reverts by error name, the
chain's clock with a safety margin, and the step counters each machine reports."""

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import brownie

# Seconds: a deadline closer than this to chain.time() is ambiguous (the next block's timestamp can differ from
# chain.time() by a second or two), so a rule sleeps past it before predicting anything that depends on it.
MARGIN = 5


@contextmanager
def reverts_named(name: str):
    """Expect the block to revert with the custom error `name` (any arguments): brownie decodes a known custom
    error as "Name: arg1, arg2". The machines predict which check fails first; the arguments are the contract's
    business and are pinned by the unit tests."""
    with brownie.reverts(revert_pattern=rf"{re.escape(name)}(: .*)?"):
        yield


def now() -> int:
    """The chain's time as brownie tracks it (wall clock plus every chain.sleep)."""
    return brownie.chain.time()


def revert_to_snapshot() -> None:
    """Revert the chain to the machine's snapshot and re-anchor brownie's clock on the chain's.

    On evm_revert Anvil restarts its clock at the snapshot block's timestamp, while brownie restores the offset it
    had at the snapshot and keeps counting wall time: without the re-anchoring, `now()` runs ahead of the chain by
    the wall time since the snapshot, and once a machine has run longer than a deadline (a loaded machine, a long
    budget) it predicts deadlines passed that the chain has not reached. (brownie 1.22 has no public call for this;
    `_set_time_offset_from_block` is what it uses itself after mined activity.)"""
    brownie.chain.revert()
    brownie.chain._set_time_offset_from_block()


def clear_of(*deadlines: int) -> int:
    """Sleep past any deadline that lies within MARGIN of now, so that `now < deadline` has one answer for the
    next transaction; returns the time to predict with."""
    t = now()
    if any(d and abs(t - d) <= MARGIN for d in deadlines):
        brownie.chain.sleep(2 * MARGIN + 1)
        t = now()
    return t


@dataclass
class StepStats:
    """What a machine did over all its examples: steps, reverted steps, outcome counts, wall time."""

    name: str
    examples: int = 0
    steps: int = 0
    reverted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def report(self) -> str:
        seconds = time.monotonic() - self.started
        outcomes = ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.name}: {self.examples} examples, {self.steps} steps ({self.reverted} reverted as predicted) "
            f"in {seconds:.0f} s ({1000 * seconds / max(self.steps, 1):.0f} ms/step); {outcomes}"
        )
