"""Measurements: aggregation time per strategy, and accuracy under attack in an in-process federated simulation.

    python -m fedchain.bench.simulation robust [--updates 100] [--params 1000000]
    python -m fedchain.bench.simulation attacks [--seeds 3] [--rounds 10] [--alpha 0.5 | --alpha 0]

Neither is run by the tests (timings depend on the machine; the attack table takes a minute or so).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from fedchain.learning import attacks
from fedchain.learning.aggregation.base import ServerState, Strategy, Update
from fedchain.learning.aggregation.registry import StrategySpec, build_strategy
from fedchain.learning.data import Dataset, device_partition, load_dataset, partition_dirichlet
from fedchain.learning.model import build_model, get_weights, set_weights
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.learning.train import evaluate, round_seed, train_local
from fedchain.learning.types import Weights


def synthetic_updates(
    n_updates: int, n_params: int, seed: int = 0, spread: float = 0.01
) -> tuple[Weights, list[Update]]:
    """A global model of n_params float32 parameters (a matrix and a bias) and n_updates noisy copies of it."""
    rng = np.random.default_rng(seed)
    bias = min(1000, max(1, n_params // 100))
    shapes = {"layer.weight": (n_params - bias,), "layer.bias": (bias,)}
    global_weights = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}
    updates = []
    for i in range(n_updates):
        weights = {
            name: (value + spread * rng.standard_normal(value.shape, dtype=np.float32)).astype(np.float32)
            for name, value in global_weights.items()
        }
        updates.append(Update(f"0x{i:040x}", weights, 100 + i))
    return global_weights, updates


def bench_specs(n_updates: int) -> dict[str, StrategySpec]:
    """One spec per strategy, Byzantine counts at 20% of n (Bulyan at its maximum below that, n >= 4f + 3)."""
    f = max(1, n_updates // 5)
    f_bulyan = max(0, min(f, (n_updates - 3) // 4))
    return {
        "fedavg": StrategySpec("fedavg"),
        "fedavgm": StrategySpec("fedavgm"),
        "fedadam": StrategySpec("fedadam"),
        "fedyogi": StrategySpec("fedyogi"),
        "median": StrategySpec("median"),
        "trimmed-mean": StrategySpec("trimmed-mean", {"beta": 0.2}),
        "krum": StrategySpec("krum", {"f": f}),
        "multi-krum": StrategySpec("multi-krum", {"f": f}),
        "bulyan": StrategySpec("bulyan", {"f": f_bulyan}),
        "median+clip": StrategySpec("median", {"clip_norm": 1.0}),
    }


def bench_robust(n_updates: int = 100, n_params: int = 1_000_000, repeat: int = 1, seed: int = 0) -> dict[str, float]:
    """Seconds per `aggregate` call (best of `repeat`) for each strategy on synthetic updates."""
    global_weights, updates = synthetic_updates(n_updates, n_params, seed)
    timings: dict[str, float] = {}
    for label, spec in bench_specs(n_updates).items():
        strategy = build_strategy(spec)
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            strategy.aggregate(global_weights, updates)
            best = min(best, time.perf_counter() - started)
        timings[label] = round(best, 4)
    return timings


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


def attack_specs() -> dict[str, StrategySpec]:
    """The strategies compared under attack, for 10 devices of which 3 attack."""
    return {
        "fedavg": StrategySpec("fedavg"),
        "median": StrategySpec("median"),
        "trimmed-mean": StrategySpec("trimmed-mean", {"beta": 0.3}),
        "krum": StrategySpec("krum", {"f": 3}),
        "multi-krum": StrategySpec("multi-krum", {"f": 3}),
        "bulyan": StrategySpec("bulyan", {"f": 1}),
        "fedavg+clip": StrategySpec("fedavg", {"clip_norm": 1.0}),
    }


def attack_table(
    specs: Mapping[str, StrategySpec] | None = None,
    attack_names: Sequence[str] = ATTACKS,
    seeds: Sequence[int] = (0,),
    **kwargs: object,
) -> dict[str, dict[str, float]]:
    """Mean final accuracy over `seeds` for every (strategy, attack) pair: {strategy: {attack: accuracy}}."""
    specs = specs or attack_specs()
    table: dict[str, dict[str, float]] = {}
    for label, spec in specs.items():
        table[label] = {}
        for attack in attack_names:
            accs = [simulate(build_strategy(spec), attack, seed=s, **kwargs) for s in seeds]  # type: ignore[arg-type]
            table[label][attack] = round(float(np.mean(accs)), 4)
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    robust = sub.add_parser("robust", help="seconds per strategy on synthetic updates")
    robust.add_argument("--updates", type=int, default=100)
    robust.add_argument("--params", type=int, default=1_000_000)
    robust.add_argument("--repeat", type=int, default=1)
    attack = sub.add_parser("attacks", help="accuracy under attack, 10 non-IID devices, 30%% attackers")
    attack.add_argument("--seeds", type=int, default=3)
    attack.add_argument("--rounds", type=int, default=10)
    attack.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha; 0 for an IID split")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.command == "robust":
        print(json.dumps(bench_robust(args.updates, args.params, args.repeat), indent=2))
    else:
        alpha = args.alpha if args.alpha > 0 else None
        table = attack_table(seeds=range(args.seeds), rounds=args.rounds, alpha=alpha)
        print(f"{'strategy':<14}" + "".join(f"{a:>15}" for a in ATTACKS))
        for label, row in table.items():
            print(f"{label:<14}" + "".join(f"{row[a]:>15.4f}" for a in ATTACKS))


if __name__ == "__main__":
    main()
