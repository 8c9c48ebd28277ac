"""`fedchain bench flower`: statistics, report building, targets, and measuring processes (no Flower needed)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from fedchain.bench.flower import parse_counts, run_flower_side
from fedchain.bench.flower_app import FlowerTask
from fedchain.bench.flower_report import (
    build_row,
    compare_accuracies,
    format_table,
    later_rounds,
    percentile,
    ratio,
    side_figures,
    targets_for,
)
from fedchain.bench.process_meter import GB, MarkerWatcher, TreeMemorySampler, run_measured
from fedchain.learning.spec import default_task_spec


def test_percentile_interpolates_like_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [0.9, 0.2, 0.5, 1.7, 0.3, 0.31]
    for q in (0, 10, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)
    assert percentile([], 90) is None
    assert percentile([2.5], 90) == 2.5
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_later_rounds_skip_round_one() -> None:
    stats = later_rounds([9.0, 1.0, 3.0, 2.0])
    assert stats["count"] == 3
    assert stats["median"] == 2.0
    assert stats["p90"] == pytest.approx(2.8)
    assert (stats["min"], stats["max"]) == (1.0, 3.0)
    empty = later_rounds([9.0])
    assert empty["count"] == 0 and empty["median"] is None and empty["p90"] is None
    assert later_rounds(None)["median"] is None


def test_ratio_handles_missing_values() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 3.0) == 0.333
    assert ratio(None, 2.0) is None
    assert ratio(2.0, None) is None
    assert ratio(2.0, 0.0) is None


def test_compare_accuracies_is_bit_for_bit() -> None:
    same = compare_accuracies({"a": [0.5, 0.875], "b": [0.5, 0.875], "c": None})
    assert same["bit_identical"] is True and same["compared"] == ["a", "b"]
    off = compare_accuracies({"a": [0.5, 0.875], "b": [0.5, 0.875 + 1e-16]})
    assert off["bit_identical"] is False and off["mismatches"][0]["round"] == 2
    # -0.0 == 0.0 as floats, but not bit for bit
    assert compare_accuracies({"a": [0.0], "b": [-0.0]})["bit_identical"] is False
    assert compare_accuracies({"a": [0.5], "b": [0.5, 0.6]})["bit_identical"] is False
    assert compare_accuracies({"a": [0.5], "b": None})["bit_identical"] is None


def _side(rounds: list[float], startup: float, peak: int, acc: list[float]) -> dict:
    return {
        "round_seconds": rounds,
        "startup_seconds": startup,
        "accuracy_per_round": acc,
        "loss_per_round": [0.5] * len(acc),
        "memory": {"peak_bytes": peak},
    }


def test_build_row_ratios_targets_and_accuracies() -> None:
    flower = _side([2.0, 0.2, 0.4, 0.3], startup=10.0, peak=2 * GB, acc=[0.8, 0.9, 0.9, 0.95])
    fedchain = _side([2.5, 0.3, 0.5, 0.45], startup=8.0, peak=1 * GB, acc=[0.8, 0.9, 0.9, 0.95])
    row = build_row(10, 4, flower, fedchain, [0.8, 0.9, 0.9, 0.95])
    r = row["ratios_fedchain_over_flower"]
    assert r["startup"] == 0.8
    assert r["round1"] == 1.25
    assert r["later_round_median"] == 1.5  # 0.45 / 0.3
    assert r["peak_memory"] == 0.5
    assert row["accuracy"]["bit_identical"] is True
    assert row["accuracy"]["compared"] == ["fedchain", "flower", "reference"]
    assert row["loss"]["bit_identical"] is True
    t = row["targets"]
    assert t["later_round_median_ratio"] == {"limit": 1.5, "value": 1.5, "met": True}
    assert t["round1_seconds"] == {"limit": 3.0, "value": 2.5, "met": True}
    assert t["startup_ratio"]["met"] is True
    assert "peak_memory_bytes" not in t
    json.dumps(row)  # the report is plain JSON


def test_targets_depend_on_the_device_count() -> None:
    fast = side_figures(_side([1.0, 1.0, 1.0], 1.0, 9 * GB, [0.5]))
    slow = side_figures(_side([1.0, 2.1, 2.1], 1.0, 9 * GB, [0.5]))
    at_100 = targets_for(100, slow, fast)
    assert at_100["later_round_median_ratio"]["limit"] == 2.0
    assert at_100["later_round_median_ratio"]["met"] is False
    assert "round1_seconds" not in at_100
    at_1000 = targets_for(1000, slow, fast)
    assert at_1000["peak_memory_bytes"]["met"] is False


def test_a_failed_side_is_reported_not_raised() -> None:
    flower = _side([2.0, 0.2, 0.4], startup=10.0, peak=GB, acc=[0.8, 0.9, 0.95])
    row = build_row(1000, 3, flower, {"error": "exited with code 1: too many devices"}, None)
    assert row["fedchain"]["error"].startswith("exited")
    assert row["ratios_fedchain_over_flower"]["later_round_median"] is None
    assert row["targets"]["later_round_median_ratio"]["met"] is None
    assert row["accuracy"]["bit_identical"] is None
    table = format_table({"runs": [row]})
    assert "ERROR exited" in table and "1000" in table


def test_side_figures_prefer_explicit_round1_and_startup() -> None:
    figures = side_figures({"round_seconds": [5.0, 1.0], "round1_seconds": 4.0, "startup_seconds": 3.0})
    assert figures["round1_seconds"] == 4.0 and figures["startup_seconds"] == 3.0
    assert side_figures({"round_seconds": [5.0, 1.0]})["round1_seconds"] == 5.0
    assert side_figures(None)["later_rounds"]["median"] is None


def test_parse_counts() -> None:
    assert parse_counts("10,100,1000") == [10, 100, 1000]
    assert parse_counts("5") == [5]
    for bad in ("", "a,b", "0,10"):
        with pytest.raises(Exception):  # noqa: B017 - argparse.ArgumentTypeError
            parse_counts(bad)


def test_memory_sampler_sums_the_process_tree() -> None:
    sampler = TreeMemorySampler(os.getpid())
    total = sampler.sample()
    assert total > 10 << 20
    result = sampler.result()
    assert result["peak_bytes"] == total and result["metric"] in ("uss", "rss", "uss+rss")
    assert TreeMemorySampler(2**22 + 12345).sample() == 0  # no such process: nothing, no error


def test_run_measured_times_a_child_and_watches_its_stderr(tmp_path: Path) -> None:
    code = "import sys, time; time.sleep(0.3); print('round 1 is open', file=sys.stderr, flush=True); time.sleep(0.3)"
    started = time.time()
    rc, launched, wall, memory, marked = run_measured(
        [sys.executable, "-c", code], dict(os.environ), tmp_path / "o", tmp_path / "e", 30, "round 1 is open"
    )
    assert rc == 0 and launched >= started and wall >= 0.6
    assert marked is not None and 0.25 <= marked <= wall
    assert memory["samples"] >= 1 and memory["peak_bytes"] > 0


def test_run_measured_kills_on_timeout(tmp_path: Path) -> None:
    rc, _, wall, _, marked = run_measured(
        [sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), tmp_path / "o", tmp_path / "e", 1
    )
    assert rc is None and wall < 20 and marked is None


def test_marker_split_across_writes_is_found(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"xx round 1 i")
    watcher = MarkerWatcher(log, "round 1 is open")
    assert not watcher.check()
    with open(log, "ab") as f:
        f.write(b"s open\n")
    assert watcher.check() and watcher.seen_at is not None


def test_flower_side_without_flower_is_an_error_entry(tmp_path: Path) -> None:
    task = FlowerTask(default_task_spec(), devices=2, rounds=1, addresses=("0xa", "0xb"), scratch=str(tmp_path))
    assert "not installed" in run_flower_side(task, None, tmp_path / "w", 60)["error"]


def test_run_with_both_sides_skipped_still_gives_the_reference(tmp_path: Path) -> None:
    from fedchain.bench.flower import run

    addresses = ["0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "0x90F79bf6EB2c4f870365E785982E1f101E93b906"]
    report = run(
        [2],
        2,
        workdir=tmp_path,
        skip_fedchain=True,
        skip_flower=True,
        addresses=lambda n: addresses[:n],
        log=lambda _: None,
    )
    (row,) = report["runs"]
    assert row["devices"] == 2 and len(row["accuracy"]["reference"]) == 2
    assert row["accuracy"]["bit_identical"] is None
    json.dumps(report)


def test_demo_task_mirrors_the_demos_defaults() -> None:
    from fedchain.app.demo import DemoOptions
    from fedchain.bench.flower import demo_task, device_addresses

    task = demo_task(3, 2, addresses=["0xa", "0xb", "0xc"], num_cpus=1)
    options = DemoOptions(devices=3, rounds=2)
    assert task.spec == options.spec and task.online == options.online and task.non_iid_alpha == options.non_iid
    assert (task.data_seed, task.initial_fraction, task.per_round_fraction) == (0, 0.3, 0.1)
    assert device_addresses(2) == [
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    ]
