"""FedAvgM (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification"): server momentum on the FedAvg pseudo-gradient.

With avg the sample-weighted mean of the devices' weights and x the global model:
    g = x - avg;  v <- momentum·v + g;  x <- x - server_lr·v
momentum = 0 and server_lr = 1 give FedAvg (up to float rounding). The momentum v is the server state, slot
"momentum"; a missing (empty) state starts from v = 0.
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


class FedAvgM(Strategy):
    """Server momentum: `server_lr` > 0, `momentum` in [0, 1)."""

    name = "fedavgm"
    strategy_id = 1
    label = "FedAvgM"
    defaults: ClassVar[Mapping[str, float | int]] = {"server_lr": 1.0, "momentum": 0.9}
    stateful = True
    secure_aggregation = True

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9) -> None:
        self.server_lr = number("fedavgm", "server_lr", server_lr, 0.0)
        if self.server_lr == 0.0:
            raise ValueError("fedavgm.server_lr must be > 0")
        self.momentum = number("fedavgm", "momentum", momentum, 0.0, 1.0)
        if self.momentum == 1.0:
            raise ValueError("fedavgm.momentum must be < 1")

    def params(self) -> dict[str, float | int]:
        return {"server_lr": self.server_lr, "momentum": self.momentum}

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        shapes = shapes_of(global_weights)
        if state.empty:
            velocity = {name: np.zeros(shape, dtype=np.float64) for name, shape in shapes.items()}
        else:
            velocity = state.slot("momentum", shapes)
        avg = weighted_mean64(global_weights, updates)
        new_weights: Weights = {}
        for name in shapes:
            x = global_weights[name].astype(np.float64)
            pseudo_gradient = x - avg[name]
            velocity[name] = self.momentum * velocity[name] + pseudo_gradient
            new_weights[name] = (x - self.server_lr * velocity[name]).astype(np.float32)
        return AggregateResult(new_weights, devices(updates), state=ServerState.from_slots({"momentum": velocity}))


__all__ = ["FedAvgM"]
