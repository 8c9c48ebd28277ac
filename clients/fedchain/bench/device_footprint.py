"""`fedchain bench device`: how heavy one device process is (issue 12, "a light device").

Each run starts a fresh interpreter that does what `fedchain device` does before it waits for round 1, for the
demo's task: import the CLI, torch (one thread) and the device's module (`fedchain.device.runner`, so whatever the
device imports is counted), load the dataset, take its partition, build the model and warm training up
(`fedchain.learning.train.warm_up`). "Ready" is the moment that is done, measured from just before the process was
spawned (interpreter start-up included). Then it trains two local rounds and reports each one's seconds, so the
first-call cost of round 1 shows. The same for the light runtime (`fedchain device --runtime light`: numpy only,
`fedchain.learning.light`), side by side: `--runtime both` (the default) interleaves the two and reports each one's
summary and their ratios (light / torch). Chain and IPFS are not involved: connecting and fetching the task description
take a few RPC round trips on a local devnet (about 0.1-0.3 s) on top.

Memory is read from /proc/self/smaps_rollup at ready and after the rounds: USS (private pages, clean or dirty:
what psutil calls `memory_full_info().uss`), PSS, RSS and Private_Dirty. USS of a lone process also counts the
shared libraries' text pages only it maps (torch's, tens of MiB); with several devices on one machine those pages
are shared and USS falls towards Private_Dirty, which no other process can share.

For reference the same child also measures the floor, `import torch` alone. With `--task ADDR` (a running
devnet, an approved `--account`) it also times real `fedchain device` processes from spawn to their `--ready-file`
(registered and listening) and reads their memory then. Every figure is the median of `--runs` runs (5 by
default); reports/device.json keeps each run too.

This module imports no fedchain role at module level: the children do the importing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGET_USS_MIB = 150.0
TARGET_READY_SECONDS = 1.5
# Modules a device never needs: their presence in the child is reported (and fails the unit test that checks it).
HEAVY = (
    "sklearn",
    "scipy",
    "pandas",
    "matplotlib",
    "fastapi",
    "uvicorn",
    "opacus",
    "ray",
    "brownie",
    "neurokit2",
    "sympy",
    "mpmath",
    "torch._dynamo",
)

# The child: stdlib only until the measured imports; prints one JSON line.
CHILD = r"""
import json, os, sys, time
T0 = float(os.environ["FEDCHAIN_FOOTPRINT_T0"])
MODE = os.environ["FEDCHAIN_FOOTPRINT_MODE"]
HEAVY = json.loads(os.environ["FEDCHAIN_FOOTPRINT_HEAVY"])

def memory():
    fields = {}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB":
                    fields[key] = int(parts[0]) / 1024
    except OSError:  # not Linux: psutil's figures (no private-dirty split)
        import psutil
        info = psutil.Process().memory_full_info()
        uss = info.uss / 2**20
        fields = {"Private_Clean": 0.0, "Private_Dirty": uss, "Pss": getattr(info, "pss", 0) / 2**20,
                  "Rss": info.rss / 2**20}
    return {
        "uss_mib": round(fields["Private_Clean"] + fields["Private_Dirty"], 1),
        "pss_mib": round(fields["Pss"], 1),
        "rss_mib": round(fields["Rss"], 1),
        "private_dirty_mib": round(fields["Private_Dirty"], 1),
    }

out = {"mode": MODE, "interpreter_seconds": time.time() - T0}
if MODE == "torch":
    import torch
    out["ready_seconds"] = time.time() - T0
    out["ready_cpu_seconds"] = time.process_time()
    out["ready"] = memory()
elif MODE == "light":
    # `fedchain device --runtime light`: the same steps on the numpy runtime; torch is never imported.
    import fedchain.cli
    out["cli_seconds"] = time.time() - T0
    import fedchain.device.runner as runner
    from fedchain.learning.data import device_partition, load_dataset
    from fedchain.learning.light import warm_up_light
    from fedchain.learning.spec import default_task_spec
    out["imports_seconds"] = time.time() - T0
    spec = default_task_spec()
    train, _ = load_dataset(spec.dataset)
    data = device_partition(train, 0, 5, None, 0)
    model = runner.build_device_model(spec, "light")
    out["built_seconds"] = time.time() - T0
    if os.environ.get("FEDCHAIN_FOOTPRINT_WARM_UP") == "1":
        out["warm_up_seconds"] = warm_up_light(spec.model, spec.train, data)
    out["ready_seconds"] = time.time() - T0
    out["ready_cpu_seconds"] = time.process_time()
    out["ready"] = memory()
    for i in (1, 2):
        started = time.perf_counter()
        model.train(data, spec.train, seed=i)
        out[f"round{i}_train_seconds"] = time.perf_counter() - started
    out["after_rounds"] = memory()
    HEAVY = [*HEAVY, "torch"]
