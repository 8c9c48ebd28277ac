"""`fedchain bench flower`: the demo's task trained in Flower and in fedchain, side by side -> reports/flower.json.

    python -m fedchain.bench.flower [--devices 10,100,1000] [--rounds 3] [--chain anvil] [--out reports/flower.json]

For each device count, in one run: Flower's own simulation (Ray backend, loopback only; `fedchain.bench.flower_app`
in the Python that has flwr[simulation]==1.41.0) and `fedchain demo --json` (devnet, contracts, IPFS, devices,
aggregator), each as a subprocess whose whole process tree's memory is sampled every 0.2 s. Both train exactly the
demo's task (same partitions, online stream, per-round seeds, initial model, and fedchain's FedAvg in the
aggregator's order as Flower's aggregate_fit), so their accuracies after every round must be bit-identical; an
in-process simulation without any framework is the third witness. Reported per side: startup (process start to
round 1's start), round 1, every round's seconds with the median and p90 of the later rounds, peak memory, and the
ratios fedchain / Flower, next to the targets (later rounds <= 1.5x Flower at 10 devices and <= 2x at 100 and 1,000,
round 1 <= 3 s at 10 devices, startup <= Flower's, peak memory at 1,000 devices <= 8 GB). A side that fails is
recorded with its error and the run goes on.

Flower is the `bench` extra of the project's own environment (`pip install -e '.[bench]'`, part of `make setup`):
flwr[simulation]==1.41.0 beside the same torch, numpy, scikit-learn and Ray (2.55.1, flwr's pin) as fedchain. The
Flower side runs in this interpreter (as a subprocess, so its memory is measured alone), or in --flower-python.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from fedchain.bench.flower_app import FlowerTask, simulate_reference
from fedchain.bench.flower_report import TARGETS, build_row, format_table
from fedchain.bench.process_meter import SAMPLE_INTERVAL, run_measured
from fedchain.learning.data import device_partition, load_dataset

# What `fedchain demo` prints on stderr the moment round 1 opens.
ROUND1_OPEN_MARKER = "round 1 is open"


# ---------------------------------------------------------------------------------------------------------------
# The two sides.


def device_addresses(count: int) -> list[str]:
    """The devnet accounts `fedchain demo` gives devices 0..count-1 (accounts FIRST_DEVICE_INDEX onwards)."""
    from fedchain.app.demo import FIRST_DEVICE_INDEX
    from fedchain.chain import accounts

    return accounts.devnet_addresses(FIRST_DEVICE_INDEX + count)[FIRST_DEVICE_INDEX:]


def demo_task(
    devices: int,
    rounds: int,
    addresses: Sequence[str] | None = None,
    num_cpus: int | None = None,
    scratch: Path = Path(".fedchain/bench-flower"),
) -> FlowerTask:
    """The task `fedchain demo --devices N --rounds R` trains, with its defaults (spec, data split, stream)."""
    from fedchain.app.demo import DemoOptions
    from fedchain.device.runner import DeviceSettings

    options = DemoOptions(devices=devices, rounds=rounds)
    device = {f.name: f.default for f in fields(DeviceSettings) if f.name != "task_address"}
    train, _ = load_dataset(options.spec.dataset)
    # Fails early (ValueError) where the dataset cannot be split so many ways, as every device would.
    device_partition(train, 0, devices, options.non_iid, device["data_seed"])
    return FlowerTask(
        spec=options.spec,
        devices=devices,
        rounds=rounds,
        addresses=tuple(addresses if addresses is not None else device_addresses(devices)),
        non_iid_alpha=options.non_iid,
        data_seed=device["data_seed"],
        online=options.online,
        initial_fraction=device["initial_fraction"],
        per_round_fraction=device["per_round_fraction"],
        num_cpus=num_cpus or os.cpu_count() or 2,
        scratch=str(scratch),
    )


def clients_dir() -> Path:
    """The folder holding the fedchain package (put on PYTHONPATH for a Python that has not installed it)."""
    import fedchain

    return Path(fedchain.__file__).resolve().parent.parent


def find_flower_python(explicit: str | None = None) -> str | None:
    """The Python that runs the Flower side: --flower-python if given, else this one if it has flwr (the `bench`
    extra); None if neither."""
    import importlib.util

    if explicit:
        return explicit
    return sys.executable if importlib.util.find_spec("flwr") is not None else None


def flower_env(scratch: Path) -> dict[str, str]:
    from fedchain.bench.flower_app import LOOPBACK_ENV

    env = dict(os.environ)
    env.update(LOOPBACK_ENV)
    env["FLWR_HOME"] = str((scratch / "flwr-home").resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(clients_dir()), env.get("PYTHONPATH", "")) if p)
    return env


def run_flower_side(
    task: FlowerTask, python: str | None, workdir: Path, timeout: float, reference: bool = False
) -> dict[str, Any]:
    """Flower's simulation of `task` in its own process (tree), measured; {"error": ...} if it failed."""
    if python is None:
        return {
            "error": "Flower is not installed: `pip install -e '.[bench]'` (flwr[simulation]==1.41.0; `make setup` "
            "does it) or pass --flower-python, a Python with flwr and fedchain's dependencies"
        }
    workdir.mkdir(parents=True, exist_ok=True)
    task_file, out = workdir / "task.json", workdir / "result.json"
    task_file.write_text(json.dumps(task.to_dict()))
    out.unlink(missing_ok=True)
    cmd = [python, "-m", "fedchain.bench.flower_app", "--task", str(task_file), "--out", str(out)]
    cmd += ["--launched-at", repr(time.time())]
    if reference:
        cmd.append("--reference")
    code, _, wall, memory, _ = run_measured(
        cmd, flower_env(Path(task.scratch)), workdir / "stdout.log", workdir / "stderr.log", timeout
    )
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if code is None:
        result["error"] = f"timed out after {timeout:.0f}s (logs in {workdir})"
    elif code != 0 and "error" not in result:
        result["error"] = f"exited with code {code}: {_tail(workdir / 'stderr.log')}"
    result.pop("traceback", None)
    result.update(memory=memory, wall_seconds=round(wall, 3), logs=str(workdir))
    return result


