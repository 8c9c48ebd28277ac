"""A streaming device's sensor: its own recordings replayed at k x real time into a bounded window buffer.

Switched on by `DeviceSettings.stream_buffer` > 0 (`fedchain device --stream-buffer N`), for wearable tasks only;
without it a device trains on its partition as before. The replay starts when the device starts; each round the
device trains on what the buffer holds then (at least one window: it waits for the first). Windows the device must
not train on (wrong length or rate, NaN samples) are refused by the buffer, counted and logged, and the run goes on;
`fault_rate` (evaluation only) makes the sensor hand over such windows now and then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from fedchain.learning.data import Dataset
from fedchain.learning.spec import TaskSpec
from fedchain.learning.streaming import RecordingReplay, SensorWindow, WindowBuffer
from fedchain.learning.wearables import TASKS, wearable_split, wearable_task

log = logging.getLogger("fedchain.device.stream")


def faulty(window: SensorWindow, rng: np.random.Generator) -> SensorWindow:
    """The window as a faulty sensor hands it over: a burst of NaN samples (evaluation only)."""
    samples = np.array(window.samples, dtype=np.float64)
    start = int(rng.integers(samples.shape[-1]))
    samples[..., start : start + 3] = np.nan
    return SensorWindow(samples, window.sampling_rate, window.label, window.wall_time, window.recording)


class DeviceSensor:
    """The device's recordings (the groups of its partition) replayed from the moment it is created."""

    def __init__(
        self,
        spec: TaskSpec,
        local_data: Dataset,
        capacity: int,
        speed: float = 1.0,
        fault_rate: float = 0.0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        name = spec.dataset.name
        if name not in TASKS:
            raise ValueError(
                f"a streaming device replays recordings: {name!r} is not a wearable task (one of {sorted(TASKS)})"
            )
        if local_data.groups is None:
            raise ValueError("a streaming device needs its partition's recording ids (Dataset.groups)")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
        task = wearable_task(name)
        split = wearable_split(spec.dataset)
        recordings = [int(r) for r in np.unique(local_data.groups)]
        self.replay = RecordingReplay(
            task,
            [split.recordings.signals[r] for r in recordings],
            [split.recordings.annotations[r] for r in recordings],
            speed=speed,
            recording_ids=recordings,
        )
        self.buffer = WindowBuffer(capacity, task.window, split.standardise)
        self.fault_rate = fault_rate
        self._rng = np.random.default_rng([seed, 0x5E2504])
        self._clock = clock
        self._sleep = sleep
        self.started = clock()
        log.info(
            "streaming %d recordings (%d windows) at %gx real time into a %d-window buffer (%d bytes)",
            len(recordings),
            len(self.replay),
            speed,
            capacity,
            self.buffer.nbytes,
        )

    def _take(self, now: float) -> None:
        for window in self.replay.until(now - self.started):
            if self.fault_rate and self._rng.uniform() < self.fault_rate:
                window = faulty(window, self._rng)
            self.buffer.push(window.samples, window.sampling_rate, window.label)

    def data_now(self) -> Dataset:
        """What the buffer holds now; waits for the first window if none has arrived yet."""
        self._take(self._clock())
        while len(self.buffer) == 0:
            next_time = self.replay.next_time()
            if next_time is None:
                raise RuntimeError(f"the sensor's replay ended with no usable window ({self.buffer.stats()})")
            self._sleep(max(0.0, self.started + next_time - self._clock()))
            self._take(self._clock())
        log.info("stream: %s", self.buffer.stats())
        return self.buffer.dataset()


__all__ = ["DeviceSensor", "faulty"]
