"""`make bench`: gas per function and seconds per round (and the part outside training) for 5, 10 and 20
devices on Ganache and Anvil, written to reports/bench.json.

Each configuration is a real demo run: separate device processes, the aggregator process, Kubo, the chain.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fedchain.app.demo import DemoOptions, run_demo


def bench_run(devices: int, chain: str, rounds: int, workdir: Path, console: Console) -> dict[str, Any]:
    summary = run_demo(
        DemoOptions(devices=devices, rounds=rounds, chain=chain, workdir=workdir), console=console, live=False
    )
    # Round 1 includes the devices' start-up (PyTorch import, first fetch); report steady state separately.
    steady = summary["round_seconds"][1:] or summary["round_seconds"]
    overhead = summary["overhead_seconds_per_round"][1:] or summary["overhead_seconds_per_round"]
    mean_round = statistics.fmean(steady)
    mean_overhead = statistics.fmean(overhead)
    return {
        "devices": devices,
        "chain": chain,
        "rounds": rounds,
        "gas": summary["gas"],
        "round_seconds": summary["round_seconds"],
        "mean_round_seconds_after_first": round(mean_round, 3),
        "mean_seconds_outside_training_after_first": round(mean_overhead, 3),
        "share_outside_training": round(mean_overhead / mean_round, 3) if mean_round else None,
        "final_accuracy": summary["final_accuracy"],
        "centralized_accuracy": summary["centralized_accuracy"],
        "total_seconds": summary["total_seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    parser.add_argument("--devices", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--chains", nargs="+", default=["ganache", "anvil"])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="fedchain-bench-") as tmp:
        for chain in args.chains:
            for devices in args.devices:
                console.print(f"[bold]bench[/]: {devices} devices on {chain}, {args.rounds} rounds")
                started = time.perf_counter()
                runs.append(bench_run(devices, chain, args.rounds, Path(tmp) / f"{chain}-{devices}", console))
                console.print(f"  done in {time.perf_counter() - started:.1f}s: {json.dumps(runs[-1]['gas'])}")
    report = {
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
