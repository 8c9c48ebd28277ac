"""When simulated devices are ready: a fleet of heterogeneous device speeds, each device's timing, the per-round
sample of a synchronous task and the ready queue of a pool of virtual devices. Pure logic (no chain, no torch).

Heterogeneity is simulated as waiting time: a device "trains" for its speed's duration, the real training plus a
wait, so a hundred devices fit on two cores. A slow device takes `slow_factor` times a normal device's training
time; a sleeping device (a wearable that naps between uses) holds each trained update for `sleep_factor` times a
normal training before it submits it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def simulated_seconds(train_seconds: float, speed_factor: float, min_train_seconds: float) -> float:
    """Extra seconds to wait after a local training so that it takes max(actual, min) x speed_factor in all (a
    slower CPU, or a duty-cycled wearable)."""
    if speed_factor < 1:
        raise ValueError(f"speed_factor must be >= 1, got {speed_factor}")
    return max(0.0, max(train_seconds, min_train_seconds) * speed_factor - train_seconds)


@dataclass(frozen=True)
class DeviceTiming:
    """How long one simulated device takes: each training lasts max(actual, min_train_seconds) x speed_factor;
    after its `sleep_after`-th training (1-based), or after every `sleep_every`-th, it sleeps `sleep_seconds`
    holding its update before submitting it."""

    speed_factor: float = 1.0
    min_train_seconds: float = 0.0
    sleep_seconds: float = 0.0
    sleep_after: int | None = None
    sleep_every: int | None = None

    def extra_seconds(self, train_seconds: float) -> float:
        """The wait after a real training of `train_seconds` that makes it last this device's duration."""
        return simulated_seconds(train_seconds, self.speed_factor, self.min_train_seconds)

    def nap_seconds(self, trained: int) -> float:
        """How long the device sleeps after its `trained`-th training, holding the update."""
        if self.sleep_after is not None and trained == self.sleep_after:
            return self.sleep_seconds
        if self.sleep_every is not None and trained % self.sleep_every == 0:
            return self.sleep_seconds
        return 0.0

    def duration(self, train_seconds: float, trained: int) -> float:
        """Seconds from the start of the `trained`-th training to the moment its update is ready to submit."""
        return train_seconds + self.extra_seconds(train_seconds) + self.nap_seconds(trained)


ROLES = ("normal", "slow", "sleeper")


@dataclass(frozen=True)
class Fleet:
    """Device speeds of a simulated fleet: `slow_fraction` of the devices `slow_factor` times slower,
    `sleep_fraction` sleeping `sleep_factor` normal trainings after each training; a normal training lasts
    `train_seconds`. Which device is which is a seeded draw over the whole fleet, so it does not depend on how
    the devices are split into pools."""

    train_seconds: float = 1.0
    slow_fraction: float = 0.3
    slow_factor: float = 5.0
    sleep_fraction: float = 0.1
    sleep_factor: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_seconds < 0 or self.slow_factor < 1 or self.sleep_factor < 0:
            raise ValueError("a fleet needs train_seconds >= 0, slow_factor >= 1 and sleep_factor >= 0")
        fractions = (self.slow_fraction, self.sleep_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ValueError("slow and sleeping fractions must be >= 0 and sum to at most 1")

    @property
    def sleep_seconds(self) -> float:
        return self.sleep_factor * self.train_seconds

    def roles(self, num_devices: int) -> list[str]:
        """Each device's role ("normal", "slow", "sleeper") by its index in the fleet."""
        order = random.Random(self.seed).sample(range(num_devices), num_devices)
        sleepers = round(self.sleep_fraction * num_devices)
        slow = round(self.slow_fraction * num_devices)
        roles = ["normal"] * num_devices
        for rank, index in enumerate(order):
            if rank < sleepers:
                roles[index] = "sleeper"
            elif rank < sleepers + slow:
                roles[index] = "slow"
        return roles

    def timing(self, index: int, num_devices: int) -> DeviceTiming:
        """Device `index`'s timing."""
        return self.timings(num_devices)[index]

    def timings(self, num_devices: int) -> list[DeviceTiming]:
        out = []
        for role in self.roles(num_devices):
            if role == "slow":
                out.append(DeviceTiming(self.slow_factor, self.train_seconds))
            elif role == "sleeper":
                out.append(DeviceTiming(1.0, self.train_seconds, self.sleep_seconds, sleep_every=1))
            else:
                out.append(DeviceTiming(1.0, self.train_seconds))
        return out

    def to_arg(self) -> str:
        """The fleet as `parse` reads it (a CLI option's value)."""
        return (
            f"train={self.train_seconds:g},slow={self.slow_fraction:g}x{self.slow_factor:g},"
            f"sleep={self.sleep_fraction:g}x{self.sleep_factor:g},seed={self.seed}"
        )

    @classmethod
    def parse(cls, text: str) -> Fleet:
        """`train=SECONDS,slow=FRACTIONxFACTOR,sleep=FRACTIONxFACTOR,seed=N` (any subset, any order)."""
        values: dict[str, float | int] = {}
        try:
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, value = part.split("=", 1)
                if key == "train":
                    values["train_seconds"] = float(value)
                elif key in ("slow", "sleep"):
                    fraction, factor = value.split("x", 1)
                    values[f"{key}_fraction"], values[f"{key}_factor"] = float(fraction), float(factor)
                elif key == "seed":
                    values["seed"] = int(value)
                else:
                    raise ValueError(f"unknown fleet key {key!r}")
        except ValueError as exc:
            raise ValueError(
                f"bad fleet {text!r} ({exc}): expected train=SECONDS,slow=FRACTIONxFACTOR,sleep=FRACTIONxFACTOR,seed=N"
            ) from None
        return cls(**values)  # type: ignore[arg-type]


def sample_round(num_devices: int, per_round: int, round_index: int, seed: int = 0) -> frozenset[int]:
    """The fleet indices a synchronous round samples (FedAvg's client sampling): `per_round` of `num_devices`,
    drawn from (seed, round), so every pool of the task computes the same sample without talking to the others."""
    if not 1 <= per_round <= num_devices:
        raise ValueError(f"per_round must be in 1..{num_devices}, got {per_round}")
    return frozenset(random.Random(f"fedchain-sample:{seed}:{round_index}").sample(range(num_devices), per_round))


def round_ready_times(
    opened_at: float,
    durations: Mapping[int, float],
    busy_until: Mapping[int, float],
) -> dict[int, float]:
    """When each sampled device's update is ready in a synchronous round opened at `opened_at`: it starts when the
    round opens or, if it is still busy (asleep) from an earlier round, when it is free, and takes its duration."""
    return {i: max(opened_at, busy_until.get(i, opened_at)) + d for i, d in durations.items()}


@dataclass
class ReadyQueue:
    """Virtual devices ordered by when they next act (train, or submit the update they hold); ties in push order."""

    _heap: list[tuple[float, int, int]] = field(default_factory=list)
    _seq: int = 0

    def push(self, index: int, at: float) -> None:
        heapq.heappush(self._heap, (at, self._seq, index))
        self._seq += 1

    def pop_due(self, now: float) -> list[int]:
        """The devices due at `now` (ready time <= now), earliest first."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def next_at(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

    def extend(self, indices: Sequence[int], at: float) -> None:
        for index in indices:
            self.push(index, at)
