"""Bulyan (El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed Learning in Byzantium").

1. Selection: apply Krum repeatedly, each time moving the chosen update from the remaining set to the selection,
   until theta = n - 2f updates are selected (scores recomputed within the remaining set; the neighbour count
   r - f - 2 is floored at 1 in the last iterations, where the remaining set is small).
2. Aggregation: per coordinate, the mean of the beta = theta - 2f selected values closest to their median.
Needs n >= 4f + 3. Selection uses Krum's deterministic distances (see `krum`); the coordinate phase works on
sorted values, so it is CPU-independent. Ties in the coordinate phase (two windows equally close to the median) go
to the window of smaller values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from fedchain.learning.aggregation.base import (
    AggregateResult,
    ServerState,
    Strategy,
    UnweightedMean,
    Update,
    coordinatewise,
    devices,
    integer,
)
from fedchain.learning.aggregation.krum import DistanceBounds, Selection, best_candidates, select
from fedchain.learning.aggregation.median import median_of_sorted
from fedchain.learning.types import Weights


def check_bulyan_count(n: int, f: int) -> None:
    if n < 4 * f + 3:
        raise ValueError(f"bulyan with f={f} needs n >= 4f+3 = {4 * f + 3} updates, got n={n}")


def bulyan_select(global_weights: Weights, weights: Sequence[Weights], f: int, method: str = "auto") -> Selection:
    """Indices of the theta = n - 2f updates picked by repeated Krum."""
    n = len(weights)
    check_bulyan_count(n, f)
    theta = n - 2 * f

    def selector(bounds: DistanceBounds) -> list[int] | None:
        remaining = list(range(n))
        chosen: list[int] = []
        for _ in range(theta):
            best = best_candidates(bounds, np.array(remaining), f, 1)
            if best is None:
                return None
            chosen.append(best[0])
            remaining.remove(best[0])
        return sorted(chosen)

    return select(global_weights, weights, selector, method)


def closest_to_median_mean(block: np.ndarray, keep: int) -> np.ndarray:
    """Per row of a (c, t) block sorted along rows: the mean of the `keep` values closest to the row's median.

    Those values form a contiguous window in sorted order; the window whose farther end is nearest the median wins,
    the leftmost on ties. Summed in float64 in sorted order.
    """
    t = block.shape[1]
    med = median_of_sorted(block)[:, None]
    values = block.astype(np.float64)
    starts = t - keep + 1
    # Window s spans sorted positions s..s+keep-1; its reach is how far its farther end lies from the median.
    reach = np.maximum(med - values[:, :starts], values[:, keep - 1 :] - med)
    best = np.argmin(reach, axis=1)
    window = np.take_along_axis(values, best[:, None] + np.arange(keep)[None, :], axis=1)
    return window.sum(axis=1) / np.float64(keep)


class Bulyan(Strategy):
    """Bulyan over Krum (El Mhamdi et al. 2018); `f` Byzantine updates tolerated, n >= 4f + 3."""

    name = "bulyan"
    strategy_id = 9
    label = "Bulyan"
    defaults: ClassVar[Mapping[str, float | int]] = {"f": 1}

    def __init__(self, f: int = 1) -> None:
        self.f = integer("bulyan", "f", f, 0)

    def params(self) -> dict[str, float | int]:
        return {"f": self.f}

    def within(self, n: int) -> Strategy:
        if n >= 4 * self.f + 3:
            return self
        return Bulyan((n - 3) // 4) if n >= 3 else UnweightedMean()

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        check_bulyan_count(len(updates), self.f)
        sel = bulyan_select(global_weights, [u.weights for u in updates], self.f)
        chosen = tuple(updates[i] for i in sel.indices)
        keep = len(chosen) - 2 * self.f
        weights = coordinatewise(
            global_weights, [u.weights for u in chosen], lambda block: closest_to_median_mean(block, keep)
        )
        keep_set = set(sel.indices)
        excluded = {u.device: "bulyan: not selected by Krum" for i, u in enumerate(updates) if i not in keep_set}
        return AggregateResult(weights, devices(chosen), excluded)


__all__ = ["Bulyan", "bulyan_select", "check_bulyan_count", "closest_to_median_mean"]
