"""`fedchain market-demo --json`: a job on the compute market with three worker processes, one of them cheating.

The job finishes, the cheater is slashed (its results disagree with the honest replicas'; the arbiter of each
dispute is drawn by the market, and with one cheater among three workers the only eligible one is the other honest
worker), the honest workers are paid and withdraw, and the final model is bit for bit the one the same plan gives
when trained in one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIN_STAKE = 10**18
WORKER_STAKE = 3 * MIN_STAKE  # the demo's default: minStake per open claim (issue 13)
PRICE = 10**15


def test_market_job_with_a_cheater_finishes_bit_identical(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedchain.cli",
            "market-demo",
            *("--workers", "3", "--cheaters", "1"),
            *("--stages", "2", "--units-per-stage", "3", "--steps-per-unit", "100"),
            *("--timeout", "300", "--json", "--workdir", str(tmp_path / "market")),
        ],
        capture_output=True,
        text=True,
        timeout=420,
        stdin=subprocess.DEVNULL,
    )
    logs = tmp_path / "market" / "logs"
    tails = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(logs.glob("*.log")))
    assert proc.returncode == 0, proc.stderr[-3000:] + tails
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    assert summary["units"] == 6 and len(summary["stage_checkpoints"]) == 2
    assert summary["final_model_cid"] == summary["stage_checkpoints"][-1]
    # the cheater: slashed at least once, its stake reduced, never paid for a unit
    cheaters = [w for w in summary["workers"] if w["cheater"]]
    honest = [w for w in summary["workers"] if not w["cheater"]]
    assert len(cheaters) == 1 and len(honest) == 2
    cheater = cheaters[0]
    assert summary["faults"] >= 1 and cheater["faults"] >= 1
    assert cheater["stake"] < WORKER_STAKE and cheater["slashed"] > 0
    assert cheater["paid"] == 0 and cheater["completed_units"] == 0
    # the honest workers: paid for every unit (each unit has two honest results, as replicas or arbiter) and for
    # arbitrating, and they withdrew it all
    for w in honest:
        assert w["faults"] == 0 and w["stake"] == WORKER_STAKE and w["forfeited"] == 0
        assert w["completed_units"] == 6 and w["paid"] == 6 * PRICE
        assert w["withdrawn"] == w["paid"] + w["slash_rewards"] + w["forfeit_rewards"] > 0
    assert sum(w["slash_rewards"] for w in honest) == cheater["slashed"]
    assert summary["market_totals_conserved"]
    # the market's model is the single-process model, bit for bit
    assert summary["bit_identical"] is True
    assert summary["final_digest"] == summary["single_machine_digest"]
    assert summary["final_accuracy"] == summary["single_machine_accuracy"] >= 0.75
    # gas: per-unit calls stay within the binding's limits
    assert summary["gas_max"]["claimUnit"] <= 100_000
    assert summary["gas_max"]["commitResult"] <= 100_000
    assert summary["gas_max"]["publishResult"] <= 200_000
    assert summary["gas_max"]["submitArbitration"] <= 200_000
    # sealed results: every disputed unit was settled by a drawn arbiter, and only agreed or arbitrated digests were
    # ever published (the cheater's never was)
    assert summary["arbitrations"] == summary["disputes"] == summary["arbiters_drawn"] >= 1
    assert summary["disputes_expired"] == 0
    assert summary["results_published"] + summary["arbitrations"] == summary["units"] + summary["resets"]
    revealing = summary["results_published"] + summary["disputes"] + summary["reveal_windows_expired"]
    assert summary["results_committed"] == 2 * revealing
    assert summary["gas_max"]["commitCheckpoint"] <= 100_000


def test_market_lazy_copier_is_never_paid(tmp_path: Path) -> None:
    """A worker that copies the other replica's commitment instead of computing cannot open it: the reveal window
    passes, the unit restarts without it, and the job still finishes with the single-process model."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedchain.cli",
            "market-demo",
            *("--workers", "3", "--cheaters", "0", "--lazy", "1", "--claim-duration", "25"),
            *("--stages", "2", "--units-per-stage", "2", "--steps-per-unit", "60"),
            *("--timeout", "300", "--json", "--workdir", str(tmp_path / "market")),
        ],
        capture_output=True,
        text=True,
        timeout=420,
        stdin=subprocess.DEVNULL,
    )
    logs = tmp_path / "market" / "logs"
    tails = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(logs.glob("*.log")))
    assert proc.returncode == 0, proc.stderr[-3000:] + tails
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    lazy = [w for w in summary["workers"] if w["lazy"]]
    honest = [w for w in summary["workers"] if not w["lazy"]]
    assert len(lazy) == 1 and len(honest) == 2
    # the copier held replica slots, copied commitments, and every such unit had to wait out its reveal window
    assert summary["reveal_windows_expired"] >= 1, tails
    assert lazy[0]["paid"] == 0 and lazy[0]["completed_units"] == 0
    # it never revealed: excluded from the unit and, since issue 13 (M2), a forfeit of slashAmount each time,
    # credited to the honest replica it kept waiting
    assert lazy[0]["faults"] >= 1 and lazy[0]["forfeited"] > 0
    assert lazy[0]["stake"] == WORKER_STAKE - lazy[0]["forfeited"]
    assert sum(w["forfeit_rewards"] for w in honest) == lazy[0]["forfeited"]
    for w in honest:
        assert w["completed_units"] == 4 and w["paid"] == 4 * PRICE and w["faults"] == 0
    assert summary["disputes"] == 0 and summary["faults"] == 0
    assert summary["market_totals_conserved"]
    assert summary["bit_identical"] is True
