"""The one epsilon-to-millionths conversion: the chain binding, the deployer and the aggregators share it."""

from __future__ import annotations

import numpy as np
import pytest

import fedchain.chain.task as chain_task
from fedchain.protocol.epsilon import EPSILON_INFINITE_MICRO, MICRO, epsilon_to_micro


def test_one_function_everywhere() -> None:
    assert chain_task.epsilon_to_micro is epsilon_to_micro


@pytest.mark.parametrize(
    ("epsilon", "up", "down"),
    [
        (1.1, 1_100_000, 1_100_000),  # exact in decimal: no spurious + 1
        (0.3, 300_000, 300_000),
        (2.0000001, 2_000_001, 2_000_000),
        (7.9999991, 8_000_000, 7_999_999),
        (1e-9, 1, 0),
        (1e14, EPSILON_INFINITE_MICRO, EPSILON_INFINITE_MICRO),
    ],
)
def test_rounding_direction(epsilon: float, up: int, down: int) -> None:
    assert epsilon_to_micro(epsilon) == up
    assert epsilon_to_micro(epsilon, round_up=False) == down


def test_smallest_count_that_does_not_under_report() -> None:
    """Rounded up: decoded as a float it is >= epsilon, and one millionth less would be below it."""
    rng = np.random.default_rng(1)
    for eps in np.concatenate([rng.uniform(0, 20, 3000), 10 ** rng.uniform(-7, 6, 3000)]).tolist():
        up = epsilon_to_micro(eps)
        down = epsilon_to_micro(eps, round_up=False)
        assert up / MICRO >= eps and (up == 0 or (up - 1) / MICRO < eps)
        assert down / MICRO <= eps and down <= up <= down + 1
