"""An in-process federated simulation: every device's share, local training, an attack on some, a strategy's
aggregate, round after round, without chain or IPFS. It is the reference a real run is compared with (the demo's
non-private accuracy) and the engine of the robustness benchmarks (fedchain.bench.simulation, bench.attacks).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from fedchain.learning import attacks
from fedchain.learning.aggregation.base import ServerState, Strategy, Update
from fedchain.learning.data import Dataset, device_partition, load_dataset, partition_dirichlet
from fedchain.learning.model import build_model, get_weights, set_weights
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.learning.train import evaluate, round_seed, train_local
from fedchain.learning.types import Weights

ATTACKS = ("none", "sign-flip", "sign-flip-x10", "scale", "gaussian", "constant", "label-flip")


def _attack(name: str, global_weights: Weights, weights: Weights, seed: int) -> Weights:
    """What a malicious device submits: the same attacks a real device runs (`fedchain device --attack`)."""
    return weights if name == "none" else attacks.poison_model(name, global_weights, weights, seed)


def partition(
    train: Dataset, devices: int, alpha: float | None, seed: int, min_size: int | None = None
) -> list[Dataset]:
    """Every device's share at once: `device_partition`'s split (IID, or Dirichlet(alpha) label skew), computed once.

    With `min_size` None the Dirichlet split uses `device_partition`'s smallest-part rule, so the parts are
    exactly `device_partition(train, i, devices, alpha, seed)`.
    """
    if alpha is None:
        return [device_partition(train, i, devices, None, seed) for i in range(devices)]
    if min_size is None:
        min_size = min(10, max(1, len(train) // (2 * devices)))
    return [train.subset(idx) for idx in partition_dirichlet(train.y, devices, alpha, seed, min_size=min_size)]


def simulate(
    strategy: Strategy,
    attack: str = "none",
    devices: int = 10,
    attackers: int = 3,
    alpha: float | None = 0.5,
    rounds: int = 10,
    seed: int = 0,
    spec: TaskSpec | None = None,
    min_size: int | None = None,
    malicious: Collection[int] | None = None,
) -> float:
    """Final test accuracy of a federated run in which `attackers` devices run `attack` (one of ATTACKS).

    The attackers are drawn with `seed` (or given as device indices in `malicious`, which then overrides
    `attackers`); `seed` also seeds the partition and local training. `min_size` is the Dirichlet split's smallest
    part (default: `device_partition`'s rule, which cannot be met for 20 or more devices on this dataset). As the
    aggregator does, non-finite updates (diverged training) are left out, and a non-finite aggregate is not adopted.
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: {ATTACKS}")
    spec = spec or default_task_spec()
    train, test = load_dataset(spec.dataset)
    model = build_model(spec.model, seed=spec.seed)
    global_weights = get_weights(model)
    parts = partition(train, devices, alpha, seed, min_size)
    if malicious is None:
        chosen = np.random.default_rng([seed, 0xA77AC]).choice(devices, size=attackers, replace=False)
        malicious = {int(i) for i in chosen}
    else:
        malicious = {int(i) for i in malicious}
        if not all(0 <= i < devices for i in malicious):
            raise ValueError(f"malicious device indices must lie in 0..{devices - 1}, got {sorted(malicious)}")
    if attack == "none":
        malicious = set()
    if attack == "label-flip":
        classes = spec.model.num_classes
        parts = [attacks.flip_labels(p, classes) if i in malicious else p for i, p in enumerate(parts)]
    state = ServerState()
    for round_index in range(1, rounds + 1):
        updates = []
        for i, part in enumerate(parts):
            device = f"0x{i + 1:040x}"
            set_weights(model, global_weights)
            train_local(model, part, spec.train, seed=round_seed(spec.seed + seed, round_index, device))
            weights = get_weights(model)
            if not all(np.isfinite(w).all() for w in weights.values()):
                continue  # training diverged: the aggregator would reject this update (InvalidWeights)
            if i in malicious:
                weights = _attack(attack, global_weights, weights, seed=round_seed(seed, round_index, device))
            updates.append(Update(device, weights, len(part)))
        if not updates:
            continue
        result = strategy.aggregate(global_weights, updates, state)
        if all(np.isfinite(w).all() for w in result.weights.values()):
            global_weights, state = result.weights, result.state
        # else: an overflowing aggregate is not published; the round keeps the previous model.
    set_weights(model, global_weights)
    return evaluate(model, test).accuracy


__all__ = ["ATTACKS", "partition", "simulate"]
