"""FedAdam (Reddi et al. 2020, "Adaptive Federated Optimization", Algorithm 2 with the Adam second moment).

With Δ = avg - x (avg: the sample-weighted mean of the devices' weights, x: the global model):
    m <- beta1·m + (1 - beta1)·Δ
    v <- beta2·v + (1 - beta2)·Δ²
    x <- x + eta·m / (sqrt(v) + tau)
As in the paper there is no bias correction; m starts at 0 and v at tau² (the paper's v_{-1} >= tau²).
State slots "m" and "v" (float64), carried explicitly between rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from fedchain.learning.aggregation.base import (
    AggregateResult,
    ServerState,
    Strategy,
    Update,
    devices,
    number,
    shapes_of,
    weighted_mean64,
)
from fedchain.learning.types import Weights


class AdaptiveServer(Strategy):
    """Shared FedAdam/FedYogi machinery; subclasses define the second-moment update."""

    def __init__(self, eta: float, beta1: float, beta2: float, tau: float) -> None:
        owner = self.name
        self.eta = number(owner, "eta", eta, 0.0)
        self.beta1 = number(owner, "beta1", beta1, 0.0, 1.0)
        self.beta2 = number(owner, "beta2", beta2, 0.0, 1.0)
        self.tau = number(owner, "tau", tau, 0.0)
        if self.eta == 0.0 or self.tau == 0.0:
            raise ValueError(f"{owner}: eta and tau must be > 0")
        if self.beta1 == 1.0 or self.beta2 == 1.0:
            raise ValueError(f"{owner}: beta1 and beta2 must be < 1")

    def params(self) -> dict[str, float | int]:
        return {"eta": self.eta, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau}

    def second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        shapes = shapes_of(global_weights)
        if state.empty:
            m = {name: np.zeros(shape, dtype=np.float64) for name, shape in shapes.items()}
            v = {name: np.full(shape, self.tau * self.tau, dtype=np.float64) for name, shape in shapes.items()}
        else:
            m, v = state.slot("m", shapes), state.slot("v", shapes)
        avg = weighted_mean64(global_weights, updates)
        new_weights: Weights = {}
        for name in shapes:
            x = global_weights[name].astype(np.float64)
            delta = avg[name] - x
            m[name] = self.beta1 * m[name] + (1.0 - self.beta1) * delta
            v[name] = self.second_moment(v[name], delta * delta)
            new_weights[name] = (x + self.eta * m[name] / (np.sqrt(v[name]) + self.tau)).astype(np.float32)
        return AggregateResult(new_weights, devices(updates), state=ServerState.from_slots({"m": m, "v": v}))


class FedAdam(AdaptiveServer):
    """Adam on the server (Reddi et al. 2020); defaults as Flower's FedAdam."""

    name = "fedadam"
    strategy_id = 2
    label = "FedAdam"
    defaults: ClassVar[Mapping[str, float | int]] = {"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-9}
    stateful = True
    secure_aggregation = True

    def __init__(self, eta: float = 0.1, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-9) -> None:
        super().__init__(eta, beta1, beta2, tau)

    def second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1.0 - self.beta2) * delta_sq


__all__ = ["AdaptiveServer", "FedAdam"]
