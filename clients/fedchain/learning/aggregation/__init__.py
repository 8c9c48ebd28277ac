"""Aggregation strategies, one per module, over pure and deterministic aggregation functions.

`Strategy.aggregate(global_weights, updates, state)` sorts the updates by device address itself; the registry maps
on-chain strategy ids and canonical-JSON parameters to strategies.
"""

from fedchain.learning.aggregation.base import AggregateResult, ServerState, Strategy, Update, flatten, unflatten
from fedchain.learning.aggregation.bulyan import Bulyan
from fedchain.learning.aggregation.clipping import NormClipping
from fedchain.learning.aggregation.fedadam import FedAdam
from fedchain.learning.aggregation.fedavg import FedAvg, StreamingFedAvg, fedavg
from fedchain.learning.aggregation.fedavgm import FedAvgM
from fedchain.learning.aggregation.fedprox import FedProx
from fedchain.learning.aggregation.fedyogi import FedYogi
from fedchain.learning.aggregation.krum import Krum, MultiKrum
from fedchain.learning.aggregation.median import Median
from fedchain.learning.aggregation.registry import (
    STRATEGY_IDS,
    StrategySpec,
    build_strategy,
    strategy_id,
    strategy_name,
)
from fedchain.learning.aggregation.trimmed_mean import TrimmedMean

__all__ = [
    "STRATEGY_IDS",
    "AggregateResult",
    "Bulyan",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Krum",
    "Median",
    "MultiKrum",
    "NormClipping",
    "ServerState",
    "Strategy",
    "StrategySpec",
    "StreamingFedAvg",
    "TrimmedMean",
    "Update",
    "build_strategy",
    "fedavg",
    "flatten",
    "strategy_id",
    "strategy_name",
    "unflatten",
]
