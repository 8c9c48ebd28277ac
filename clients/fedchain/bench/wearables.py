"""Centralised vs federated accuracy on the wearable tasks, and the drift run (learning-only simulation).

    python -m fedchain.bench.wearables [--rounds 10] [--devices 5] [--out reports/wearables.json]

Federated: FedAvg over `devices` devices, each holding whole recordings (`data.recording_partition`), the task's
local epochs per round; centralised: the same model and training settings on every training window for as many
epochs as a device trains in all rounds (rounds x local epochs).
Both are judged on the held-out recordings; the ECG task's recorded strip is also reported alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedchain.learning.aggregation.registry import StrategySpec, build_strategy
from fedchain.learning.data import load_dataset
from fedchain.learning.drift import simulate_drift
from fedchain.learning.model import build_model
from fedchain.learning.simulation import simulate
from fedchain.learning.train import evaluate, round_seed, train_local
from fedchain.learning.wearables import TASKS, wearable_split, wearable_task_spec


def centralised(name: str, epochs: int) -> dict[str, float]:
    """Test accuracy (all held-out recordings, and the recorded ones alone) after `epochs` epochs on all windows."""
    spec = wearable_task_spec(name)
    split = wearable_split(spec.dataset)
    model = build_model(spec.model, seed=spec.seed)
    train_local(
        model,
        split.train,
        dataclasses.replace(spec.train, local_epochs=epochs),
        seed=round_seed(spec.seed, 0, "centralized"),
    )
    recorded_ids = np.flatnonzero(split.recordings.recorded)
    recorded = split.test.subset(np.isin(split.test.groups, recorded_ids))
    return {
        "accuracy": evaluate(model, split.test).accuracy,
        "accuracy_recorded_only": evaluate(model, recorded).accuracy if len(recorded) else float("nan"),
    }


def federated(name: str, devices: int, rounds: int) -> float:
    """FedAvg's final test accuracy, devices holding whole recordings."""
    return simulate(
        build_strategy(StrategySpec("fedavg")),
        devices=devices,
        alpha=None,
        rounds=rounds,
        spec=wearable_task_spec(name),
    )


def measure(devices: int = 5, rounds: int = 10) -> dict[str, Any]:
    torch.set_num_threads(1)  # bit-reproducible, and kind to a shared machine
    report: dict[str, Any] = {"devices": devices, "rounds": rounds, "tasks": {}}
    for name in TASKS:
        train, test = load_dataset(wearable_task_spec(name).dataset)
        report["tasks"][name] = {
            "train_windows": len(train),
            "test_windows": len(test),
            "local_epochs": wearable_task_spec(name).train.local_epochs,
            "centralised": centralised(name, rounds * wearable_task_spec(name).train.local_epochs),
            "federated_accuracy": federated(name, devices, rounds),
        }
    drift = simulate_drift()
    report["drift"] = {
        "task": "basic_motions",
        "drift_time_s": drift.drift_time,
        "buffer": drift.buffer,
        "buffer_bytes": drift.buffer_bytes,
        "switched_accuracy_before_drift": drift.last_before_drift().accuracy_switched,
        "switched_accuracy_final": drift.final().accuracy_switched,
        "original_accuracy_final": drift.final().accuracy_original,
        "trace": [dataclasses.asdict(p) for p in drift.points],
    }
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    text = json.dumps(measure(args.devices, args.rounds), indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
