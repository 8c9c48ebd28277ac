"""`fedchain demo --json` on Anvil: the command a newcomer runs, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_on_anvil_prints_a_complete_summary(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedchain.cli",
            "demo",
            "--devices",
            "3",
            "--rounds",
            "3",
            "--chain",
            "anvil",
            "--json",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "rounds",
        "devices",
        "chain",
        "final_accuracy",
        "centralized_accuracy",
        "accuracy_per_round",
        "round_seconds",
        "gas",
        "final_model_cid",
    ):
        assert key in summary, key
    assert summary["chain"] == "anvil" and summary["rounds"] == 3 and summary["devices"] == 3
    assert len(summary["accuracy_per_round"]) == 3 and len(summary["round_seconds"]) == 3
    assert summary["final_accuracy"] >= 0.90
    assert summary["final_model_cid"].startswith("Qm")
    assert 0 < summary["gas"]["submitUpdate"] <= 60_000
    # One aggregator (k = n = 1): each round is finalised by one submitResult, without commit and reveal.
    assert {"submitResult", "approveDevices", "start", "deploy"} <= set(summary["gas"])
    assert not {"commitResult", "revealResult"} & set(summary["gas"])
    assert summary["strategy"] == {"name": "fedavg", "params": {}}
    assert summary["aggregator_threshold"] == 1 and summary["failed_rounds"] == 0
    assert [a["faults"] for a in summary["aggregators"]] == [0]
