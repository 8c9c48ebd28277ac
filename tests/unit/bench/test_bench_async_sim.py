"""The sync-vs-async simulation: same number of aggregated updates, virtual time, slow and sleeping devices."""

from __future__ import annotations

from fedchain.bench.async_sim import Fleet, compare


def test_async_versions_do_not_wait_for_slow_and_sleeping_devices() -> None:
    fleet = Fleet(num_devices=10, slow_fraction=0.3, sleep_fraction=0.1, sleep_seconds=120, train_seconds=10)
    assert fleet.durations() == [130.0, 50.0, 50.0, 50.0, *([10.0] * 6)]
    result = compare(fleet, target=0.85, rounds=6, per_round=5, buffer_size=5, max_staleness=3)
    sync, asynchronous = result["sync"], result["async"]
    assert sync["updates"] == asynchronous["updates"] == 30
    assert len(sync["curve"]) == len(asynchronous["curve"]) == 6
    # the same work takes far less virtual time when nothing waits for the slowest device
    assert asynchronous["curve"][-1][0] < sync["curve"][-1][0] / 2
    assert asynchronous["updates_per_second"] > 2 * sync["updates_per_second"]
    assert sum(asynchronous["staleness"].values()) == 30 and max(asynchronous["staleness"]) <= 3
    assert asynchronous["curve"][-1][1] >= 0.85, asynchronous["curve"]
