"""Robust aggregation under attack in a quick in-process federated run (10 devices, 3 attackers, 10 rounds).

The full table (every strategy x every attack, more seeds) is `python -m fedchain.learning.simulation
attacks`. On this task (breast cancer, binary, Dirichlet(0.5) label skew) a plain sign flip (factor 1) of a
label-skewed device's update looks like an honest update from a device skewed the other way, and no rule here
resists it; the tests use the boosted sign flip (x10) and constant updates, which the robust rules do resist, and
pin down where each rule stands against clean FedAvg.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fedchain.learning.aggregation import StrategySpec, build_strategy
from fedchain.learning.simulation import simulate

SEEDS = (0, 1, 2)
SPECS = {
    "fedavg": StrategySpec("fedavg"),
    "multi-krum": StrategySpec("multi-krum", {"f": 3}),
    "trimmed-mean": StrategySpec("trimmed-mean", {"beta": 0.3}),
    # n = 10 allows at most f = 1 (n >= 4f + 3): below the 3 attackers, so no guarantee applies.
    "bulyan": StrategySpec("bulyan", {"f": 1}),
}


@functools.cache
def accuracy(strategy: str, attack: str, alpha: float | None, seeds: tuple[int, ...] = SEEDS) -> float:
    return float(np.mean([simulate(build_strategy(SPECS[strategy]), attack, alpha=alpha, seed=s) for s in seeds]))


def test_non_iid_boosted_sign_flip() -> None:
    clean = accuracy("fedavg", "none", 0.5)
    attacked = accuracy("fedavg", "sign-flip-x10", 0.5)
    multi_krum = accuracy("multi-krum", "sign-flip-x10", 0.5)
    bulyan = accuracy("bulyan", "sign-flip-x10", 0.5)
    report = (
        f"clean fedavg {clean:.4f}, attacked fedavg {attacked:.4f}, multi-krum {multi_krum:.4f}, bulyan {bulyan:.4f}"
    )
    assert attacked < clean - 0.2, report
    assert multi_krum >= clean - 0.02, report
    # Bulyan (f = 1 < 3 attackers) recovers most, not all, of the clean accuracy.
    assert bulyan >= attacked + 0.2 and bulyan >= clean - 0.08, report


@pytest.mark.parametrize("strategy", ["multi-krum", "trimmed-mean", "bulyan"])
def test_non_iid_constant_updates(strategy: str) -> None:
    clean = accuracy("fedavg", "none", 0.5)
    attacked = accuracy("fedavg", "constant", 0.5)
    robust = accuracy(strategy, "constant", 0.5)
    report = f"clean fedavg {clean:.4f}, attacked fedavg {attacked:.4f}, {strategy} {robust:.4f}"
    assert attacked < clean - 0.2, report
    assert robust >= clean - 0.025, report


@pytest.mark.parametrize("strategy", ["multi-krum", "trimmed-mean", "bulyan"])
def test_iid_boosted_sign_flip(strategy: str) -> None:
    clean = accuracy("fedavg", "none", None, (0,))
    attacked = accuracy("fedavg", "sign-flip-x10", None, (0,))
    robust = accuracy(strategy, "sign-flip-x10", None, (0,))
    report = f"clean fedavg {clean:.4f}, attacked fedavg {attacked:.4f}, {strategy} {robust:.4f}"
    assert attacked < clean - 0.2, report
    assert robust >= clean - 0.02, report
