"""FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized Data").

The sample-weighted mean of the devices' weights, streamed so memory stays one model's worth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from fedchain.learning.aggregation.base import AggregateResult, ServerState, Strategy, Update, devices, shapes_of
from fedchain.learning.types import Weights
from fedchain.learning.weights import check_weights


class StreamingFedAvg:
    """Accumulates num_samples·w in float64 one update at a time; `result()` is the weighted mean as float32.

    Reproducible bit for bit when updates are added in a fixed order (the caller sorts, e.g. by device address).
    """

    def __init__(self, reference_shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.reference_shapes = {name: tuple(shape) for name, shape in reference_shapes.items()}
        if not self.reference_shapes:
            raise ValueError("reference_shapes is empty: nothing to aggregate")
        self._sums = {name: np.zeros(shape, dtype=np.float64) for name, shape in self.reference_shapes.items()}
        self._count = 0
        self._total = 0

    @property
    def count(self) -> int:
        """Number of updates accepted so far."""
        return self._count

    @property
    def total_samples(self) -> int:
        """Sum of the accepted updates' num_samples."""
        return self._total

    def add(self, weights: Weights, num_samples: int) -> None:
        """Validate, then accumulate one update; a rejected update leaves the state untouched."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
            raise ValueError(f"num_samples must be an integer, got {num_samples!r}")
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        check_weights(weights, self.reference_shapes)
        factor = np.float64(num_samples)
        for name, acc in self._sums.items():
            # In place, element-wise float64: no extra model-sized buffers beyond the cast.
            acc += factor * weights[name].astype(np.float64)
        self._count += 1
        self._total += int(num_samples)

    def result(self) -> Weights:
        """The weighted mean of everything added, float32, in reference order."""
        if self._count == 0:
            raise ValueError("no updates were added: nothing to average")
        total = np.float64(self._total)
        return {name: (acc / total).astype(np.float32) for name, acc in self._sums.items()}


def fedavg(updates: Sequence[tuple[Weights, int]]) -> Weights:
    """Weighted mean of (weights, num_samples) pairs, in the given order; shapes taken from the first update."""
    if not updates:
        raise ValueError("no updates to average")
    first = updates[0][0]
    aggregator = StreamingFedAvg({name: np.shape(value) for name, value in first.items()})
    for weights, num_samples in updates:
        aggregator.add(weights, num_samples)
    return aggregator.result()


class FedAvg(Strategy):
    """FedAvg as a strategy: StreamingFedAvg over the updates in device-address order (bit-identical to it).

    Beyond its inputs it holds one float64 model; an aggregator that cannot hold all updates at once keeps using
    StreamingFedAvg directly, adding updates in the same (sorted) order.
    """

    name = "fedavg"
    strategy_id = 0
    label = "FedAvg"
    defaults: ClassVar[Mapping[str, float | int]] = {}
    weighted_mean = True
    secure_aggregation = True

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        aggregator = StreamingFedAvg(shapes_of(global_weights))
        for update in updates:
            aggregator.add(update.weights, update.num_samples)
        return AggregateResult(aggregator.result(), devices(updates))

    def params(self) -> dict[str, float | int]:
        return {}


__all__ = ["FedAvg", "StreamingFedAvg", "fedavg"]
