"""A streaming device's sensor (`fedchain device --stream-buffer`): its own recordings replayed at k x real time
into a bounded buffer, waiting for the first window, faulty windows refused in the device's log; off by default."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedchain.device.runner import DeviceSettings
from fedchain.device.sensor import DeviceSensor
from fedchain.learning.data import device_partition, load_dataset
from fedchain.learning.spec import default_task_spec
from fedchain.learning.wearables import wearable_task_spec

SPEC = wearable_task_spec("basic_motions")


class FakeClock:
    """Simulated wall time: sleeping advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def share():  # type: ignore[no-untyped-def]
    train, _ = load_dataset(SPEC.dataset)
    return device_partition(train, 0, 6, None, seed=0)  # 10 whole recordings


def test_streaming_is_off_by_default() -> None:
    settings = DeviceSettings("0x0", "http://rpc", "http://ipfs")
    assert settings.stream_buffer == 0 and settings.sensor_fault_rate == 0.0


def test_the_device_trains_on_its_newest_windows(share) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    sensor = DeviceSensor(SPEC, share, capacity=20, speed=10.0, clock=clock, sleep=clock.sleep)
    assert len(sensor.replay) == len(share) == 80
    first = sensor.data_now()  # nothing yet: waits 0.25 s (a 2.5 s window at 10x) for the first one
    assert clock.slept == [pytest.approx(0.25)] and len(first) == 1
    clock.now += 3.0  # 32.5 s of signal: 3 recordings (24 windows) and the first window of the 4th
    assert len(sensor.data_now()) == 20 and sensor.buffer.dropped == 5
    clock.now += 1000.0
    held = sensor.data_now()
    assert len(held) == 20 and sensor.buffer.accepted == 80  # memory stays at 20 windows
    # The newest 20 windows of the device's own recordings, in order.
    assert np.array_equal(held.x, share.x[-20:]) and np.array_equal(held.y, share.y[-20:])


def test_a_faulty_sensor_s_windows_are_refused_in_the_log_and_the_run_goes_on(share, caplog) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    sensor = DeviceSensor(SPEC, share, capacity=200, speed=10.0, fault_rate=0.3, clock=clock, sleep=clock.sleep)
    clock.now += 1000.0
    with caplog.at_level(logging.INFO, logger="fedchain.device.stream"):
        held = sensor.data_now()
    refused = sensor.buffer.refused["not_finite"]
    assert 10 < refused < 40 and len(held) == 80 - refused
    assert np.isfinite(held.x).all()
    assert "window refused (not_finite)" in caplog.text and f"'refused': {refused}" in caplog.text


def test_only_wearable_tasks_stream() -> None:
    train, _ = load_dataset(default_task_spec().dataset)
    with pytest.raises(ValueError, match="not a wearable task"):
        DeviceSensor(default_task_spec(), train, capacity=10)
