"""A streaming device's sensor: its own recordings replayed at k x real time into a bounded window buffer.

Switched on by `DeviceSettings.stream_buffer` > 0 (`fedchain device --stream-buffer N`), for wearable tasks only;
without it a device trains on its partition as before. The replay starts when the device starts; each round the
device trains on what the buffer holds then (at least one window: it waits for the first). Windows the device must
not train on (wrong length or rate, NaN samples) are refused by the buffer, counted and logged, and the run goes on;
`fault_rate` (evaluation only) makes the sensor hand over such windows now and then (`fault_kinds`: NaN samples, a
truncated window, a wrong sampling rate).

A device of an asynchronous buffered task (fedchain.device.buffered) trains when it chooses to: `data_when_ready`
waits until `min_new` windows arrived since its previous training (or the replay is over: then it trains on what it
holds, as a synchronous streaming device does every round). `drift_at` (evaluation only, 6-channel IMU tasks) makes
the wearer move the watch once that fraction of the device's recordings has played: the later recordings arrive as a
sensor turned a quarter turn records them (`learning.drift.switch_placement`), a subject whose signal changes mid-run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedchain.learning.data import Dataset
from fedchain.learning.spec import TaskSpec
from fedchain.learning.streaming import RecordingReplay, SensorWindow, WindowBuffer
from fedchain.learning.wearables import TASKS, wearable_split, wearable_task

log = logging.getLogger("fedchain.device.stream")


# What a faulty sensor can hand over (evaluation only): a burst of NaN samples, a window cut short (the sensor
# stalled), a window sampled at half the task's rate (a misconfigured sensor).
FAULT_KINDS = ("nan", "short", "rate")


def faulty(window: SensorWindow, rng: np.random.Generator, kind: str = "nan") -> SensorWindow:
    """The window as a faulty sensor hands it over (evaluation only): see FAULT_KINDS."""
    samples = np.array(window.samples, dtype=np.float64)
    rate = window.sampling_rate
    if kind == "nan":
        start = int(rng.integers(samples.shape[-1]))
        samples[..., start : start + 3] = np.nan
    elif kind == "short":
        samples = samples[..., : max(1, samples.shape[-1] - 1 - int(rng.integers(samples.shape[-1] // 2)))]
    elif kind == "rate":
        rate = rate / 2
    else:
        raise ValueError(f"unknown sensor fault {kind!r}; known: {FAULT_KINDS}")
    return SensorWindow(samples, rate, window.label, window.wall_time, window.recording)


@dataclass(frozen=True)
class StreamSettings:
    """A streaming device's sensor (see the module's notes); `capacity` windows in the buffer."""

    capacity: int
    speed: float = 1.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = ("nan",)
    min_new: int = 1  # buffered devices: new windows since the previous training before training again
    drift_at: float | None = None  # fraction of the device's recordings after which the watch is moved


def drifted_signals(signals: Sequence[np.ndarray], drift_at: float | None) -> tuple[list[np.ndarray], int | None]:
    """The recordings as the sensor records them when the watch is moved once `drift_at` of them have played
    (the later ones through `switch_placement`), and the index of the first moved one (None without drift)."""
    if drift_at is None:
        return list(signals), None
    if not 0.0 <= drift_at < 1.0:
        raise ValueError(f"drift_at must be in [0, 1), got {drift_at}")
    first = int(np.ceil(drift_at * len(signals)))
    from fedchain.learning.drift import switch_placement  # lazily: drift's simulation imports torch

    return [s if i < first else switch_placement(s) for i, s in enumerate(signals)], first


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
        fault_kinds: Sequence[str] = ("nan",),
        drift_at: float | None = None,
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
        if not fault_kinds or set(fault_kinds) - set(FAULT_KINDS):
            raise ValueError(f"fault_kinds must be some of {FAULT_KINDS}, got {tuple(fault_kinds)}")
        task = wearable_task(name)
        if drift_at is not None and task.window.channels != 6:
            raise ValueError(f"drift moves a 6-channel wrist IMU; {name!r} has {task.window.channels} channel(s)")
        split = wearable_split(spec.dataset)
        recordings = [int(r) for r in np.unique(local_data.groups)]
        signals, self.drift_recording = drifted_signals([split.recordings.signals[r] for r in recordings], drift_at)
        self.replay = RecordingReplay(
            task,
            signals,
            [split.recordings.annotations[r] for r in recordings],
            speed=speed,
            recording_ids=recordings,
        )
        self.buffer = WindowBuffer(capacity, task.window, split.standardise)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self._trained_at = 0  # buffer.accepted when the device last took its data
        self._drift_logged = False
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
        if self.drift_recording is not None:
            log.info("drift: the watch will be moved after %d of %d recordings", self.drift_recording, len(recordings))
        self._drifted_ids = set(recordings[self.drift_recording :]) if self.drift_recording is not None else set()

    @classmethod
    def from_settings(cls, spec: TaskSpec, local_data: Dataset, settings: StreamSettings, seed: int) -> DeviceSensor:
        return cls(
            spec,
            local_data,
            settings.capacity,
            settings.speed,
            settings.fault_rate,
            seed,
            fault_kinds=settings.fault_kinds,
            drift_at=settings.drift_at,
        )

    def _take(self, at_least: float = 0.0) -> None:
        """Take the windows complete by now (and by `at_least` seconds of replay: a sleep until a window's time may
        end a float rounding short of it)."""
        for window in self.replay.until(max(self._clock() - self.started, at_least)):
            if window.recording in self._drifted_ids and not self._drift_logged:
                self._drift_logged = True
                log.warning("drift: the watch was moved; windows now arrive in the new placement")
            if self.fault_rate and self._rng.uniform() < self.fault_rate:
                # one kind draws no extra number: a NaN-only sensor hands over the same windows as before
                pick = int(self._rng.integers(len(self.fault_kinds))) if len(self.fault_kinds) > 1 else 0
                window = faulty(window, self._rng, self.fault_kinds[pick])
            self.buffer.push(window.samples, window.sampling_rate, window.label)

    def data_now(self) -> Dataset:
        """What the buffer holds now; waits for the first window if none has arrived yet."""
        self._take()
        while len(self.buffer) == 0:
            next_time = self.replay.next_time()
            if next_time is None:
                raise RuntimeError(f"the sensor's replay ended with no usable window ({self.buffer.stats()})")
            self._sleep(max(0.0, self.started + next_time - self._clock()))
            self._take(next_time)
        log.info("stream: %s", self.buffer.stats())
        self._trained_at = self.buffer.accepted
        return self.buffer.dataset()

    def new_windows(self) -> int:
        """Windows accepted since the device last took its data."""
        return self.buffer.accepted - self._trained_at

    def data_when_ready(self, min_new: int = 1) -> Dataset:
        """What the buffer holds once `min_new` windows arrived since the last call (at once if the replay is
        over and the buffer holds something: nothing newer will come)."""
        if min_new < 1:
            raise ValueError(f"min_new must be >= 1, got {min_new}")
        self._take()
        while self.new_windows() < min_new and not self.replay.finished:
            next_time = self.replay.next_time()
            assert next_time is not None  # the replay is not finished
            self._sleep(max(0.0, self.started + next_time - self._clock()))
            self._take(next_time)
        return self.data_now()


__all__ = ["FAULT_KINDS", "DeviceSensor", "StreamSettings", "drifted_signals", "faulty"]
