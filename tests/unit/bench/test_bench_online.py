"""`fedchain bench online`'s options and the synchronous round's deadline and quorum."""

from __future__ import annotations

from pathlib import Path

from fedchain.bench.online import OnlineSetup, _ratio, parse_args
from fedchain.device.schedule import Fleet


def test_defaults_are_the_issue_fleet_of_100_devices() -> None:
    setup, out, workdir, repeats = parse_args([])
    assert setup.devices == 100 and out == Path("reports/online.json") and workdir is None and repeats == 3
    roles = setup.fleet.roles(setup.devices)
    assert (roles.count("slow"), roles.count("sleeper")) == (30, 10)
    assert setup.fleet.slow_factor == 5 and setup.fleet.sleep_factor == 10


def test_the_round_deadline_lets_slow_devices_in_and_sleepers_not() -> None:
    fleet = Fleet(train_seconds=2, slow_factor=5, sleep_factor=10)
    setup = OnlineSetup(fleet=fleet, per_round=20)
    slow, sleeper = fleet.train_seconds * fleet.slow_factor, fleet.train_seconds + fleet.sleep_seconds
    assert slow < setup.deadline() < sleeper
    assert OnlineSetup(fleet=fleet, round_deadline=30).deadline() == 30
    assert setup.min_updates() == 12


def test_options_reach_the_setup() -> None:
    setup, *_ = parse_args(
        ["--devices", "12", "--fleet", "train=0.5,slow=0.25x4", "--buffer-size", "4", "--data-shares", "0"]
    )
    assert (setup.devices, setup.buffer_size, setup.data_shares) == (12, 4, None)
    assert setup.fleet == Fleet(train_seconds=0.5, slow_fraction=0.25, slow_factor=4)


def test_ratios_need_both_figures() -> None:
    assert _ratio(10.0, 4.0) == 2.5
    assert _ratio(None, 4.0) is None and _ratio(3.0, 0) is None
