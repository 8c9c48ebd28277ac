"""The RDP accountant over DP-FedAvg rounds, its inverse, and ε's fixed-point encoding for the chain."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from fedchain.privacy.accountant import (
    EPSILON_TOLERANCE,
    default_delta,
    epsilon_after,
    epsilon_curve,
    noise_multiplier_for,
    rounds_within_budget,
)
from fedchain.protocol.epsilon import EPSILON_INFINITE_MICRO, epsilon_to_micro, micro_to_epsilon

DELTA = 1e-5


@pytest.mark.parametrize(("z", "q", "rounds"), [(1.0, 1.0, 10), (3.5, 1.0, 30), (1.1, 0.2, 25), (0.8, 0.05, 100)])
def test_matches_opacus_rdp_accountant(z: float, q: float, rounds: int) -> None:
    accountant = RDPAccountant()
    for _ in range(rounds):
        accountant.step(noise_multiplier=z, sample_rate=q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns when the best order is at the edge of its grid
        opacus_eps = accountant.get_epsilon(delta=DELTA)
    same_orders = epsilon_after(rounds, z, q, DELTA, orders=RDPAccountant.DEFAULT_ALPHAS)
    assert same_orders == pytest.approx(opacus_eps, rel=1e-12)
    # The wider default grid can only tighten the bound.
    assert epsilon_after(rounds, z, q, DELTA) <= opacus_eps + 1e-12


def test_monotone_in_rounds_and_noise() -> None:
    for q in (1.0, 0.3):
        curve = epsilon_curve(40, 1.5, q, DELTA)
        assert len(curve) == 40
        assert all(b > a for a, b in itertools.pairwise(curve))
        assert curve[-1] == pytest.approx(epsilon_after(40, 1.5, q, DELTA), rel=1e-12)
        by_noise = [epsilon_after(20, z, q, DELTA) for z in (0.6, 0.9, 1.5, 3.0, 10.0)]
        assert all(b < a for a, b in itertools.pairwise(by_noise))


def test_edge_cases() -> None:
    assert epsilon_after(0, 1.0, 1.0, DELTA) == 0.0
    assert epsilon_after(5, 0.0, 1.0, DELTA) == math.inf
    assert epsilon_after(5, 1.0, 0.0, DELTA) == 0.0
    assert epsilon_curve(0, 1.0, 1.0, DELTA) == []
    with pytest.raises(ValueError):
        epsilon_after(5, 1.0, 1.5, DELTA)
    with pytest.raises(ValueError):
        epsilon_after(5, -1.0, 1.0, DELTA)
    with pytest.raises(ValueError):
        epsilon_after(5, 1.0, 1.0, 0.0)
    assert default_delta(100) == 1e-5 and default_delta(1000) == pytest.approx(1e-6)


@pytest.mark.parametrize(
    ("epsilon", "rounds", "q"),
    [(8.0, 30, 1.0), (4.0, 30, 1.0), (1.0, 30, 1.0), (8.0, 50, 0.2), (4.0, 10, 0.5), (0.2, 5, 1.0), (50.0, 3, 1.0)],
)
def test_noise_multiplier_for_inverts_epsilon_after(epsilon: float, rounds: int, q: float) -> None:
    z = noise_multiplier_for(epsilon, DELTA, rounds, q)
    spent = epsilon_after(rounds, z, q, DELTA)
    assert epsilon - EPSILON_TOLERANCE <= spent <= epsilon


@pytest.mark.parametrize("epsilon", [0.5, 4.0, 30.0])
def test_noise_multiplier_for_honours_a_looser_tolerance(epsilon: float) -> None:
    z = noise_multiplier_for(epsilon, DELTA, 20, 1.0, tolerance=0.1 * epsilon)
    assert 0.9 * epsilon <= epsilon_after(20, z, 1.0, DELTA) <= epsilon


def test_noise_multiplier_for_edge_cases() -> None:
    assert noise_multiplier_for(math.inf, DELTA, 30, 1.0) == 0.0
    assert noise_multiplier_for(1.0, DELTA, 0, 1.0) == 0.0
    with pytest.raises(ValueError):
        noise_multiplier_for(0.0, DELTA, 10, 1.0)
    # More rounds or a smaller budget need more noise.
    assert noise_multiplier_for(4.0, DELTA, 40, 1.0) > noise_multiplier_for(4.0, DELTA, 20, 1.0)
    assert noise_multiplier_for(2.0, DELTA, 20, 1.0) > noise_multiplier_for(4.0, DELTA, 20, 1.0)


@pytest.mark.parametrize(("budget", "z", "q"), [(8.0, 3.0, 1.0), (1.0, 5.0, 1.0), (4.0, 1.0, 0.1)])
def test_rounds_within_budget(budget: float, z: float, q: float) -> None:
    rounds = rounds_within_budget(budget, z, q, DELTA, max_rounds=5000)
    assert 0 < rounds < 5000
    assert epsilon_after(rounds, z, q, DELTA) <= budget < epsilon_after(rounds + 1, z, q, DELTA)
    assert rounds_within_budget(budget, 1e4, 1.0, DELTA, max_rounds=77) == 77
    assert rounds_within_budget(budget, 0.0, 1.0, DELTA) == 0


def test_epsilon_micro_rounds_up() -> None:
    assert epsilon_to_micro(0.0) == 0
    assert epsilon_to_micro(1.0) == 1_000_000
    assert epsilon_to_micro(0.1) == 100_000
    assert epsilon_to_micro(1e-9) == 1
    assert epsilon_to_micro(2.0000001) == 2_000_001
    assert epsilon_to_micro(7.9999991) == 8_000_000
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 20, 5000), 10 ** rng.uniform(-7, 6, 5000), np.arange(0, 10, 1e-3)])
    for eps in values.tolist():
        micro = epsilon_to_micro(eps)
        assert isinstance(micro, int) and 0 <= micro < 2**64
        assert micro_to_epsilon(micro) >= eps  # never under-counts
        assert micro == 0 or (micro - 1) / 1e6 < eps  # and is the smallest that does not


def test_epsilon_micro_infinity_and_errors() -> None:
    assert epsilon_to_micro(math.inf) == EPSILON_INFINITE_MICRO == 2**64 - 1
    assert micro_to_epsilon(EPSILON_INFINITE_MICRO) == math.inf
    assert epsilon_to_micro(1e14) == EPSILON_INFINITE_MICRO  # beyond uint64 millionths: saturates, never wraps
    assert micro_to_epsilon(1_234_567) == 1.234567
    for bad in (-1e-9, math.nan):
        with pytest.raises(ValueError):
            epsilon_to_micro(bad)
    for bad_micro in (-1, 2**64, 1.5, True):
        with pytest.raises(ValueError):
            micro_to_epsilon(bad_micro)  # type: ignore[arg-type]


def test_default_orders_equal_opacus_and_module_import_skips_opacus() -> None:
    import subprocess
    import sys

    from fedchain.privacy.accountant import OPACUS_DEFAULT_ALPHAS

    assert list(OPACUS_DEFAULT_ALPHAS) == [float(a) for a in RDPAccountant.DEFAULT_ALPHAS]
    # Importing the accountant must not import opacus (1.3 s): the aggregator and the demo import it for every task.
    code = "import sys, fedchain.privacy.accountant; print('opacus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
