"""Learning layer: specs, data, model, local training and aggregation. Knows nothing of chain or storage."""

from fedchain.learning.aggregation import StreamingFedAvg, fedavg
from fedchain.learning.data import (
    Dataset,
    OnlineStream,
    device_partition,
    load_dataset,
    parse_partition,
    partition_dirichlet,
    partition_iid,
)
from fedchain.learning.model import InvalidWeights, build_model, check_weights, get_weights, set_weights, weight_shapes
from fedchain.learning.spec import DatasetSpec, ModelSpec, TaskSpec, TrainSpec, default_task_spec
from fedchain.learning.train import EvalResult, TrainResult, evaluate, round_seed, train_centralized, train_local
from fedchain.learning.types import Weights

__all__ = [
    "Dataset",
    "DatasetSpec",
    "EvalResult",
    "InvalidWeights",
    "ModelSpec",
    "OnlineStream",
    "StreamingFedAvg",
    "TaskSpec",
    "TrainResult",
    "TrainSpec",
    "Weights",
    "build_model",
    "check_weights",
    "default_task_spec",
    "device_partition",
    "evaluate",
    "fedavg",
    "get_weights",
    "load_dataset",
    "parse_partition",
    "partition_dirichlet",
    "partition_iid",
    "round_seed",
    "set_weights",
    "train_centralized",
    "train_local",
    "weight_shapes",
]