def run_fedchain_side(
    devices: int, rounds: int, chain: str, workdir: Path, timeout: float, extra_args: Sequence[str] = ()
) -> dict[str, Any]:
    """`fedchain demo --json` in its own process (tree), measured; its summary plus memory, or {"error": ...}."""
    cmd = [sys.executable, "-m", "fedchain.cli", "demo", "--devices", str(devices), "--rounds", str(rounds)]
    cmd += ["--chain", chain, "--json", "--workdir", str(workdir / "demo"), "--timeout", str(timeout), *extra_args]
    stdout, stderr = workdir / "stdout.log", workdir / "stderr.log"
    # A fresh demo folder: files left by an earlier run (its ready markers) must not count for this one.
    shutil.rmtree(workdir / "demo", ignore_errors=True)
    code, _, wall, memory, opened = run_measured(
        cmd, dict(os.environ), stdout, stderr, timeout + 60, stderr_marker=ROUND1_OPEN_MARKER
    )
    summary: dict[str, Any] = {}
    lines = [line for line in stdout.read_text(errors="replace").splitlines() if line.strip()]
    if lines:
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(lines[-1])
            summary = parsed if isinstance(parsed, dict) else {}
    if code is None:
        summary["error"] = f"timed out after {timeout + 60:.0f}s (logs in {workdir})"
    elif code != 0 or not summary:
        summary["error"] = f"exited with code {code}: {_tail(stderr)}"
    # The demo's own startup_seconds counts from run_demo's start (after the CLI's imports); from launch, as Flower's
    # is counted, is when its "round 1 is open" line appeared.
    summary["startup_in_process_seconds"] = summary.get("startup_seconds")
    summary["startup_seconds"] = opened
    summary.update(memory=memory, wall_seconds=round(wall, 3), logs=str(workdir), command=" ".join(cmd[1:]))
    return summary


