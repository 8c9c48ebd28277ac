"""Retry with backoff: the delay before each new attempt, and a helper that retries a call on given errors.

A schedule is a tuple of delays; attempt n (0-based) waits `delays[min(n, len - 1)]`, so the last delay repeats.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays (seconds) before retries; the last one repeats for every later retry."""

    delays: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.delays or any(d < 0 for d in self.delays):
            raise ValueError(f"a backoff needs at least one delay, none negative; got {self.delays!r}")

    @classmethod
    def exponential(cls, first: float, cap: float, factor: float = 2.0) -> Backoff:
        """first, first·factor, first·factor², ... up to `cap`, which then repeats."""
        if first <= 0 or factor <= 1 or cap < first:
            raise ValueError(f"expected 0 < first <= cap and factor > 1, got {first}, {cap}, {factor}")
        delays = [first]
        while delays[-1] * factor < cap:
            delays.append(delays[-1] * factor)
        return cls((*delays, cap))

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (0 for the first)."""
        return self.delays[min(max(attempt, 0), len(self.delays) - 1)]


def retry_call(
    call: Callable[[], T],
    *,
    retries: int,
    backoff: Backoff,
    retry_on: tuple[type[BaseException], ...],
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """`call()`, called again up to `retries` more times while it raises one of `retry_on` (waiting the backoff's
    delay in between); the last such error propagates. Other errors propagate at once."""
    for attempt in range(retries):
        try:
            return call()
        except retry_on:
            sleep(backoff.delay(attempt))
    return call()


__all__ = ["Backoff", "retry_call"]
