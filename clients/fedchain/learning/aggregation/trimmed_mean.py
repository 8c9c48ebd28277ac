"""Coordinate-wise trimmed mean (Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates"): per parameter, drop the k = floor(beta·n) largest and k smallest values, average the rest.

beta is read as the decimal it is written as (0.3 means 3/10, so 10 updates trim exactly 3 each side). Unweighted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import ClassVar

import numpy as np

from fedchain.learning.aggregation.base import (
    AggregateResult,
    ServerState,
    Strategy,
    Update,
    coordinatewise,
    devices,
    number,
)
from fedchain.learning.types import Weights


def trim_count(beta: float, n: int) -> int:
    """floor(beta·n) computed exactly on beta's shortest decimal form (no 0.3·10 = 2.9999 surprises)."""
    return math.floor(Fraction(repr(float(beta))) * n)


def trimmed_mean(global_weights: Weights, updates: tuple[Update, ...], trim: int) -> Weights:
    """Mean of the middle n - 2·trim values of every coordinate, summed in float64 in sorted order."""
    n = len(updates)
    if not 0 <= 2 * trim < n:
        raise ValueError(f"cannot trim {trim} from each side of {n} updates")
    keep = n - 2 * trim

    def reduce(block: np.ndarray) -> np.ndarray:
        return block[:, trim : n - trim].astype(np.float64).sum(axis=1) / np.float64(keep)

    return coordinatewise(global_weights, [u.weights for u in updates], reduce)


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean; `beta` in [0, 0.5) is the fraction trimmed from each side."""

    name = "trimmed-mean"
    strategy_id = 6
    label = "Trimmed mean"
    defaults: ClassVar[Mapping[str, float | int]] = {"beta": 0.1}

    def __init__(self, beta: float = 0.1) -> None:
        self.beta = number("trimmed-mean", "beta", beta, 0.0, 0.5)
        if self.beta == 0.5:
            raise ValueError("trimmed-mean.beta must be < 0.5")

    def params(self) -> dict[str, float | int]:
        return {"beta": self.beta}

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        trim = trim_count(self.beta, len(updates))
        return AggregateResult(trimmed_mean(global_weights, updates, trim), devices(updates))


__all__ = ["TrimmedMean", "trim_count", "trimmed_mean"]