elif MODE == "device":
    import fedchain.cli
    out["cli_seconds"] = time.time() - T0
    import torch
    torch.set_num_threads(1)
    out["torch_seconds"] = time.time() - T0
    import fedchain.device.runner
    from fedchain.learning.data import device_partition, load_dataset
    from fedchain.learning.model import build_model
    from fedchain.learning.spec import default_task_spec
    from fedchain.learning.train import train_local
    out["imports_seconds"] = time.time() - T0
    spec = default_task_spec()
    train, _ = load_dataset(spec.dataset)
    data = device_partition(train, 0, 5, None, 0)
    model = build_model(spec.model, seed=spec.seed)
    out["built_seconds"] = time.time() - T0
    if os.environ.get("FEDCHAIN_FOOTPRINT_WARM_UP") == "1":
        from fedchain.learning.train import warm_up
        out["warm_up_seconds"] = warm_up(model, data, spec.train)
    out["ready_seconds"] = time.time() - T0
    out["ready_cpu_seconds"] = time.process_time()
    out["ready"] = memory()
    for i in (1, 2):
        started = time.perf_counter()
        train_local(model, data, spec.train, seed=i)
        out[f"round{i}_train_seconds"] = time.perf_counter() - started
    out["after_rounds"] = memory()
out["modules"] = len(sys.modules)
out["heavy_modules"] = [m for m in HEAVY if m in sys.modules]
print(json.dumps(out))
"""


def run_child(mode: str, warm_up: bool = True, python: str = sys.executable, timeout: float = 300.0) -> dict[str, Any]:
    """One fresh interpreter in `mode` ("torch": the import alone, "device": the torch device, "light": the light
    device); its JSON report."""
    env = dict(os.environ)
    env.update(
        FEDCHAIN_FOOTPRINT_MODE=mode,
        FEDCHAIN_FOOTPRINT_HEAVY=json.dumps(HEAVY),
        FEDCHAIN_FOOTPRINT_WARM_UP="1" if warm_up else "0",
        FEDCHAIN_FOOTPRINT_T0=repr(time.time()),
    )
    proc = subprocess.run([python, "-c", CHILD], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"footprint child ({mode}) failed with {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _proc_memory(pid: int) -> dict[str, float]:
    """Another process's memory, as the child reports its own (Linux)."""
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[key] = int(parts[0]) / 1024
    return {
        "uss_mib": round(fields["Private_Clean"] + fields["Private_Dirty"], 1),
        "pss_mib": round(fields["Pss"], 1),
        "rss_mib": round(fields["Rss"], 1),
        "private_dirty_mib": round(fields["Private_Dirty"], 1),
    }


