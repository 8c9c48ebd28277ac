"""FedYogi (Reddi et al. 2020, "Adaptive Federated Optimization", Algorithm 2 with the Yogi second moment).

As FedAdam, except v <- v - (1 - beta2)·Δ²·sign(v - Δ²), which grows v more slowly and so keeps the effective
step from collapsing (Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from fedchain.learning.aggregation.fedadam import AdaptiveServer


class FedYogi(AdaptiveServer):
    """Yogi on the server (Reddi et al. 2020); defaults as Flower's FedYogi."""

    name = "fedyogi"
    strategy_id = 3
    label = "FedYogi"
    defaults: ClassVar[Mapping[str, float | int]] = {"eta": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    stateful = True
    secure_aggregation = True

    def __init__(self, eta: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(eta, beta1, beta2, tau)

    def second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return v - (1.0 - self.beta2) * delta_sq * np.sign(v - delta_sq)


__all__ = ["FedYogi"]
