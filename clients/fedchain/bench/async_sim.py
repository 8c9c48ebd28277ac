"""A learning-level simulation of synchronous rounds vs asynchronous buffered versions (FedBuff) on a fleet of
heterogeneous devices, in virtual time: real local training and real aggregation maths, no chain, no IPFS.

Devices differ only in speed: a normal device needs `train_seconds` per update, a slow one `slow_factor` times as
long, a sleeping one sleeps `sleep_seconds` before each update. A synchronous round picks `per_round` devices and
lasts as long as its slowest; an asynchronous task lets every device train continuously from the latest version and
publishes a version every `buffer_size` accepted updates (staleness bound, FedBuff's staleness weighting and step,
as the buffered aggregator computes them). What it reports: accuracy over virtual time, the time to `target`
accuracy, updates per virtual second and the staleness distribution. Not a chain benchmark: it shows what the
asynchronous mode buys before any gas, IPFS or process cost (`fedchain bench online` measures the real thing).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedchain.chain.buffered import FEDBUFF_EXPONENT_MICRO, WEIGHTING_POLYNOMIAL, staleness_weight
from fedchain.learning.aggregation.fedavg import fedavg
from fedchain.learning.data import load_dataset
from fedchain.learning.model import build_model, get_weights, set_weights
from fedchain.learning.simulation import partition
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.learning.staleness import rebase
from fedchain.learning.train import evaluate, round_seed, train_local
from fedchain.learning.types import Weights


@dataclass(frozen=True)
class Fleet:
    num_devices: int = 20
    slow_fraction: float = 0.3
    slow_factor: float = 5.0
    sleep_fraction: float = 0.1
    sleep_seconds: float = 120.0
    train_seconds: float = 10.0

    def durations(self) -> list[float]:
        """Each device's virtual seconds per update: sleepers first, then slow devices, then normal ones."""
        sleepers = round(self.sleep_fraction * self.num_devices)
        slow = round(self.slow_fraction * self.num_devices)
        out = []
        for i in range(self.num_devices):
            if i < sleepers:
                out.append(self.train_seconds + self.sleep_seconds)
            elif i < sleepers + slow:
                out.append(self.train_seconds * self.slow_factor)
            else:
                out.append(self.train_seconds)
        return out


class _Trainer:
    def __init__(self, spec: TaskSpec, devices: int, seed: int) -> None:
        self.spec = spec
        train, self.test = load_dataset(spec.dataset)
        self.parts = partition(train, devices, None, seed)
        self.model = build_model(spec.model, seed=spec.seed)
        self.initial = get_weights(self.model)
        self.count = 0

    def train(self, weights: Weights, device: int) -> Weights:
        self.count += 1
        set_weights(self.model, weights)
        seed = round_seed(self.spec.seed, self.count, f"0x{device:040x}")
        train_local(self.model, self.parts[device], self.spec.train, seed=seed)
        return get_weights(self.model)

    def accuracy(self, weights: Weights) -> float:
        set_weights(self.model, weights)
        return round(evaluate(self.model, self.test).accuracy, 4)


def _time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, acc in curve if acc >= target), None)


def simulate_sync(fleet: Fleet, rounds: int, per_round: int, spec: TaskSpec, seed: int = 0) -> dict[str, Any]:
    """Synchronous FedAvg: each round `per_round` devices chosen at random, the round as long as its slowest."""
    trainer = _Trainer(spec, fleet.num_devices, seed)
    durations = fleet.durations()
    rng = np.random.default_rng(seed)
    weights, now, curve = trainer.initial, 0.0, []
    for _ in range(rounds):
        chosen = sorted(rng.choice(fleet.num_devices, size=per_round, replace=False).tolist())
        now += max(durations[d] for d in chosen)
        weights = fedavg([(trainer.train(weights, d), len(trainer.parts[d])) for d in chosen])
        curve.append((now, trainer.accuracy(weights)))
    return {"curve": curve, "updates": trainer.count, "updates_per_second": trainer.count / now}


def simulate_async(
    fleet: Fleet, versions: int, buffer_size: int, max_staleness: int, spec: TaskSpec, seed: int = 0
) -> dict[str, Any]:
    """FedBuff: every device trains from the latest version whenever it is ready; a version every `buffer_size`
    updates within the staleness bound (one per device per buffer), FedBuff's polynomial weighting and step."""
    trainer = _Trainer(spec, fleet.num_devices, seed)
    durations = fleet.durations()
    models = {0: trainer.initial}
    queue = [(durations[d], d, 0) for d in range(fleet.num_devices)]
    heapq.heapify(queue)
    buffer: list[tuple[int, Weights, int, int]] = []  # (device, its model rebased onto the version, samples, s)
    staleness: Counter[int] = Counter()
    refused, curve, now = 0, [], 0.0
    version = 0
    while version < versions:
        now, device, base = heapq.heappop(queue)
        s = version - base
        if s > max_staleness or any(entry[0] == device for entry in buffer):
            refused += s > max_staleness
        else:
            staleness[s] += 1
            trained = trainer.train(models[base], device)
            buffer.append((device, rebase(models[version], models[base], trained), len(trainer.parts[device]), s))
        if len(buffer) == buffer_size:
            samples = [n for _, _, n, _ in buffer]
            w = [staleness_weight(s, WEIGHTING_POLYNOMIAL, FEDBUFF_EXPONENT_MICRO) for *_, s in buffer]
            step = sum(n * x for n, x in zip(samples, w, strict=True)) / sum(samples)
            mean = fedavg(
                [(m, max(1, round(n * x * 1e6))) for (_, m, _, _), n, x in zip(buffer, samples, w, strict=True)]
            )
            current = models[version]
            version += 1
            models[version] = rebase(current, current, mean, step)
            models = {v: m for v, m in models.items() if v >= version - max_staleness}
            buffer = []
            curve.append((now, trainer.accuracy(models[version])))
        heapq.heappush(queue, (now + durations[device], device, version))
    return {
        "curve": curve,
        "updates": sum(staleness.values()),
        "refused_stale": refused,
        "updates_per_second": sum(staleness.values()) / now,
        "staleness": dict(sorted(staleness.items())),
    }


def compare(
    fleet: Fleet | None = None,
    target: float = 0.9,
    rounds: int = 15,
    per_round: int = 10,
    buffer_size: int = 10,
    max_staleness: int = 4,
    spec: TaskSpec | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Synchronous vs asynchronous on the same fleet and task: the same number of aggregated updates each
    (rounds x per_round = versions x buffer_size), time to `target` and the speed-up."""
    fleet = fleet or Fleet()
    spec = spec or default_task_spec()
    versions = rounds * per_round // buffer_size
    sync = simulate_sync(fleet, rounds, per_round, spec, seed)
    asynchronous = simulate_async(fleet, versions, buffer_size, max_staleness, spec, seed)
    sync["time_to_target"] = _time_to(sync["curve"], target)
    asynchronous["time_to_target"] = _time_to(asynchronous["curve"], target)
    speedup = None
    if sync["time_to_target"] and asynchronous["time_to_target"]:
        speedup = round(sync["time_to_target"] / asynchronous["time_to_target"], 2)
    return {"fleet": fleet.__dict__, "target": target, "sync": sync, "async": asynchronous, "speedup": speedup}


__all__ = ["Fleet", "compare", "simulate_async", "simulate_sync"]
