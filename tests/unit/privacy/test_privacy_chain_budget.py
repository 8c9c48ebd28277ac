"""The contract's conservative budget rule mirrored off chain, and the noise multiplier chosen to satisfy it."""

from __future__ import annotations

import math

from fedchain.privacy.accountant import chain_admits, epsilon_curve, noise_multiplier_for, noise_multiplier_for_chain


def test_chain_admits_hand_cases() -> None:
    assert chain_admits([], 1.0)
    assert chain_admits([1.0], 1.0) and not chain_admits([1.5], 1.0)
    # After round 1 (1.0) the next round would reach 1.0 + 1.0 = 2.0 by extrapolation.
    assert chain_admits([1.0, 1.8], 2.0) and not chain_admits([1.0, 1.8], 1.9)
    # The last round's ε is never extrapolated from: only rounds still to open are checked.
    assert chain_admits([1.0, 1.6, 2.1], 2.2)
    assert not chain_admits([1.0, 1.6, 2.1], 2.1)


def test_noise_for_chain_opens_every_round_within_budget() -> None:
    for epsilon, rounds in ((8.0, 10), (4.0, 5), (1.0, 3)):
        z = noise_multiplier_for_chain(epsilon, 1e-5, rounds)
        curve = epsilon_curve(rounds, z, 1.0, 1e-5)
        assert chain_admits(curve, epsilon) and curve[-1] <= epsilon
        assert z >= noise_multiplier_for(epsilon, 1e-5, rounds, 1.0)
        assert z <= 1.2 * noise_multiplier_for(epsilon, 1e-5, rounds, 1.0)  # the rule costs little noise
    assert noise_multiplier_for_chain(math.inf, 1e-5, 10) == 0.0
