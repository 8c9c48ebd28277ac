"""Trusted-reference filtering, a defence that composes with any strategy (the trust test of FLTrust: Cao, Fang,
Liu and Gong 2021, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping").

Why: under label skew a reversed (sign-flip) or label-flipped update looks like an honest update of a device skewed
toward the other class, with an honest norm, so distance- and rank-based rules (Krum, trimmed mean, Bulyan) cannot
single it out (the heterogeneity lower bound of Karimireddy, He and Jaggi 2022). A direction learned from a small
trusted root dataset can: every aggregator trains the global model on the task's root set (deterministic: same
seed, one thread), and an update whose delta does not point the same way as the reference delta (cosine <= the
threshold, 0 by default as in FLTrust's ReLU) is left out before the inner rule sees the round. The inner rule then
handles the attackers the filter cannot see (those that point the right way: scaled, noisy or constant updates).

Updates that pass are clipped to the reference delta's norm (FLTrust normalises every update to it; clipping only
scales down, so small honest updates keep their size): an attacker pointing the trusted way cannot weigh more than
the root set's own step, which blunts scaled and constant updates before the inner rule.

A rule with a Byzantine bound f (Krum, Multi-Krum, Bulyan) needs enough inputs for its f. When the filter leaves
fewer, the inner rule runs with the largest f the survivors allow (`Strategy.within`), never a larger one.

Determinism: cosines are float64 element-wise products summed per tensor in sorted-name order (numpy's pairwise
sum); the reference model comes from deterministic local training. A different CPU could round the reference's
training differently in the last bits, which only matters to an update whose cosine lies within that rounding of
the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from fedchain.learning.aggregation.base import (
    AggregateResult,
    ServerState,
    Strategy,
    Update,
    number,
    sorted_names,
)
from fedchain.learning.aggregation.clipping import clip_update, delta_norm
from fedchain.learning.types import Weights

# Trains a copy of the model from the given global weights on the task's trusted root set and returns its weights.
ReferenceTrainer = Callable[[Weights], Weights]


def delta_cosine(global_weights: Weights, weights: Weights, reference: Weights) -> float:
    """cos(w - x, r - x) over all tensors (float64, sorted names); 0.0 when either delta is zero."""
    dot = 0.0
    norm_w = 0.0
    norm_r = 0.0
    for name in sorted_names(global_weights):
        base = global_weights[name]
        d = np.subtract(weights[name], base, dtype=np.float64).reshape(-1)
        r = np.subtract(reference[name], base, dtype=np.float64).reshape(-1)
        dot += float(np.multiply(d, r).sum())
        norm_w += float(np.multiply(d, d).sum())
        norm_r += float(np.multiply(r, r).sum())
    if norm_w == 0.0 or norm_r == 0.0:
        return 0.0
    return dot / (math.sqrt(norm_w) * math.sqrt(norm_r))


class MissingReference(ValueError):
    """The strategy filters by a trusted reference but was built without a root-set trainer."""


class ReferenceFilter(Strategy):
    """Leave out updates whose delta has cosine <= `min_cosine` with the root-set reference delta, then `inner`."""

    name = "reference"

    def __init__(
        self, inner: Strategy, root_samples: int, reference: ReferenceTrainer | None, min_cosine: float = 0.0
    ) -> None:
        if not isinstance(inner, Strategy):
            raise ValueError(f"inner must be a Strategy, got {type(inner).__name__}")
        if isinstance(root_samples, bool) or not isinstance(root_samples, int) or root_samples < 1:
            raise ValueError(f"root_samples must be an integer >= 1, got {root_samples!r}")
        self.inner = inner
        self.root_samples = root_samples
        self.reference = reference
        self.min_cosine = number("reference", "min_cosine", min_cosine, -1.0, 1.0)

    def params(self) -> dict[str, float | int]:
        return {**self.inner.params(), "root_samples": self.root_samples}

    def __repr__(self) -> str:
        return f"ReferenceFilter({self.inner!r}, root_samples={self.root_samples!r})"

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        if self.reference is None:
            raise MissingReference(
                "this strategy filters updates by a trusted root-set reference (root_samples) but no root-set "
                "trainer was given: build it with build_strategy(spec, reference=root_reference_trainer(task))"
            )
        reference = self.reference(global_weights)
        bound = delta_norm(global_weights, reference)
        kept: list[Update] = []
        clipped: list[str] = []
        excluded: dict[str, str] = {}
        for update in updates:
            cosine = delta_cosine(global_weights, update.weights, reference)
            if cosine > self.min_cosine:
                new, was_clipped = clip_update(global_weights, update, bound) if bound > 0 else (update, False)
                kept.append(new)
                if was_clipped:
                    clipped.append(update.device)
            else:
                excluded[update.device] = (
                    f"reference: cosine {cosine:.3f} with the root-set update is <= {self.min_cosine}"
                )
        if not kept:
            # Nothing points the trusted way: keep the model (an empty round) rather than guess.
            weights = {name: np.array(value, dtype=np.float32, copy=True) for name, value in global_weights.items()}
            return AggregateResult(weights, (), excluded, state)
        result = self.inner.within(len(kept)).aggregate(global_weights, kept, state)
        accepted = set(result.accepted)
        clipped_too = tuple(d for d in clipped if d in accepted and d not in result.clipped)
        return AggregateResult(
            result.weights,
            result.accepted,
            {**excluded, **result.excluded},
            result.state,
            tuple(result.clipped) + clipped_too,
        )


__all__ = ["MissingReference", "ReferenceFilter", "ReferenceTrainer", "delta_cosine"]
