"""The aggregator worker's hooks, and the faults built from them for evaluation and tests only: a dishonest
aggregator that reveals a corrupted model, and a process that dies at a chosen point of a round (a power cut).

The worker knows nothing of either: it calls its `AggregatorHooks`, no-ops unless whoever starts it (the CLI's
`--lie`, the restart tests through FEDCHAIN_AGGREGATOR_CRASH) passes `evaluation_hooks(...)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from fedchain.learning.attacks import gaussian_noise
from fedchain.learning.types import Weights

log = logging.getLogger("fedchain.aggregator")

# "before-commit:ROUND" or "after-commit:ROUND" in this variable makes `fedchain aggregator` die there.
CRASH_ENV = "FEDCHAIN_AGGREGATOR_CRASH"
CRASH_EXIT_CODE = 86
# The points of a round at which `AggregatorHooks.at` is called.
BEFORE_COMMIT = "before-commit"
AFTER_COMMIT = "after-commit"


def _nowhere(point: str, round_index: int) -> None:
    return None


def _honest(weights: Weights, round_index: int) -> Weights:
    return weights


@dataclass(frozen=True)
class AggregatorHooks:
    """What the worker calls at fixed points of a round. The defaults do nothing (an honest aggregator)."""

    # Called with BEFORE_COMMIT / AFTER_COMMIT and the round, around the commit (or sole submission).
    at: Callable[[str, int], None] = _nowhere
    # The model this aggregator publishes and commits to, from the honest aggregate.
    published_model: Callable[[Weights, int], Weights] = _honest


def lying_model(honest: Weights, round_index: int) -> Weights:
    """What the dishonest aggregator of the tests and demo reveals: the honest aggregate plus seeded noise."""
    return gaussian_noise(honest, sigma=0.05, seed=round_index)


def _lie(honest: Weights, round_index: int) -> Weights:
    log.warning("round %d: publishing a corrupted model (evaluation mode)", round_index)
    return lying_model(honest, round_index)


def crash_at(spec: str) -> Callable[[str, int], None]:
    """A hook that kills the process at `spec` ("before-commit:ROUND" or "after-commit:ROUND"), as a power cut
    would: no cleanup, no finally blocks, exit code 86."""

    def at(point: str, round_index: int) -> None:
        if spec == f"{point}:{round_index}":
            log.error("fault injection: dying %s of round %d", point, round_index)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)

    return at


def evaluation_hooks(lie: bool = False, crash: str = "") -> AggregatorHooks:
    """The hooks of `fedchain aggregator [--lie]`, with `crash` from CRASH_ENV ("" for none)."""
    if lie:
        log.warning("this aggregator is DISHONEST (evaluation mode): it reveals corrupted models")
    return AggregatorHooks(
        at=crash_at(crash) if crash else _nowhere,
        published_model=_lie if lie else _honest,
    )
