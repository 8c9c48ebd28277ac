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


def test_light_against_torch_ratios_and_p90() -> None:
    torch_summary = fp.summarise([_run(1.8, 180, 0.01), _run(2.0, 190, 0.01)], cold=[], torch_only=[])
    light = fp.summarise([_run(0.9, 60, 0.005), _run(1.0, 62, 0.005)], cold=[], torch_only=[])
    ratios = fp.light_vs_torch(light, torch_summary)
    assert ratios["ready_seconds"] == round(0.95 / 1.9, 3)
    assert ratios["uss_mib_after_two_rounds"] == round(61 / 185, 3)
    assert ratios["real_device_ready_seconds"] is None  # no real devices measured: no ratio, not a zero
    runs = [_run(float(i), 100, 0.01) for i in range(1, 11)]
    assert fp._p90(runs, "ready_seconds") == 9.0 and fp._p90([], "ready_seconds") is None


def test_a_light_device_start(tmp_path) -> None:
    out = tmp_path / "device.json"
    assert fp.main(["--runs", "1", "--out", str(out), "--runtime", "light", "--no-floor", "--no-cold", "--json"]) == 0
    report = json.loads(out.read_text())
    assert list(report["runtimes"]) == ["light"] and "light_vs_torch" not in report
    run = report["runs_by_runtime"]["light"]["device"][0]
    assert run["mode"] == "light" and "torch_seconds" not in run
    assert run["interpreter_seconds"] <= run["cli_seconds"] <= run["imports_seconds"] <= run["ready_seconds"]
    # The light child counts torch as a heavy module: none of them was imported.
    assert report["summary"]["heavy_modules"] == [] and run["after_rounds"]["uss_mib"] > 0


def test_proc_cpu_seconds_reads_another_process() -> None:
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
            "print('spun', flush=True)\ninput()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert busy.stdout is not None
        assert busy.stdout.readline() == b"spun\n"  # it has used 0.3 s of CPU, however loaded the machine is
        assert 0.3 <= fp._proc_cpu_seconds(busy.pid) < 30
    finally:
        busy.communicate(b"\n", timeout=60)
