"""Update-norm clipping, a defence that composes with any strategy (Sun et al. 2019, "Can You Really Backdoor
Federated Learning?"; the bounded-update defence of DP-FedAvg, McMahan et al. 2018).

Each update's delta from the global model, d = w - x, is scaled to norm max_norm when longer:
w' = x + d·min(1, max_norm/||d||); the inner strategy then aggregates the w'. Norms are over all tensors (sorted
names, float64). The clipped weights are float32 again, so ||w' - x|| can exceed max_norm by the float32 rounding
of w' (at most half an ulp per coordinate), never more.
"""

from __future__ import annotations

import math

import numpy as np

from fedchain.learning.aggregation.base import AggregateResult, ServerState, Strategy, Update, number, sorted_names
from fedchain.learning.types import Weights


def delta_norm(global_weights: Weights, weights: Weights) -> float:
    """||w - x||₂ over all tensors: per-tensor float64 sums of squares, added in sorted-name order."""
    total = 0.0
    for name in sorted_names(global_weights):
        diff = np.subtract(weights[name], global_weights[name], dtype=np.float64)
        np.multiply(diff, diff, out=diff)
        total += float(diff.reshape(-1).sum())
    return math.sqrt(total)


def clip_update(global_weights: Weights, update: Update, max_norm: float) -> tuple[Update, bool]:
    """The update with its delta clipped to `max_norm`, and whether it was clipped (unchanged object if not)."""
    norm = delta_norm(global_weights, update.weights)
    if norm <= max_norm:
        return update, False
    scale = max_norm / norm
    clipped: Weights = {}
    for name, ref in global_weights.items():
        delta = np.subtract(update.weights[name], ref, dtype=np.float64)
        delta *= scale
        delta += ref
        clipped[name] = delta.astype(np.float32)
    return Update(update.device, clipped, update.num_samples), True


class NormClipping(Strategy):
    """Clip every update's delta to `max_norm` (> 0), then aggregate with `inner`."""

    name = "clipping"

    def __init__(self, inner: Strategy, max_norm: float) -> None:
        if not isinstance(inner, Strategy):
            raise ValueError(f"inner must be a Strategy, got {type(inner).__name__}")
        self.inner = inner
        self.max_norm = number("clipping", "clip_norm", max_norm, 0.0)
        if self.max_norm == 0.0:
            raise ValueError("clip_norm must be > 0")

    def params(self) -> dict[str, float | int]:
        return {**self.inner.params(), "clip_norm": self.max_norm}

    def __repr__(self) -> str:
        return f"NormClipping({self.inner!r}, max_norm={self.max_norm!r})"

    def within(self, n: int) -> Strategy:
        inner = self.inner.within(n)
        return self if inner is self.inner else NormClipping(inner, self.max_norm)

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        clipped_updates: list[Update] = []
        clipped: list[str] = []
        for update in updates:
            new, was_clipped = clip_update(global_weights, update, self.max_norm)
            clipped_updates.append(new)
            if was_clipped:
                clipped.append(update.device)
        result = self.inner.aggregate(global_weights, clipped_updates, state)
        return AggregateResult(result.weights, result.accepted, result.excluded, result.state, tuple(clipped))


__all__ = ["NormClipping", "clip_update", "delta_norm"]
