"""The task's trusted root set and the reference update trained on it (for `ReferenceFilter`, FLTrust's trust test).

The root set is a small sample the task owner vouches for. Here it is drawn from the task's dataset (a public one:
every aggregator can load it) by the task seed, so every aggregator trains on the same samples in the same order and
gets the same reference. A task on private data would publish a small consented root set instead; that is not
implemented (the dataset registry only knows public datasets).
"""

from __future__ import annotations

import numpy as np

from fedchain.learning.aggregation.reference import ReferenceTrainer
from fedchain.learning.data import Dataset, load_dataset
from fedchain.learning.model import build_model, get_weights, set_weights
from fedchain.learning.spec import TaskSpec
from fedchain.learning.train import round_seed, train_local
from fedchain.learning.types import Weights

# Separates the root sample's random stream from the partition's and the attackers'.
ROOT_STREAM = 0x2007


def root_dataset(task: TaskSpec, size: int) -> Dataset:
    """`size` samples of the task's training split, drawn without replacement by the task seed (sorted indices)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"root set size must be an integer >= 1, got {size!r}")
    train, _ = load_dataset(task.dataset)
    if size > len(train):
        raise ValueError(f"root set of {size} samples asked of a training split of {len(train)}")
    rng = np.random.default_rng([task.seed, ROOT_STREAM])
    return train.subset(np.sort(rng.choice(len(train), size=size, replace=False)))


def root_reference_trainer(task: TaskSpec, size: int | None = None) -> ReferenceTrainer:
    """A function training the task's model from given global weights on the root set with the task's local
    training settings and a fixed seed: deterministic, so every aggregator computes the same reference.

    `size` defaults to the task strategy's `root_samples`.
    """
    if size is None:
        size = task.strategy_spec().root_samples
    root = root_dataset(task, size)
    model = build_model(task.model, seed=task.seed)
    seed = round_seed(task.seed, 0, "fedchain/root-reference")

    def train(global_weights: Weights) -> Weights:
        set_weights(model, global_weights)
        train_local(model, root, task.train, seed=seed)
        return get_weights(model)

    return train


__all__ = ["ROOT_STREAM", "root_dataset", "root_reference_trainer"]
