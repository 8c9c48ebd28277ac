"""`fedchain bench device` (fedchain.bench.device_footprint): its child measures a device start, its summary
takes medians."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fedchain.bench import device_footprint as fp


def _run(ready: float, uss: float, round1: float) -> dict:
    memory = {"uss_mib": uss, "pss_mib": uss, "rss_mib": uss + 90, "private_dirty_mib": uss - 5}
    return {
        "ready_seconds": ready,
        "interpreter_seconds": 0.05,
        "ready": memory,
        "after_rounds": memory,
        "round1_train_seconds": round1,
        "round2_train_seconds": 0.002,
        "heavy_modules": [],
    }


def test_summary_takes_medians_and_checks_targets() -> None:
    runs = [_run(1.2, 140, 0.004), _run(1.4, 149, 0.003), _run(9.0, 400, 0.9)]
    summary = fp.summarise(runs, cold=[], torch_only=[])
    assert summary["ready_seconds"] == 1.4
    assert summary["after_two_rounds"]["uss_mib"] == 149
    assert summary["round1_train_seconds"] == 0.004
    assert summary["targets"]["uss_met"] and summary["targets"]["ready_met"]
    slow = fp.summarise([_run(2.0, 200, 0.004)], cold=[], torch_only=[])
    assert not slow["targets"]["uss_met"] and not slow["targets"]["ready_met"]


def test_module_imports_no_role() -> None:
    code = "import json, sys, fedchain.bench.device_footprint\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    roles = [m for m in loaded if m == "fedchain.device" or m.startswith(("fedchain.device.", "fedchain.learning"))]
    assert roles == [] and "torch" not in loaded


def test_a_real_device_start(tmp_path) -> None:
    out = tmp_path / "device.json"
    assert fp.main(["--runs", "1", "--out", str(out), "--no-floor", "--json"]) == 0
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["heavy_modules"] == []
    assert summary["ready_seconds"] > 0 and summary["at_ready"]["rss_mib"] > 0
    run = report["device_runs"][0]
    assert run["interpreter_seconds"] <= run["cli_seconds"] <= run["torch_seconds"] <= run["ready_seconds"]
    assert "warm_up_seconds" in run and "warm_up_seconds" not in report["without_warm_up_runs"][0]


def test_proc_memory_reads_another_process() -> None:
    mem = fp._proc_memory(os.getpid())
    assert 0 < mem["private_dirty_mib"] <= mem["uss_mib"] <= mem["rss_mib"]
