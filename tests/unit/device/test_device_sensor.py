"""A streaming device's sensor (`fedchain device --stream-buffer`): its own recordings replayed at k x real time
into a bounded buffer, waiting for the first window, faulty windows refused in the device's log; off by default."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedchain.device.runner import DeviceSettings
from fedchain.device.sensor import FAULT_KINDS, DeviceSensor, drifted_signals
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


def test_a_buffered_device_trains_once_enough_new_windows_arrived(share) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    sensor = DeviceSensor(SPEC, share, capacity=30, speed=10.0, clock=clock, sleep=clock.sleep)
    first = sensor.data_when_ready(min_new=5)  # windows every 0.1 s after the first at 0.25 s: waits for 5
    assert len(first) == 5 and sum(clock.slept) == pytest.approx(0.65)
    assert sensor.new_windows() == 0
    second = sensor.data_when_ready(min_new=10)  # ten more, not counting those it trained on
    assert len(second) == 15 and sensor.buffer.accepted == 15
    clock.now += 1000.0  # the replay is over: it trains on what it holds, at once, whatever min_new says
    slept = len(clock.slept)
    held = sensor.data_when_ready(min_new=10)
    assert len(held) == 30 and sensor.replay.finished
    assert len(sensor.data_when_ready(min_new=10)) == 30 and len(clock.slept) == slept
    with pytest.raises(ValueError, match="min_new"):
        sensor.data_when_ready(min_new=0)


def test_wrong_length_and_rate_windows_are_refused_with_their_reason(share, caplog) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    sensor = DeviceSensor(
        SPEC, share, capacity=200, speed=10.0, fault_rate=0.5, fault_kinds=FAULT_KINDS, clock=clock, sleep=clock.sleep
    )
    clock.now += 1000.0
    with caplog.at_level(logging.WARNING, logger="fedchain.device.stream"):
        held = sensor.data_now()
    refused = sensor.buffer.refused
    assert set(refused) == {"not_finite", "wrong_length", "wrong_rate"}, refused
    assert len(held) == 80 - sum(refused.values()) and np.isfinite(held.x).all()
    assert "window refused (wrong_length)" in caplog.text and "window refused (wrong_rate)" in caplog.text
    with pytest.raises(ValueError, match="fault_kinds"):
        DeviceSensor(SPEC, share, capacity=10, fault_kinds=("melted",))


def test_a_drifting_subject_s_later_recordings_arrive_in_the_new_placement(share, caplog) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="fedchain.device.stream"):
        sensor = DeviceSensor(SPEC, share, capacity=80, speed=10.0, clock=clock, sleep=clock.sleep, drift_at=0.5)
        clock.now += 1000.0
        held = sensor.data_now()
    assert sensor.drift_recording == 5 and "watch was moved" in caplog.text
    # The first five recordings (40 windows) as recorded; the last five moved: x and y swapped (acc and gyro).
    assert np.array_equal(held.x[:40], share.x[:40]) and not np.allclose(held.x[40:], share.x[40:])
    assert np.array_equal(held.y, share.y)
    signals, first = drifted_signals([np.arange(12.0).reshape(6, 2)] * 2, 0.5)
    assert first == 1 and np.array_equal(signals[0], np.arange(12.0).reshape(6, 2))
    assert np.array_equal(signals[1][0], [2.0, 3.0]) and np.array_equal(signals[1][1], [-0.0, -1.0])
    with pytest.raises(ValueError, match="6-channel"):
        ecg = wearable_task_spec("mitdb_rate")
        DeviceSensor(ecg, device_partition(load_dataset(ecg.dataset)[0], 0, 6, None, seed=0), 10, drift_at=0.5)