def _tail(path: Path, chars: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------------------------


def run(
    device_counts: Sequence[int],
    rounds: int,
    chain: str = "anvil",
    workdir: Path = Path(".fedchain/bench-flower"),
    flower_python: str | None = None,
    num_cpus: int | None = None,
    timeout: float = 1800.0,
    skip_fedchain: bool = False,
    skip_flower: bool = False,
    reference_max_devices: int = 1000,
    demo_args: Sequence[str] = (),
    addresses: Callable[[int], Sequence[str]] = device_addresses,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    python = None if skip_flower else find_flower_python(flower_python)
    rows = []
    for n in device_counts:
        task: FlowerTask | None = None
        try:
            task = demo_task(n, rounds, addresses(n), num_cpus=num_cpus, scratch=workdir)
        except Exception as exc:  # e.g. the dataset cannot be split so many ways: record, carry on
            log(f"{n} devices: cannot build the task: {exc}")
        flower: dict[str, Any] | None = None
        if not skip_flower:
            log(f"{n} devices: Flower ...")
            flower = (
                run_flower_side(task, python, workdir / f"flower-{n}", timeout)
                if task is not None
                else {"error": "the task could not be built (see the log)"}
            )
        reference = None
        if task is not None and n <= reference_max_devices:
            try:
                reference = simulate_reference(task)
            except Exception as exc:
                log(f"{n} devices: reference simulation failed: {exc}")
        fedchain: dict[str, Any] | None = None
        if not skip_fedchain:
            log(f"{n} devices: fedchain demo ...")
            fedchain = run_fedchain_side(n, rounds, chain, workdir / f"fedchain-{n}", timeout, demo_args)
        row = build_row(n, rounds, flower, fedchain, reference)
        row["flower"]["memory"] = (flower or {}).get("memory")
        row["fedchain"]["memory"] = (fedchain or {}).get("memory")
        row["flower"]["detail"] = _detail(
            flower, ("import_seconds", "ray_init_seconds", "num_cpus", "wall_seconds", "updates_per_round", "logs")
        )
        row["fedchain"]["detail"] = _detail(
            fedchain,
            (
                "virtual",
                "pools",
                "processes",
                "total_seconds",
                "wall_seconds",
                "updates_per_round",
                "startup_in_process_seconds",
                "startup_phases",
                "logs",
            ),
        )
        rows.append(row)
    return {
        "benchmark": "fedchain bench flower",
        "device_counts": list(device_counts),
        "rounds": rounds,
        "chain": chain,
        "flower_python": python,
        "targets": TARGETS,
        "runs": rows,
        "method": (
            "Each side runs as a subprocess. startup: process start to round 1's start (Flower: configure_fit of "
            "round 1; fedchain: when the demo printed 'round 1 is open', watched every 50 ms). "
            "startup_in_process: Flower from just before importing flwr and ray, fedchain the demo's own figure "
            "(from run_demo's start), and in detail.startup_phases the seconds from that start at which each step "
            "ended (devnet_up, initial_model, deployed, forked, ready) and the deployment's own steps (deploy.*). "
            "Round seconds: Flower from "
            "configure_fit to aggregate_fit's return (centralised evaluation excluded); fedchain: RoundOpened to "
            "AggregateCommitted as the demo reports. Later rounds: rounds 2..R. Peak memory: the whole process "
            f"tree sampled every {SAMPLE_INTERVAL} s (metric says USS or RSS)."
        ),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
    }


def _detail(side: dict[str, Any] | None, keys: Sequence[str]) -> dict[str, Any]:
    return {k: side.get(k) for k in keys if side and k in side}


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated device counts, got {text!r}") from None
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"device counts must be positive, got {text!r}")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=parse_counts, default=[10, 100, 1000], help="e.g. 10,100,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chain", default="anvil")
    parser.add_argument("--out", type=Path, default=Path("reports/flower.json"))
    parser.add_argument("--workdir", type=Path, default=Path(".fedchain/bench-flower"))
    parser.add_argument("--flower-python", default=None, help="Python with flwr[simulation]==1.41.0")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs Ray may use for Flower (default: all)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per side and device count")
    parser.add_argument("--skip-fedchain", action="store_true", help="run only the Flower side")
    parser.add_argument("--skip-flower", action="store_true", help="run only the fedchain side")
    parser.add_argument(
        "--demo-arg", action="append", default=[], help="extra argument for `fedchain demo` (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print the report on stdout")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    import torch

    torch.set_num_threads(1)  # the in-process reference trains as a device does: one thread
    report = run(
        args.devices,
        args.rounds,
        chain=args.chain,
        workdir=args.workdir,
        flower_python=args.flower_python,
        num_cpus=args.cpus,
        timeout=args.timeout,
        skip_fedchain=args.skip_fedchain,
        skip_flower=args.skip_flower,
        demo_args=args.demo_arg,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report), file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