def _proc_cpu_seconds(pid: int) -> float:
    """Another process's user + system CPU seconds so far (Linux): on a loaded machine, what its wall time would
    be on an idle core."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_real_device(
    task: str,
    account: int,
    partition: str,
    state_file: Path,
    scratch: Path,
    timeout: float = 120.0,
    runtime: str = "torch",
    python: str = sys.executable,
) -> dict[str, Any]:
    """A real `fedchain device --runtime RUNTIME` against a running devnet: seconds from spawn until its
    --ready-file appears (registered and listening), and its memory at that moment; then it is stopped (SIGTERM)."""
    ready = scratch / f"device-ready-{os.getpid()}-{time.monotonic_ns()}"
    cmd = [python, "-m", "fedchain.cli", "device", "--task", task, "--account", str(account)]
    cmd += ["--partition", partition, "--state-file", str(state_file), "--ready-file", str(ready)]
    cmd += ["--runtime", runtime]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"device exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"device not ready within {timeout:.0f} s")
            time.sleep(0.005)
        seconds = time.monotonic() - started
        return {
            "ready_seconds": seconds,
            "ready_cpu_seconds": _proc_cpu_seconds(proc.pid),
            "ready": _proc_memory(proc.pid),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        ready.unlink(missing_ok=True)


def _median(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(float(value))
    return round(statistics.median(values), 4) if values else None


def _p90(runs: list[dict[str, Any]], *path: str) -> float | None:
    """The 90th percentile (nearest rank) of a figure over the runs."""
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(float(value))
    if not values:
        return None
    values.sort()
    return round(values[min(len(values) - 1, max(0, -(-9 * len(values) // 10) - 1))], 4)


def light_vs_torch(light: dict[str, Any], torch_summary: dict[str, Any]) -> dict[str, float | None]:
    """Light figure / torch figure for what the targets are about (below 1: the light device is lighter)."""

    def ratio(*path: str) -> float | None:
        a: Any = light
        b: Any = torch_summary
        for key in path:
            a = a.get(key) if isinstance(a, dict) else None
            b = b.get(key) if isinstance(b, dict) else None
        return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    return {
        "ready_seconds": ratio("ready_seconds"),
        "ready_cpu_seconds": ratio("ready_cpu_seconds"),
        "uss_mib_at_ready": ratio("at_ready", "uss_mib"),
        "uss_mib_after_two_rounds": ratio("after_two_rounds", "uss_mib"),
        "private_dirty_mib_after_two_rounds": ratio("after_two_rounds", "private_dirty_mib"),
        "round2_train_seconds": ratio("round2_train_seconds"),
        "real_device_ready_seconds": ratio("real_device", "ready_seconds"),
        "real_device_ready_cpu_seconds": ratio("real_device", "ready_cpu_seconds"),
        "real_device_uss_mib": ratio("real_device", "uss_mib"),
    }


def summarise(
    device: list[dict[str, Any]],
    cold: list[dict[str, Any]],
    torch_only: list[dict[str, Any]],
    real: list[dict[str, Any]] | None = None,
) -> dict:
    """Medians of the runs, and whether the device meets issue 12's targets."""
    memory_keys = ("uss_mib", "pss_mib", "rss_mib", "private_dirty_mib")
    summary: dict[str, Any] = {
        "ready_seconds": _median(device, "ready_seconds"),
        "ready_seconds_p90": _p90(device, "ready_seconds"),
        # CPU seconds of the process up to ready: what the wall time is on an idle machine (start-up is one
        # CPU-bound thread), and steady when neighbours compete for the cores.
        "ready_cpu_seconds": _median(device, "ready_cpu_seconds"),
        "phases_seconds": {
            key: _median(device, key)
            for key in ("interpreter_seconds", "cli_seconds", "torch_seconds", "imports_seconds", "built_seconds")
        },
        "warm_up_seconds": _median(device, "warm_up_seconds"),
        "at_ready": {key: _median(device, "ready", key) for key in memory_keys},
        "after_two_rounds": {key: _median(device, "after_rounds", key) for key in memory_keys},
        "after_two_rounds_uss_mib_p90": _p90(device, "after_rounds", "uss_mib"),
        "round1_train_seconds": _median(device, "round1_train_seconds"),
        "round2_train_seconds": _median(device, "round2_train_seconds"),
        "modules": _median(device, "modules"),
        "heavy_modules": sorted({m for run in device for m in run.get("heavy_modules", [])}),
    }
    if cold:
        summary["without_warm_up"] = {
            "round1_train_seconds": _median(cold, "round1_train_seconds"),
            "round2_train_seconds": _median(cold, "round2_train_seconds"),
            "ready_seconds": _median(cold, "ready_seconds"),
            "ready_cpu_seconds": _median(cold, "ready_cpu_seconds"),
        }
    if torch_only:
        summary["floor_import_torch"] = {
            "seconds": _median(torch_only, "ready_seconds"),
            "cpu_seconds": _median(torch_only, "ready_cpu_seconds"),
            **{key: _median(torch_only, "ready", key) for key in memory_keys},
        }
    if real:
        summary["real_device"] = {
            "ready_seconds": _median(real, "ready_seconds"),
            "ready_cpu_seconds": _median(real, "ready_cpu_seconds"),
            **{key: _median(real, "ready", key) for key in memory_keys},
        }
    uss = summary["after_two_rounds"]["uss_mib"]
    ready = summary["ready_seconds"]
    summary["targets"] = {
        "uss_mib": TARGET_USS_MIB,
        "ready_seconds": TARGET_READY_SECONDS,
        "uss_met": uss is not None and uss <= TARGET_USS_MIB,
        "ready_met": ready is not None and ready <= TARGET_READY_SECONDS,
    }
    return summary


RUNTIMES = ("torch", "light")


