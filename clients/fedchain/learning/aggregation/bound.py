"""A bound on how far one update may move from the round's global model, checked before any strategy runs.

An update w is left out (reason "update-too-large") when its L2 distance from the global model x exceeds

    limit = max_relative_distance · max(||x||₂, MIN_REFERENCE_NORM)

Without it FedAvg averages whatever finite values a device sends: a device of a live devnet sent weights of 1e30,
and the next global model held weights of 1.1e29 (loss NaN, accuracy 0.37). Non-finite values are refused earlier
(`check_weights`, reason "non-finite").

Default 5.0, from honest updates of the demo task (the default task spec: the MLP on breast cancer, SGD lr 0.1,
momentum 0.9, one local epoch; `||x||` of the initial model is 4.22), every update of every round, measured in
process with the devices' own seeds:
* the demo (5 IID devices, online data, 10 and 30 rounds, FedAvg/FedProx): at most 0.105;
* 10-20 devices with Dirichlet 0.3-0.5 label skew: at most 0.25; 50 devices: 0.034;
* the largest steps: one device holding all 426 training samples at round 1: 0.874; 3 devices with Dirichlet 0.1:
  0.644; 5 non-IID devices under the coordinate-wise median: 0.868 (the rule drifts, the devices pull back).
5.0 leaves a margin of 5.7 over the largest honest step seen and 47 over the demo's, and still refuses the gross
attacks of `fedchain.learning.attacks` in every round: 1e30 weights, Gaussian noise of σ = 1 and a constant model of
ones (7.4-9.4·||x|| over 30 demo rounds, with 5 IID or 20 label-skewed devices; ||x|| grows from 4.22 to 5.35).
Attacks that stay under it (a sign-flipped update boosted tenfold: 0.1-0.8·||x|| in the demo, ten honest steps)
are the robust strategies' job.

The floor MIN_REFERENCE_NORM keeps a global model near zero from refusing every update. Deterministic: the norms are
float64 sums of squares per tensor (numpy's pairwise sum over a contiguous array, whose order depends only on its
length) added in sorted-name order, so every aggregator reaches the same verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedchain.learning.aggregation.base import sorted_names
from fedchain.learning.aggregation.clipping import delta_norm
from fedchain.learning.types import Weights

DEFAULT_MAX_RELATIVE_DISTANCE = 5.0
# ||x|| below this counts as this much: the initial models here have norms of a few units (4.22 for the demo's MLP).
MIN_REFERENCE_NORM = 1.0
REASON_TOO_LARGE = "update-too-large"


class UpdateTooLarge(ValueError):
    """An update farther from the global model than the bound allows; `reason` is the report's reason."""

    reason = REASON_TOO_LARGE


def weights_norm(weights: Weights) -> float:
    """||w||₂ over all tensors: float64 sums of squares per tensor, added in sorted-name order."""
    total = 0.0
    for name in sorted_names(weights):
        flat = np.asarray(weights[name], dtype=np.float64).reshape(-1)
        total += float(np.multiply(flat, flat).sum())
    return math.sqrt(total)


@dataclass(frozen=True)
class UpdateBound:
    """The bound of one aggregator; `max_relative_distance` 0 turns it off (not recommended)."""

    max_relative_distance: float = DEFAULT_MAX_RELATIVE_DISTANCE

    def __post_init__(self) -> None:
        value = self.max_relative_distance
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"max_relative_distance must be a finite number >= 0, got {value!r}")
        object.__setattr__(self, "max_relative_distance", float(value))

    @property
    def enabled(self) -> bool:
        return self.max_relative_distance > 0

    def limit(self, global_weights: Weights) -> float:
        """The largest distance from `global_weights` an update may have (inf when the bound is off)."""
        if not self.enabled:
            return math.inf
        return self.max_relative_distance * max(weights_norm(global_weights), MIN_REFERENCE_NORM)

    def check(self, global_weights: Weights, weights: Weights, limit: float | None = None) -> float:
        """The update's distance from the global model; UpdateTooLarge if it exceeds the limit. Pass `limit`
        (from `limit()`) to compute the global model's norm once per round instead of once per update."""
        limit = self.limit(global_weights) if limit is None else limit
        distance = delta_norm(global_weights, weights)
        # `not <=` also refuses a NaN distance (finiteness is checked before, this is belt and braces).
        if not distance <= limit:
            raise UpdateTooLarge(
                f"{REASON_TOO_LARGE}: the update is {distance:.6g} from the global model (L2), over the bound "
                f"{limit:.6g} = {self.max_relative_distance:g} x max(||global|| = {weights_norm(global_weights):.6g}, "
                f"{MIN_REFERENCE_NORM:g})"
            )
        return distance


__all__ = [
    "DEFAULT_MAX_RELATIVE_DISTANCE",
    "MIN_REFERENCE_NORM",
    "REASON_TOO_LARGE",
    "UpdateBound",
    "UpdateTooLarge",
    "weights_norm",
]
