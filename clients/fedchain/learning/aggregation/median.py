"""Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates"): each parameter is the median of the devices' values; for an even count, the mean of the two middle ones.

Unweighted: sample counts are self-reported, and weighting by them would let one device buy the median.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from fedchain.learning.aggregation.base import AggregateResult, ServerState, Strategy, Update, coordinatewise, devices
from fedchain.learning.types import Weights


def median_of_sorted(block: np.ndarray) -> np.ndarray:
    """Row medians of a (c, n) block sorted along rows; float64 (exact: the mean of two float32 values)."""
    n = block.shape[1]
    lo = block[:, (n - 1) // 2].astype(np.float64)
    if n % 2:
        return lo
    return (lo + block[:, n // 2].astype(np.float64)) / 2.0


def coordinate_median(global_weights: Weights, updates: tuple[Update, ...]) -> Weights:
    """Coordinate-wise median of the updates' weights (float32)."""
    return coordinatewise(global_weights, [u.weights for u in updates], median_of_sorted)


class Median(Strategy):
    """Coordinate-wise median (Yin et al. 2018)."""

    name = "median"
    strategy_id = 5
    label = "Median"
    defaults: ClassVar[Mapping[str, float | int]] = {}

    def params(self) -> dict[str, float | int]:
        return {}

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        return AggregateResult(coordinate_median(global_weights, updates), devices(updates))


__all__ = ["Median", "coordinate_median", "median_of_sorted"]
