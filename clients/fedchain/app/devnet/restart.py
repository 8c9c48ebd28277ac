"""When the devnet restarts a service that died: bounded restarts with exponential backoff (pure logic)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RestartPolicy:
    """At most `max_restarts` restarts within any `window_s` seconds; the n-th of them waits
    `base_delay_s * 2**(n-1)`, capped at `max_delay_s`. A service that crashes faster than that is broken, not
    unlucky: the devnet then gives up on it (and keeps the other service running)."""

    max_restarts: int = 5
    window_s: float = 300.0
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_s <= 0 or self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError(f"expected non-negative restart limits and a positive window, got {self}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number `attempt` (1-based) of the current window."""
        if attempt < 1:
            raise ValueError(f"expected an attempt number >= 1, got {attempt}")
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))


@dataclass
class RestartBudget:
    """One service's restarts so far; `next_delay(now)` records a restart and says how long to wait first, or
    None when the policy's budget is spent (give up)."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    _times: deque[float] = field(default_factory=deque)

    def recent(self, now: float) -> int:
        """Restarts within the policy's window before `now`."""
        while self._times and now - self._times[0] >= self.policy.window_s:
            self._times.popleft()
        return len(self._times)

    def next_delay(self, now: float) -> float | None:
        attempt = self.recent(now) + 1
        if attempt > self.policy.max_restarts:
            return None
        self._times.append(now)
        return self.policy.delay(attempt)
