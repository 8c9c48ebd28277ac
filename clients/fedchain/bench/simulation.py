"""Measurements: aggregation time per strategy, and accuracy under attack in an in-process federated simulation.

    python -m fedchain.bench.simulation robust [--updates 100] [--params 1000000]
    python -m fedchain.bench.simulation attacks [--seeds 3] [--rounds 10] [--alpha 0.5 | --alpha 0]

Neither is run by the tests (timings depend on the machine; the attack table takes a minute or so).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence

import numpy as np

from fedchain.learning.aggregation.base import Update
from fedchain.learning.aggregation.registry import StrategySpec, build_strategy
from fedchain.learning.simulation import ATTACKS, simulate
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
