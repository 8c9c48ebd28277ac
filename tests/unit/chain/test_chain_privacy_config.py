"""Privacy configuration off-chain: epsilon in the contract's millionths, and the TaskPlan fields behind TaskConfig."""

from __future__ import annotations

import math

import pytest

from fedchain.app.deploy import TaskPlan
from fedchain.chain import TaskConfig, epsilon_to_micro


@pytest.mark.parametrize(
    ("epsilon", "up", "down"),
    [
        (0.0, 0, 0),
        (1.0, 1_000_000, 1_000_000),
        (1.1, 1_100_000, 1_100_000),  # not 1_100_001: decimal arithmetic on the float's repr
        (0.3, 300_000, 300_000),
        (8.0, 8_000_000, 8_000_000),
        (1.0000001, 1_000_001, 1_000_000),
        (0.1234567, 123_457, 123_456),
        (1e-7, 1, 0),
    ],
)
def test_epsilon_to_micro_rounding(epsilon: float, up: int, down: int) -> None:
    assert epsilon_to_micro(epsilon) == up
    assert epsilon_to_micro(epsilon, round_up=False) == down


@pytest.mark.parametrize("epsilon", [-0.1, math.nan])
def test_epsilon_to_micro_refuses(epsilon: float) -> None:
    with pytest.raises(ValueError):
        epsilon_to_micro(epsilon)


@pytest.mark.parametrize("epsilon", [math.inf, 2.0**64])
def test_epsilon_to_micro_saturates(epsilon: float) -> None:
    """Infinity (no guarantee) and values beyond uint64 millionths saturate to 2**64 - 1, which the contract refuses
    above any budget (EpsilonTooHigh), so the deployer's plan check refuses them too."""
    assert epsilon_to_micro(epsilon) == 2**64 - 1


def test_plan_without_privacy() -> None:
    plan = TaskPlan()
    assert not plan.secure_aggregation
    assert plan.epsilon_micro() == (0, 0)


def test_plan_budget_rounds_down_and_first_round_up() -> None:
    plan = TaskPlan(epsilon_budget=8.0000009, first_round_epsilon=0.9000001)
    assert plan.epsilon_micro() == (8_000_000, 900_001)
    assert TaskPlan(epsilon_budget=3.0, first_round_epsilon=3.0).epsilon_micro() == (3_000_000, 3_000_000)


@pytest.mark.parametrize(
    ("budget", "first"),
    [
        (8.0, 0.0),  # a ledger needs the first round's epsilon
        (1.0, 1.0000001),  # one round over the budget (after rounding up)
        (1e-7, 1e-8),  # a budget below the contract's resolution
        (-1.0, 0.5),
    ],
)
def test_plan_refuses_what_the_contract_would(budget: float, first: float) -> None:
    with pytest.raises(ValueError):
        TaskPlan(epsilon_budget=budget, first_round_epsilon=first).epsilon_micro()


def test_task_config_tuple_order() -> None:
    """as_tuple follows FederatedTask.TaskConfig: the three privacy fields, then the two limits, come last."""
    config = TaskConfig(b"\x01" * 32, b"\x02" * 32, 3, 1, 2, 60, 0, 1, 30, True, 5_000_000, 1_000_000, 500, 2)
    assert config.as_tuple()[-5:] == (True, 5_000_000, 1_000_000, 500, 2)
    assert len(config.as_tuple()) == 14
    assert TaskConfig(b"\x01" * 32, b"\x02" * 32, 3, 1, 2, 60).as_tuple()[-5:] == (False, 0, 0, 2**32 - 1, 3)
