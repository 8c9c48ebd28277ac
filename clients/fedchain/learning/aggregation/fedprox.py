"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

FedProx changes local training, not aggregation: each device minimises its loss plus (mu/2)·||w - w_global||²
(`fedchain.learning.train.train_local(..., proximal_mu=mu, global_weights=...)`), and the server takes the
sample-weighted mean exactly as FedAvg does. The strategy carries `mu` so the task config tells devices which
proximal coefficient to use; aggregators running it produce the same bits as FedAvg.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from fedchain.learning.aggregation.base import number
from fedchain.learning.aggregation.fedavg import FedAvg


class FedProx(FedAvg):
    """FedAvg aggregation; `mu` (>= 0) is the devices' proximal coefficient."""

    name = "fedprox"
    strategy_id = 4
    label = "FedProx"
    defaults: ClassVar[Mapping[str, float | int]] = {"mu": 0.01}
    weighted_mean = True
    secure_aggregation = True

    def __init__(self, mu: float = 0.01) -> None:
        self.mu = number("fedprox", "mu", mu, 0.0)

    def params(self) -> dict[str, float | int]:
        return {"mu": self.mu}


__all__ = ["FedProx"]
