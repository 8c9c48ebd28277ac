"""Privacy accounting for DP-FedAvg rounds: Opacus's Rényi-DP analysis of the sampled Gaussian mechanism.

One federated round is one step of the sampled Gaussian mechanism: each device takes part with probability q (the
sample rate: devices sampled per round / population; 1.0 when every device takes part in every round), the clipped
sum gets Gaussian noise of std z·C (`fedchain.privacy.dp`). RDP composes additively over rounds and is converted to
(ε, δ) with Balle et al. 2020's bound, exactly as `opacus.accountants.RDPAccountant` does; the only difference is a
wider grid of orders (Opacus's default plus larger ones), which can only tighten the bound for small noise.

Choosing δ: it should be well below 1/population (δ is the chance the guarantee fails for someone). The
simulations use δ = 1e-5, which is below 1/N² for populations up to N = 316; `default_delta(N)` gives
min(1e-5, 1/N²) for larger ones.

On the chain ε is a uint64 in millionths, rounded up (`fedchain.protocol.epsilon.epsilon_to_micro`), so the
recorded spend never under-counts; 2**64 - 1 stands for ε = ∞ (no guarantee).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np

# Opacus's default orders (`RDPAccountant.DEFAULT_ALPHAS`, written out so importing this module does not import
# opacus, ~1.3 s with its torch.distributed and scipy imports; a unit test checks they are equal), plus larger ones
# for large ε (little noise), where the best order exceeds 63. Opacus itself is imported when ε is first computed.
OPACUS_DEFAULT_ALPHAS: tuple[float, ...] = (*(1 + x / 10.0 for x in range(1, 100)), *(float(a) for a in range(12, 64)))
ORDERS: tuple[float, ...] = (*OPACUS_DEFAULT_ALPHAS, 80.0, 96.0, 128.0, 256.0, 512.0)
# noise_multiplier_for's default tolerance: the ε it achieves lies in [target - tolerance, target].
EPSILON_TOLERANCE = 0.01


def _check(noise_multiplier: float, sample_rate: float, delta: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be >= 0 and finite, got {noise_multiplier}")
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def _rounds(rounds: int) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 0:
        raise ValueError(f"rounds must be a non-negative integer, got {rounds!r}")
    return int(rounds)


def default_delta(population: int) -> float:
    """min(1e-5, 1/population²): δ well below 1/population for any population size."""
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    return min(1e-5, 1.0 / population**2)


def _rdp_per_round(noise_multiplier: float, sample_rate: float, orders: Sequence[float]) -> np.ndarray:
    return np.array(_rdp_cached(float(noise_multiplier), float(sample_rate), tuple(float(a) for a in orders)))


@functools.lru_cache(maxsize=512)
def _rdp_cached(noise_multiplier: float, sample_rate: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    # For q < 1 Opacus's fractional orders cost ~0.2 s per call: searches and tables ask for the same values again.
    from opacus.accountants.analysis import rdp as opacus_rdp

    rdp = opacus_rdp.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(orders))
    return tuple(float(r) for r in np.atleast_1d(rdp))


def _epsilon(rdp: np.ndarray, delta: float, orders: Sequence[float]) -> float:
    if not np.any(rdp):  # nothing spent yet (no rounds, or q = 0)
        return 0.0
    if np.all(np.isinf(rdp)):  # no noise: no guarantee
        return math.inf
    from opacus.accountants.analysis import rdp as opacus_rdp

    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": the bound is still valid, only perhaps not the tightest.
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = opacus_rdp.get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)
    return max(0.0, float(eps))


def epsilon_curve(
    rounds: int, noise_multiplier: float, sample_rate: float, delta: float, orders: Sequence[float] = ORDERS
) -> list[float]:
    """ε after each of rounds 1..`rounds` (non-decreasing)."""
    rounds = _rounds(rounds)
    _check(noise_multiplier, sample_rate, delta)
    per_round = _rdp_per_round(noise_multiplier, sample_rate, orders)
    return [_epsilon(per_round * t, delta, orders) for t in range(1, rounds + 1)]


def epsilon_after(
    rounds: int, noise_multiplier: float, sample_rate: float, delta: float, orders: Sequence[float] = ORDERS
) -> float:
    """ε spent after `rounds` rounds of DP-FedAvg (0 for 0 rounds, ∞ without noise)."""
    rounds = _rounds(rounds)
    _check(noise_multiplier, sample_rate, delta)
    if rounds == 0:
        return 0.0
    return _epsilon(_rdp_per_round(noise_multiplier, sample_rate, orders) * rounds, delta, orders)


def rounds_within_budget(
    epsilon_budget: float,
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    max_rounds: int = 10**6,
    orders: Sequence[float] = ORDERS,
) -> int:
    """The most rounds (<= max_rounds) whose ε stays within `epsilon_budget` (ε is non-decreasing in rounds)."""
    _check(noise_multiplier, sample_rate, delta)
    if not epsilon_budget >= 0:
        raise ValueError(f"epsilon_budget must be >= 0, got {epsilon_budget}")
    per_round = _rdp_per_round(noise_multiplier, sample_rate, orders)

    def fits(t: int) -> bool:
        return _epsilon(per_round * t, delta, orders) <= epsilon_budget

    if fits(max_rounds):
        return max_rounds
    lo, hi = 0, max_rounds  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def noise_multiplier_for(
    epsilon: float,
    delta: float,
    rounds: int,
    sample_rate: float,
    tolerance: float = EPSILON_TOLERANCE,
    orders: Sequence[float] = ORDERS,
) -> float:
    """The noise multiplier z for which `rounds` rounds spend ε within [epsilon - tolerance, epsilon].

    A bracketing search on z (ε falls as z grows; log-log interpolation, guarded like bisection), at most a few
    dozen evaluations of the accountant; the returned z is always on the safe side: epsilon_after(z) <= epsilon.
    ε = ∞ (or 0 rounds) needs no noise: 0.0. ValueError if epsilon <= 0.
    """
    rounds = _rounds(rounds)
    _check(0.0, sample_rate, delta)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if math.isinf(epsilon) or rounds == 0 or sample_rate == 0:
        return 0.0

    def eps(z: float) -> float:
        return epsilon_after(rounds, z, sample_rate, delta, orders)

    # Bracket: eps(lo) > epsilon >= eps(hi), both z > 0 so both ε are finite.
    lo, hi = 0.5, 1.0
    e_lo, e_hi = eps(lo), eps(hi)
    while e_hi > epsilon:
        lo, e_lo, hi = hi, e_hi, hi * 2.0
        if hi > 1e6:
            raise ValueError(f"no noise multiplier up to 1e6 reaches epsilon {epsilon} in {rounds} rounds")
        e_hi = eps(hi)
    while e_lo <= epsilon:
        hi, e_hi, lo = lo, e_lo, lo / 2.0
        if lo < 1e-9:
            return hi
        e_lo = eps(lo)
    # ε(z) is close to a power law in z: interpolate in log-log space, kept inside the bracket's middle 80%.
    target = math.log(epsilon - tolerance / 2.0)
    for _ in range(200):
        if e_hi >= epsilon - tolerance:
            break
        t = (math.log(e_lo) - target) / (math.log(e_lo) - math.log(e_hi))
        t = min(0.9, max(0.1, t))
        mid = math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))
        e_mid = eps(mid)
        if e_mid <= epsilon:
            hi, e_hi = mid, e_mid
        else:
            lo, e_lo = mid, e_mid
    return hi


def chain_admits(epsilons: Sequence[float], budget: float) -> bool:
    """Whether the task contract's budget rule lets every round of the ε curve `epsilons` (ε after rounds 1..R)
    open: round 1 when ε₁ <= budget, round r + 1 when εᵣ + (εᵣ - εᵣ₋₁) <= budget. RDP composition makes ε concave
    in the rounds, so the last increment bounds the next one; the rule is conservative by that extrapolation."""
    if not epsilons:
        return True
    if epsilons[0] > budget:
        return False
    previous = 0.0
    for current in epsilons[:-1]:
        if current + (current - previous) > budget:
            return False
        previous = current
    return True


def noise_multiplier_for_chain(
    epsilon: float, delta: float, rounds: int, sample_rate: float = 1.0, step: float = 1.01
) -> float:
    """The smallest noise multiplier (to a factor `step`) spending at most `epsilon` after `rounds` rounds whose
    every round the contract's conservative budget rule (`chain_admits`) also opens."""
    z = noise_multiplier_for(epsilon, delta, rounds, sample_rate)
    if not math.isfinite(epsilon):
        return z
    while not chain_admits(epsilon_curve(rounds, z, sample_rate, delta), epsilon):
        z *= step
    return z


__all__ = [
    "EPSILON_TOLERANCE",
    "ORDERS",
    "chain_admits",
    "default_delta",
    "epsilon_after",
    "epsilon_curve",
    "noise_multiplier_for",
    "noise_multiplier_for_chain",
    "rounds_within_budget",
]
