"""Drift on a streaming wearable, simulated at the learning level: does the model follow a signal that changes?

A device starts from the model its fleet delivered (trained on every training recording in the original placement
for `pretrain_epochs`), replays the training recordings (`streaming.RecordingReplay`) into a bounded buffer and
trains one epoch on what it holds every `train_every` seconds of simulated wall time. Halfway, the wearer moves the
watch: from then on the recordings arrive as a sensor in another placement records them (`switch_placement`: the
watch turned a quarter turn on the wrist, so x and y swap, for the accelerometer and the gyroscope alike). The model
is evaluated on the held-out recordings seen both ways after every training step: accuracy in the new placement is
low before the drift (never seen) and climbs after it as new windows push the old ones out of the buffer.

Training takes no simulated time here (the device is assumed fast next to the sensor); the replay speed only
compresses the timeline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fedchain.learning.data import Dataset
from fedchain.learning.model import build_model
from fedchain.learning.streaming import RecordingReplay, WindowBuffer
from fedchain.learning.train import evaluate, round_seed, train_local
from fedchain.learning.wearables import recording_windows, wearable_split, wearable_task, wearable_task_spec


def switch_placement(signal: np.ndarray) -> np.ndarray:
    """A 6-channel wrist IMU recording (acc xyz, gyro xyz) as the watch turned 90 degrees about its z axis records
    it: (x, y, z) -> (y, -x, z) for both sensors."""
    if signal.shape[0] != 6:
        raise ValueError(f"switch_placement needs acc xyz + gyro xyz (6 channels), got {signal.shape[0]}")
    out = signal.copy()
    for base in (0, 3):
        out[base], out[base + 1] = signal[base + 1], -signal[base]
    return out


@dataclass(frozen=True)
class DriftPoint:
    wall_time: float
    drifted: bool  # the sensor had moved by this time
    accuracy_original: float  # held-out recordings, original placement
    accuracy_switched: float  # the same recordings, new placement
    held: int


@dataclass(frozen=True)
class DriftRun:
    points: list[DriftPoint]
    drift_time: float
    buffer: dict[str, int]
    buffer_bytes: int

    def last_before_drift(self) -> DriftPoint:
        return [p for p in self.points if not p.drifted][-1]

    def final(self) -> DriftPoint:
        return self.points[-1]


def _test_set(name: str, switched: bool) -> Dataset:
    split = wearable_split(wearable_task_spec(name).dataset)
    task = wearable_task(name)
    windows, labels = [], []
    for i in split.test_recordings:
        signal = split.recordings.signals[i]
        w, y = recording_windows(
            task, switch_placement(signal) if switched else signal, split.recordings.annotations[i]
        )
        windows.append(w)
        labels.append(y)
    return Dataset(split.standardise(np.concatenate(windows)), np.concatenate(labels))


def simulate_drift(
    name: str = "basic_motions",
    speed: float = 10.0,
    capacity: int = 160,
    train_every: float = 1.0,
    pretrain_epochs: int = 20,
    seed: int = 0,
) -> DriftRun:
    """One device streaming its task's training recordings (seeded order); the placement switches halfway."""
    spec = wearable_task_spec(name)
    task = wearable_task(name)
    split = wearable_split(spec.dataset)
    recs = split.recordings
    train_ids = [i for i in range(len(recs.signals)) if i not in set(split.test_recordings.tolist())]
    order = np.random.default_rng(seed).permutation(train_ids)
    half = len(order) // 2
    signals = [recs.signals[i] if k < half else switch_placement(recs.signals[i]) for k, i in enumerate(order)]
    replay = RecordingReplay(task, signals, [recs.annotations[i] for i in order], speed=speed, recording_ids=order)
    drift_time = sum(recs.signals[i].shape[-1] for i in order[:half]) / task.window.sampling_rate / speed
    buffer = WindowBuffer(capacity, task.window, split.standardise)
    tests = {False: _test_set(name, False), True: _test_set(name, True)}
    model = build_model(spec.model, seed=spec.seed)
    pretrain = dataclasses.replace(spec.train, local_epochs=pretrain_epochs)
    train_local(model, split.train, pretrain, seed=round_seed(spec.seed + seed, 0, "drift-pretrain"))
    points: list[DriftPoint] = []
    now, step = 0.0, 0
    while not replay.finished:
        now += train_every
        step += 1
        buffer.push_all(replay.until(now))
        if len(buffer) == 0:
            continue
        train_local(model, buffer.dataset(), spec.train, seed=round_seed(spec.seed + seed, step, "drift-device"))
        points.append(
            DriftPoint(
                wall_time=now,
                drifted=now > drift_time,
                accuracy_original=evaluate(model, tests[False]).accuracy,
                accuracy_switched=evaluate(model, tests[True]).accuracy,
                held=len(buffer),
            )
        )
    return DriftRun(points, drift_time, buffer.stats(), buffer.nbytes)


__all__ = ["DriftPoint", "DriftRun", "simulate_drift", "switch_placement"]
