"""The aggregator's commit salt, its lying mode and the demo's Byzantine defaults: pure logic, no chain."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.aggregator.agreement import commit_salt
from fedchain.aggregator.hooks import lying_model
from fedchain.app.demo import DemoOptions, robust_defaults
from fedchain.chain import devnet_account
from fedchain.learning.aggregation.registry import StrategySpec

TASK = "0x" + "ab" * 20


def test_salt_is_stable_secret_and_specific() -> None:
    a, b = devnet_account(1), devnet_account(2)
    salt = commit_salt(a, TASK, 3)
    assert len(salt) == 32
    assert commit_salt(a, TASK, 3) == salt  # a restarted aggregator recomputes it: nothing stored between phases
    others = {commit_salt(b, TASK, 3), commit_salt(a, TASK, 4), commit_salt(a, "0x" + "cd" * 20, 3)}
    assert salt not in others and len(others) == 3
    assert bytes(a.key) not in salt and a.address.lower().encode() not in salt


def test_lying_model_differs_deterministically() -> None:
    honest = {"w": np.ones((3, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}
    lie = lying_model(honest, 5)
    assert set(lie) == set(honest) and all(lie[k].dtype == np.float32 for k in lie)
    assert not np.array_equal(lie["w"], honest["w"])
    assert all(np.array_equal(lie[k], lying_model(honest, 5)[k]) for k in lie)


@pytest.mark.parametrize(
    ("name", "params", "devices", "attackers", "expected"),
    [
        ("multi-krum", {}, 10, 3, {"f": 3, "m": 0}),
        ("krum", {}, 5, 2, {"f": 1}),  # n >= 2f + 3 caps f at 1 for 5 devices
        ("bulyan", {}, 10, 3, {"f": 1}),  # n >= 4f + 3
        ("trimmed-mean", {}, 10, 3, {"beta": 0.3}),
        ("multi-krum", {"f": 2}, 10, 3, {"f": 2, "m": 0}),  # an explicit bound is kept
        ("multi-krum", {}, 10, 0, {"f": 1, "m": 0}),
        ("fedavg", {}, 10, 3, {}),
    ],
)
def test_robust_defaults(name: str, params: dict, devices: int, attackers: int, expected: dict) -> None:
    assert dict(robust_defaults(StrategySpec(name, params), devices, attackers).params) == expected


def test_demo_options_are_checked() -> None:
    DemoOptions(aggregators=3, lying_aggregators=1, attackers=0.3).check()
    for bad in (
        DemoOptions(aggregators=0),
        DemoOptions(aggregators=3, threshold=4),
        DemoOptions(aggregators=2, lying_aggregators=3),
        DemoOptions(attackers=1.0),
        DemoOptions(attack="bribe"),
    ):
        with pytest.raises(ValueError):
            bad.check()
    options = DemoOptions(devices=10, aggregators=3, attackers=0.3)
    assert options.attacker_count() == 3
    assert options.aggregator_indices() == [1, 12, 13]
