"""Learning layer: specs, data, model, local training and aggregation. Knows nothing of chain or storage.

The names below are loaded on first use (PEP 562), so importing one submodule (`fedchain.learning.spec`, say) does
not import torch, the aggregation strategies and the rest: a device imports only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedchain._lazy import lazy_exports

if TYPE_CHECKING:
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
    from fedchain.learning.model import (
        InvalidWeights,
        build_model,
        check_weights,
        get_weights,
        set_weights,
        weight_shapes,
    )
    from fedchain.learning.spec import DatasetSpec, ModelSpec, TaskSpec, TrainSpec, default_task_spec
    from fedchain.learning.train import (
        EvalResult,
        TrainResult,
        evaluate,
        round_seed,
        train_centralized,
        train_local,
    )
    from fedchain.learning.types import Weights

_SOURCES = {
    "fedchain.learning.aggregation": ("StreamingFedAvg", "fedavg"),
    "fedchain.learning.data": (
        "Dataset",
        "OnlineStream",
        "device_partition",
        "load_dataset",
        "parse_partition",
        "partition_dirichlet",
        "partition_iid",
    ),
    "fedchain.learning.model": (
        "InvalidWeights",
        "build_model",
        "check_weights",
        "get_weights",
        "set_weights",
        "weight_shapes",
    ),
    "fedchain.learning.spec": ("DatasetSpec", "ModelSpec", "TaskSpec", "TrainSpec", "default_task_spec"),
    "fedchain.learning.train": (
        "EvalResult",
        "TrainResult",
        "evaluate",
        "round_seed",
        "train_centralized",
        "train_local",
    ),
    "fedchain.learning.types": ("Weights",),
}
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)

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
