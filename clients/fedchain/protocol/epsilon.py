"""Epsilon in the task contract's units: a uint64 count of millionths. The one conversion every part uses (the
deployer's budget and first-round epsilon, the aggregators' per-round epsilon, the demo's report), so the on-chain
checks see one rounding. Standard library only."""

from __future__ import annotations

import math
import operator
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

MICRO = 10**6
UINT64_MAX = 2**64 - 1
# 2**64 - 1 millionths stands for epsilon = infinity (no guarantee); the contract refuses it above any budget.
EPSILON_INFINITE_MICRO = UINT64_MAX


def epsilon_to_micro(epsilon: float, *, round_up: bool = True) -> int:
    """An epsilon as the contract's millionths. A spent epsilon rounds UP (never under-reports privacy loss); pass
    `round_up=False` for a budget, which rounds DOWN (never allows more than asked). Decimal arithmetic on the
    float's shortest repr, so 1.1 is 1_100_000 and not 1_100_001, and the result m is the smallest (largest) with
    m / 1e6 >= (<=) epsilon. Infinity, and anything from (2**64 - 1) / 1e6 up, saturates to EPSILON_INFINITE_MICRO;
    NaN and negative values raise ValueError."""
    epsilon = float(epsilon)
    if math.isnan(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    if math.isinf(epsilon):
        return EPSILON_INFINITE_MICRO
    scaled = Decimal(repr(epsilon)) * MICRO
    micro = int(scaled.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_FLOOR))
    return min(micro, EPSILON_INFINITE_MICRO)


def micro_to_epsilon(micro: int) -> float:
    """Inverse of `epsilon_to_micro` (up to its rounding): millionths to ε; 2**64 - 1 is ∞. Any integer type
    (numpy's too, through `__index__`), not bool."""
    try:
        value = operator.index(micro)
    except TypeError:
        value = None
    if isinstance(micro, bool) or value is None or not 0 <= value <= UINT64_MAX:
        raise ValueError(f"micro must be an integer in [0, 2**64 - 1], got {micro!r}")
    if value == EPSILON_INFINITE_MICRO:
        return math.inf
    return value / MICRO


__all__ = ["EPSILON_INFINITE_MICRO", "MICRO", "UINT64_MAX", "epsilon_to_micro", "micro_to_epsilon"]
