"""`fedchain bench market`: what a consortium of worker machines buys, written to reports/market.json.

    python -m fedchain.bench.market [--out reports/market.json] [--workers 2 4] [--quick]

For each worker count, a whole market run with honest workers (`market-demo`: devnet, job posted, one process per
worker, a coordinator) against training the same plan in one process: wall time of the job, the speed-up over the
single process, gas per unit, and whether the final model matches (bit for bit, hence the same accuracy).

Every unit is computed twice (verification by replication), so N workers do at most N/2 units' worth of useful work
at once: one worker cannot run a job at all, two are no faster than one process, and the ideal speed-up with N
workers is N/2, bounded by the machine's cores when the workers share one machine (as here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedchain.app.market_demo import MarketDemoOptions, run_market_demo
from fedchain.learning.units import evaluate_plan_model, train_single_process


def single_process(options: MarketDemoOptions) -> dict[str, Any]:
    """The demo's plan trained sequentially in this process: seconds and accuracy."""
    plan = options.plan()
    started = time.perf_counter()
    weights, _ = train_single_process(plan)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "accuracy": evaluate_plan_model(plan, weights).accuracy}


def run(worker_counts: Sequence[int], quick: bool = False, workdir: Path = Path(".fedchain/bench-market")) -> dict:
    base = MarketDemoOptions(workers=2, cheaters=0, workdir=workdir)
    if quick:
        base = replace(base, num_stages=1, units_per_stage=2, steps_per_unit=20)
    reference = single_process(base)
    rows = []
    for n in worker_counts:
        options = replace(base, workers=n, workdir=workdir / f"workers-{n}")
        summary = run_market_demo(options)
        rows.append(
            {
                "workers": n,
                "job_seconds": summary["job_seconds"],
                "wall_seconds": summary["wall_seconds"],
                "speedup_vs_single_process": round(reference["seconds"] / summary["job_seconds"], 3),
                "gas_per_unit": summary["gas_per_unit"],
                "final_accuracy": summary["final_accuracy"],
                "final_digest": summary["final_digest"],
                "bit_identical_to_single_process": summary["bit_identical"],
            }
        )
    digests = {row["final_digest"] for row in rows}
    return {
        "benchmark": "fedchain bench market",
        "plan": {
            "num_stages": base.num_stages,
            "units_per_stage": base.units_per_stage,
            "steps_per_unit": base.steps_per_unit,
        },
        "single_process": reference,
        "market": rows,
        "same_final_model_for_every_worker_count": len(digests) == 1,
        "accuracy_gap_points": max(abs(row["final_accuracy"] - reference["accuracy"]) * 100 for row in rows),
        "note": __doc__.strip().split("\n\n")[-1].replace("\n", " "),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/market.json"))
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--quick", action="store_true", help="a one-stage, two-unit plan")
    args = parser.parse_args(argv)
    result = run(args.workers, quick=args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
