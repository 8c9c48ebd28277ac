"""A wearable that streams: its recordings replayed at k x real time, a bounded buffer of the most recent windows,
and training on what the buffer holds when the device chooses to.

`RecordingReplay` plays recordings back to back as the sensor produced them and cuts windows as the device does
(`wearables.recording_windows`: the same windows, bit for bit, as the task's dataset). `WindowBuffer` keeps the
newest `capacity` windows in memory allocated once (capacity x features float32): when full, the oldest window is
dropped, as on a wearable with a few kilobytes to spare. Every window is checked first (`sensors.check_window`):
one of the wrong length or sampling rate, or with NaN samples from a faulty sensor, is refused, counted and logged,
and never trained on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedchain.learning.data import Dataset
from fedchain.learning.sensors import WindowFormat, WindowRejected, check_window
from fedchain.learning.spec import TrainSpec
from fedchain.learning.wearables import WearableTask, recording_windows

if TYPE_CHECKING:  # torch only where a buffer is trained with it: a light device streams without it
    from torch import nn

    from fedchain.learning.train import TrainResult

log = logging.getLogger("fedchain.device.stream")


@dataclass(frozen=True, eq=False)
class SensorWindow:
    """One window as the sensor hands it over: raw samples (channels, length) at sampling_rate Hz, its label, and
    when it was complete (seconds of wall time since the replay started)."""

    samples: np.ndarray
    sampling_rate: float
    label: int
    wall_time: float
    recording: int


class RecordingReplay:
    """Recordings played back to back at `speed` x real time; `until(t)` hands over the windows completed by wall
    time t (seconds since the start), each once, in order. `transform` (if any) changes a recording's signal
    before it is cut, e.g. a sensor moved to another place (`drift`)."""

    def __init__(
        self,
        task: WearableTask,
        signals: Sequence[np.ndarray],
        annotations: Sequence[np.ndarray],
        speed: float = 1.0,
        recording_ids: Sequence[int] | None = None,
        start_time: float = 0.0,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"replay speed must be > 0, got {speed}")
        self.task = task
        self.speed = speed
        rate = task.window.sampling_rate
        ids = list(recording_ids) if recording_ids is not None else list(range(len(signals)))
        self._windows: list[SensorWindow] = []
        offset = 0  # samples of device time before this recording
        for rec, signal, annotation in zip(ids, signals, annotations, strict=True):
            windows, labels = recording_windows(task, signal, annotation)
            for i, (window, label) in enumerate(zip(windows, labels, strict=True)):
                end = offset + i * task.hop + task.window.length
                self._windows.append(SensorWindow(window, rate, int(label), start_time + end / rate / speed, rec))
            offset += signal.shape[-1]
        self.duration = start_time + offset / rate / speed
        self._next = 0

    def __len__(self) -> int:
        return len(self._windows)

    @property
    def finished(self) -> bool:
        return self._next >= len(self._windows)

    def next_time(self) -> float | None:
        """When the next window will be complete (None once the replay is over)."""
        return None if self.finished else self._windows[self._next].wall_time

    def until(self, wall_time: float) -> list[SensorWindow]:
        out: list[SensorWindow] = []
        while not self.finished and self._windows[self._next].wall_time <= wall_time:
            out.append(self._windows[self._next])
            self._next += 1
        return out


class WindowBuffer:
    """The newest `capacity` accepted windows, in memory allocated once; the oldest is dropped when full.

    `standardise` maps raw windows (n, channels, length) to model rows (n, features): the task's fixed scaling.
    """

    def __init__(self, capacity: int, window: WindowFormat, standardise: Callable[[np.ndarray], np.ndarray]) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.window = window
        self.standardise = standardise
        self._x = np.zeros((capacity, window.features), dtype=np.float32)
        self._y = np.zeros(capacity, dtype=np.int64)
        self._size = 0
        self._next = 0  # the slot the next window goes to (the oldest, once full)
        self.accepted = 0
        self.dropped = 0  # evicted by newer windows
        self.refused: Counter[str] = Counter()

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """The buffer's fixed memory, whatever it holds."""
        return int(self._x.nbytes + self._y.nbytes)

    def push(self, samples: np.ndarray, sampling_rate: float, label: int) -> bool:
        """Check and store one window; False (and counted, and logged) if it was refused."""
        try:
            window = check_window(samples, sampling_rate, self.window)
        except WindowRejected as exc:
            self.refused[exc.reason] += 1
            log.warning("%s; %d refused so far", exc, sum(self.refused.values()))
            return False
        row = self.standardise(window[None, :, :])[0]
        if not np.all(np.isfinite(row)):  # finite samples can still overflow float32 when scaled
            self.refused["not_finite"] += 1
            log.warning("window refused (not_finite): overflows after scaling")
            return False
        if self._size == self.capacity:
            self.dropped += 1
        self._x[self._next] = row
        self._y[self._next] = label
        self._next = (self._next + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        self.accepted += 1
        return True

    def push_all(self, windows: Sequence[SensorWindow]) -> int:
        """Push each window; returns how many were accepted."""
        return sum(self.push(w.samples, w.sampling_rate, w.label) for w in windows)

    def dataset(self) -> Dataset:
        """What the buffer holds now, oldest first (copies)."""
        order = (np.arange(self._size) + (self._next if self._size == self.capacity else 0)) % self.capacity
        return Dataset(self._x[order].copy(), self._y[order].copy())

    def stats(self) -> dict[str, int]:
        return {
            "held": self._size,
            "accepted": self.accepted,
            "dropped": self.dropped,
            "refused": sum(self.refused.values()),
            **{f"refused_{reason}": n for reason, n in sorted(self.refused.items())},
        }


def train_on_buffer(model: nn.Module, buffer: WindowBuffer, spec: TrainSpec, seed: int) -> TrainResult | None:
    """Train `model` on what `buffer` holds now (None if it holds nothing yet)."""
    from fedchain.learning.train import train_local

    if len(buffer) == 0:
        return None
    return train_local(model, buffer.dataset(), spec, seed=seed)


__all__ = ["RecordingReplay", "SensorWindow", "WindowBuffer", "train_on_buffer"]
