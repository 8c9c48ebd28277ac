"""What `create_task` refuses before sending anything: a threshold that is not a strict majority (the contract's
start() would revert, review M4), a sample cap or fault limit out of the contract's range (review M5, L5)."""

from __future__ import annotations

import inspect

import pytest

from fedchain.app.deploy import DEFAULT_MAX_AGGREGATOR_FAULTS, DEFAULT_MAX_SAMPLES_PER_UPDATE, TaskPlan, create_task
from fedchain.cli.task import deploy

AGGREGATORS = tuple(f"0x{i:040x}" for i in range(1, 5))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aggregators": AGGREGATORS[:3], "aggregator_threshold": 1}, "not a majority"),
        ({"aggregators": AGGREGATORS[:4], "aggregator_threshold": 2}, "not a majority"),
        ({"aggregators": AGGREGATORS[:2], "aggregator_threshold": 3}, "exceeds"),
        ({"max_samples_per_update": 0}, "max_samples_per_update"),
        ({"max_samples_per_update": 2**32}, "max_samples_per_update"),
        ({"max_aggregator_faults": 0}, "max_aggregator_faults"),
    ],
)
def test_refused_before_deploying(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_task(None, None, None, TaskPlan(**changes))  # type: ignore[arg-type]


def test_defaults_are_majority_and_shared_with_the_cli() -> None:
    for n in range(1, 8):
        k = TaskPlan(aggregators=AGGREGATORS[: min(n, 4)]).threshold()
        assert len(AGGREGATORS[: min(n, 4)]) / 2 < k <= len(AGGREGATORS[: min(n, 4)])
    defaults = {name: p.default for name, p in inspect.signature(deploy).parameters.items()}
    assert defaults["max_samples_per_update"] == DEFAULT_MAX_SAMPLES_PER_UPDATE
    assert defaults["max_aggregator_faults"] == DEFAULT_MAX_AGGREGATOR_FAULTS
    assert TaskPlan().max_samples_per_update == DEFAULT_MAX_SAMPLES_PER_UPDATE