def measure(
    runs: int = 5,
    cold: bool = True,
    floor: bool = True,
    real: dict[str, Any] | None = None,
    runtimes: tuple[str, ...] = RUNTIMES,
    light_python: str = sys.executable,
) -> dict[str, Any]:
    """The full report: for each of `runtimes`, `runs` device starts (warm-up on), and optionally as many without
    warm-up and of a real `fedchain device --runtime R` (`real`: run_real_device's keyword arguments); the
    `import torch` floor; all interleaved so a noisy neighbour hits each kind alike. "summary" is the first
    runtime's; "runtimes" has each one's and "light_vs_torch" their ratios when both ran. `light_python`: the
    interpreter of the light runs (a venv without torch, say)."""
    if not runtimes or any(r not in RUNTIMES for r in runtimes):
        raise ValueError(f"runtimes must be some of {list(RUNTIMES)}, got {list(runtimes)}")
    mode = {"torch": "device", "light": "light"}
    python = {"torch": sys.executable, "light": light_python}
    kinds = {r: {"device": [], "cold": [], "real": []} for r in runtimes}
    torch_runs: list[dict[str, Any]] = []
    for _ in range(runs):
        for runtime in runtimes:
            kinds[runtime]["device"].append(run_child(mode[runtime], warm_up=True, python=python[runtime]))
            if cold:
                kinds[runtime]["cold"].append(run_child(mode[runtime], warm_up=False, python=python[runtime]))
            if real is not None:
                kinds[runtime]["real"].append(run_real_device(**real, runtime=runtime, python=python[runtime]))
        if floor:
            torch_runs.append(run_child("torch"))
    summaries = {
        runtime: summarise(runs_of["device"], runs_of["cold"], torch_runs, runs_of["real"])
        for runtime, runs_of in kinds.items()
    }
    first = runtimes[0]
    report: dict[str, Any] = {
        "what": "one `fedchain device` process up to ready (imports, dataset, partition, model, warm-up), demo task; "
        "runtime torch and runtime light (numpy only) side by side",
        "runs": runs,
        "summary": summaries[first],
        "runtimes": summaries,
        "environment": _environment(),
        # The first runtime's runs under the historical names; every runtime's under its own.
        "device_runs": kinds[first]["device"],
        "without_warm_up_runs": kinds[first]["cold"],
        "import_torch_runs": torch_runs,
        "real_device_runs": kinds[first]["real"],
        "runs_by_runtime": kinds,
        "light_python": light_python,
    }
    if "light" in summaries and "torch" in summaries:
        report["light_vs_torch"] = light_vs_torch(summaries["light"], summaries["torch"])
    return report


def _environment() -> dict[str, Any]:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": version("torch"),
        "numpy": version("numpy"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedchain bench device", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="Runs of each kind; medians are reported.")
    parser.add_argument("--out", type=Path, default=Path("reports/device.json"), help="Where the report goes.")
    parser.add_argument("--no-cold", action="store_true", help="Skip the runs without warm-up.")
    parser.add_argument("--no-floor", action="store_true", help="Skip the `import torch` floor.")
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON on stdout.")
    parser.add_argument(
        "--runtime",
        choices=("both", *RUNTIMES),
        default="both",
        help="Which device runtime to measure: torch, light (numpy only) or both side by side (the default).",
    )
    parser.add_argument("--task", help="Also time real `fedchain device` starts for this task (a running devnet).")
    parser.add_argument("--account", type=int, default=2, help="The real device's devnet account (approved).")
    parser.add_argument("--partition", default="0/5", help="The real device's partition.")
    parser.add_argument("--state-file", type=Path, default=Path(".fedchain/devnet.json"), help="The devnet's state.")
    parser.add_argument(
        "--light-python",
        default=sys.executable,
        help="The interpreter of the light runs, e.g. a venv with only requirements-light.txt (no torch).",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    real = None
    if args.task:
        scratch = args.out.parent
        real = {
            "task": args.task,
            "account": args.account,
            "partition": args.partition,
            "state_file": args.state_file,
            "scratch": scratch,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runtimes = RUNTIMES if args.runtime == "both" else (args.runtime,)
    report = measure(
        args.runs,
        cold=not args.no_cold,
        floor=not args.no_floor,
        real=real,
        runtimes=runtimes,
        light_python=args.light_python,
    )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report["summary"] if len(runtimes) == 1 else _both(report)))
        return 0
    for runtime, summary in report["runtimes"].items():
        mem = summary["after_two_rounds"]
        print(
            f"{runtime} device ready in {summary['ready_seconds']:.2f} s ({summary['ready_cpu_seconds']:.2f} s of CPU; "
            f"target {TARGET_READY_SECONDS} s); "
            f"USS {mem['uss_mib']:.0f} MiB (target {TARGET_USS_MIB:.0f}), RSS {mem['rss_mib']:.0f} MiB, "
            f"private dirty {mem['private_dirty_mib']:.0f} MiB; "
            f"round 1 {summary['round1_train_seconds'] * 1e3:.1f} ms, "
            f"round 2 {summary['round2_train_seconds'] * 1e3:.1f} ms; heavy modules: "
            f"{', '.join(summary['heavy_modules']) or 'none'}"
            + (
                f"; real device ready in {summary['real_device']['ready_seconds']:.2f} s, "
                f"USS {summary['real_device']['uss_mib']:.0f} MiB"
                if "real_device" in summary
                else ""
            )
            + f" -> {args.out}",
            file=sys.stderr,
        )
    if "light_vs_torch" in report:
        print(f"light / torch: {json.dumps(report['light_vs_torch'])}", file=sys.stderr)
    return 0


def _both(report: dict[str, Any]) -> dict[str, Any]:
    return {**report["summary"], "runtimes": report["runtimes"], "light_vs_torch": report.get("light_vs_torch")}


if __name__ == "__main__":
    raise SystemExit(main())
