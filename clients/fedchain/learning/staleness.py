"""The maths of asynchronous buffered aggregation (FedBuff, Nguyen et al. 2022) on top of the ordinary strategies.

A buffered update was trained from an older version (its base) than the one it is aggregated into. What it carries
is its delta, update - base; the aggregator rebases it onto the current model, current + factor x (update - base),
and hands the rebased models to the task's strategy, so every strategy sees models "of this version".

- Weighted-mean strategies (FedAvg, FedProx): each update weighted by numSamples x w(staleness), normalised
  (chain.buffered.entry_weights), passed as integer weights (`integer_weights`); the factor is the buffer's
  sample-weighted mean w(staleness), so the new model is FedBuff's current + sum n_i w(s_i) delta_i / sum n_i.
- Strategies that take no weights (median, trimmed mean, Krum, Multi-Krum, Bulyan, with or without norm clipping or
  the root reference filter): they cannot weigh, so the staleness enters as FedBuff's own scaling of the delta,
  factor = w(staleness); numSamples is not used by them (as in synchronous rounds).
- Stateful server optimisers (FedAvgM, FedAdam, FedYogi): one optimiser step per version. The buffer's pseudo-
  gradient is its staleness-weighted mean delta, sum n_i w(s_i) delta_i / sum n_i (the rebased updates with
  numSamples weights, each delta scaled by its w(s)), the optimiser steps from the version the buffer builds on, and
  its state goes from version to version through the reports (fedchain.aggregator.buffered), as it goes from round
  to round in synchronous tasks. Versions form a chain (one buffer aggregates at a time), so the state does too.
- Secure aggregation and sealed updates are refused (`check_buffered_strategy` says why). Pairwise masks cancel only
  in the sum over a participant set fixed before anyone masks, and a device must mask its update already multiplied
  by its weight. In a buffered task both are unknown when the device trains and uploads: the buffer's members are
  whoever the chain accepts first, and the weight w(s) depends on the version current when the update lands. A
  variant would need a second, per-buffer phase on chain (members fixed -> staleness fixed -> each member masks
  n_i w(s_i) delta_i among the members -> unmask shares), i.e. synchronous rounds inside each buffer, with every
  member online twice: the round trip that buffered tasks exist to avoid, and a contract change. Robust strategies
  need the individual updates, which secure aggregation hides by design.

Pure and deterministic: float64 elementwise arithmetic in a fixed order, cast to float32, so every aggregator
computes bit-identical rebased models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedchain.learning.aggregation.registry import WEIGHTED_MEAN_STRATEGIES, StrategySpec
from fedchain.learning.types import Weights

# Normalised weights (summing to 1) become integers out of this total for the strategies' integer weights.
WEIGHT_SCALE = 1_000_000_000


def check_buffered_strategy(
    strategy: StrategySpec, secure_aggregation: bool = False, seal_updates: bool = False
) -> None:
    """ValueError for what buffered tasks cannot aggregate (see the module's notes)."""
    if secure_aggregation or seal_updates:
        raise ValueError(
            "buffered tasks do not support secure aggregation or sealed updates: pairwise masks cancel only over a "
            "participant set fixed before masking, and each masked update must already carry its weight, while a "
            "buffer's members and their staleness weights w(s) are fixed only when the chain accepts their updates "
            "(after the device trained and uploaded); use --mode sync for secure aggregation"
        )


def min_updates(strategy: StrategySpec) -> int:
    """The fewest updates the strategy can aggregate: Krum and Multi-Krum need 2f+3 (Multi-Krum also its m), Bulyan
    4f+3, the others 1."""
    f = int(strategy.params.get("f", 0))
    if strategy.name in ("krum", "multi-krum"):
        return max(2 * f + 3, int(strategy.params.get("m", 0)))
    if strategy.name == "bulyan":
        return 4 * f + 3
    return 1


def check_buffer_size(strategy: StrategySpec, smallest_buffer: int) -> None:
    """ValueError when a buffer of `smallest_buffer` updates (the buffer size K, or the minimum with which a buffer
    may close early) is too small for the strategy: every such buffer would fail to aggregate."""
    need = min_updates(strategy)
    if smallest_buffer < need:
        raise ValueError(
            f"{strategy.name} with {dict(strategy.params)} needs at least {need} updates per aggregate, but a buffer "
            f"may be aggregated with {smallest_buffer}: raise --buffer-size (and --min-buffer-size) to {need} or "
            "choose a smaller f"
        )


def weighs_samples(strategy: StrategySpec) -> bool:
    """Whether the strategy is a weighted mean (staleness enters the weights) rather than a weightless robust rule
    (staleness scales the delta)."""
    return strategy.name in WEIGHTED_MEAN_STRATEGIES


def rebase(current: Weights, base: Weights, update: Weights, factor: float = 1.0) -> Weights:
    """current + factor x (update - base), tensor by tensor in float64, as float32. KeyError/ValueError when the
    three do not have the same tensors and shapes (the caller rejects the update)."""
    if set(update) != set(current) or set(base) != set(current):
        raise ValueError("the update's tensors differ from the model's")
    out: Weights = {}
    for name in sorted(current):
        c = np.asarray(current[name], dtype=np.float64)
        b = np.asarray(base[name], dtype=np.float64)
        u = np.asarray(update[name], dtype=np.float64)
        if u.shape != c.shape or b.shape != c.shape:
            raise ValueError(f"tensor {name}: shape {u.shape}, the model's is {c.shape}")
        delta = u - b
        if factor != 1.0:
            delta = delta * np.float64(factor)
        out[name] = (c + delta).astype(np.float32)
    return out


def integer_weights(normalised: Sequence[float], scale: int = WEIGHT_SCALE) -> list[int]:
    """Normalised weights as positive integers out of `scale` (each at least 1), for the strategies' num_samples."""
    return [max(1, round(w * scale)) for w in normalised]


__all__ = [
    "WEIGHT_SCALE",
    "check_buffer_size",
    "check_buffered_strategy",
    "integer_weights",
    "min_updates",
    "rebase",
    "weighs_samples",
]
