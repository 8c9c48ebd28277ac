"""Simulated device timing: the fleet's roles, each device's duration and naps, the synchronous round's sample and
ready times, and the pool's ready queue."""

from __future__ import annotations

from collections import Counter

import pytest

from fedchain.device.schedule import DeviceTiming, Fleet, ReadyQueue, round_ready_times, sample_round


def test_fleet_roles_have_the_asked_fractions_and_do_not_depend_on_the_pool_split() -> None:
    fleet = Fleet(train_seconds=2, slow_fraction=0.3, slow_factor=5, sleep_fraction=0.1, sleep_factor=10, seed=3)
    roles = fleet.roles(100)
    assert Counter(roles) == {"normal": 60, "slow": 30, "sleeper": 10}
    assert roles == fleet.roles(100)  # seeded: every pool computes the same fleet
    assert roles != Fleet(seed=4).roles(100)
    timings = fleet.timings(100)
    assert [fleet.timing(i, 100) for i in range(100)] == timings
    for role, timing in zip(roles, timings, strict=True):
        if role == "slow":
            assert timing.duration(0.1, 1) == pytest.approx(10.0)
        elif role == "sleeper":  # naps 10 normal trainings after every training, holding its update
            assert [timing.duration(0.1, n) for n in (1, 2)] == pytest.approx([22.0, 22.0])
        else:
            assert timing.duration(0.1, 1) == pytest.approx(2.0)


def test_fleet_round_trips_through_its_cli_form_and_refuses_nonsense() -> None:
    fleet = Fleet(train_seconds=0.5, slow_fraction=0.25, slow_factor=4, sleep_fraction=0.05, sleep_factor=20, seed=7)
    assert Fleet.parse(fleet.to_arg()) == fleet
    assert Fleet.parse("slow=0.5x2") == Fleet(slow_fraction=0.5, slow_factor=2)
    for bad in ("slow=0.5", "speed=3", "train=x", "slow=0.8x5,sleep=0.3x1"):
        with pytest.raises(ValueError):
            Fleet.parse(bad)


def test_a_training_lasts_at_least_the_minimum_times_the_speed_and_naps_hold_the_update() -> None:
    timing = DeviceTiming(speed_factor=3, min_train_seconds=1.0)
    assert timing.extra_seconds(0.2) == pytest.approx(2.8)
    assert timing.extra_seconds(2.0) == pytest.approx(4.0)  # slower than the minimum: 3x the real time
    once = DeviceTiming(sleep_seconds=30, sleep_after=2)
    assert [once.nap_seconds(n) for n in (1, 2, 3)] == [0, 30, 0]
    every = DeviceTiming(sleep_seconds=5, sleep_every=2)
    assert [every.nap_seconds(n) for n in (1, 2, 3, 4)] == [0, 5, 0, 5]
    with pytest.raises(ValueError):
        DeviceTiming(speed_factor=0.5).extra_seconds(1.0)


def test_round_sample_is_deterministic_per_round_and_sized() -> None:
    first = sample_round(100, 20, 1, seed=0)
    assert len(first) == 20 and all(0 <= i < 100 for i in first)
    assert first == sample_round(100, 20, 1, seed=0)
    assert first != sample_round(100, 20, 2, seed=0)
    assert first != sample_round(100, 20, 1, seed=1)
    assert sample_round(5, 5, 9) == frozenset(range(5))
    with pytest.raises(ValueError):
        sample_round(5, 6, 1)


def test_a_device_still_asleep_from_an_earlier_round_starts_late() -> None:
    ready = round_ready_times(100.0, {0: 2.0, 1: 10.0, 2: 2.0}, {2: 130.0, 0: 50.0})
    assert ready == {0: 102.0, 1: 110.0, 2: 132.0}


def test_ready_queue_pops_what_is_due_in_time_order() -> None:
    queue = ReadyQueue()
    queue.push(3, 5.0)
    queue.extend([1, 2], 1.0)
    queue.push(0, 3.0)
    assert queue.next_at() == 1.0 and len(queue) == 4
    assert queue.pop_due(0.5) == []
    assert queue.pop_due(3.0) == [1, 2, 0]
    assert queue.next_at() == 5.0
    assert queue.pop_due(10.0) == [3]
    assert queue.next_at() is None and len(queue) == 0
