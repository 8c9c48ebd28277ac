"""The aggregator dies mid-round (before and after its commit) and a restarted one finishes without double commits."""

from __future__ import annotations

import re

import pytest
from e2e_helpers import Cli, committed_rounds, wait_for_phase

from fedchain.chain import Phase
from fedchain.storage import digest_to_cid

pytestmark = pytest.mark.e2e

ROUNDS = 4
DEVICES = 3
CRASHED = 86  # exit code of the aggregator's fault injection


def test_aggregator_killed_mid_round_restarts_without_double_commit(cli: Cli) -> None:
    task = cli.deploy("--rounds", str(ROUNDS), "--devices", str(DEVICES))["task"]
    devices = [
        cli.spawn(f"device-{i}", "device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/{DEVICES}")
        for i in range(DEVICES)
    ]
    agg_args = ("aggregator", "--task", task, "--account", "1")

    # 1st life: dies after preparing round 2's model, before committing it.
    first = cli.spawn("aggregator-1", *agg_args, env={"FEDCHAIN_AGGREGATOR_CRASH": "before-commit:2"})
    assert first.wait(timeout=240) == CRASHED
    prepared = re.search(r"round 2: prepared model (\w+)", cli.log_text("aggregator-1"))
    assert prepared, cli.log_text("aggregator-1")[-2000:]
    assert 2 not in committed_rounds(cli.state.rpc_url, task)

    # 2nd life: commits round 2, then dies right after committing round 3.
    second = cli.spawn("aggregator-2", *agg_args, env={"FEDCHAIN_AGGREGATOR_CRASH": "after-commit:3"})
    assert second.wait(timeout=240) == CRASHED

    # 3rd life: finds round 3 already committed and carries on to the end.
    third = cli.spawn("aggregator-3", *agg_args)
    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=240, procs=[third, *devices])
    assert third.wait(timeout=60) == 0

    commits = committed_rounds(cli.state.rpc_url, task)
    assert sorted(commits) == list(range(1, ROUNDS + 1))
    assert all(len(c) == 1 for c in commits.values()), {r: len(c) for r, c in commits.items()}
    # Deterministic aggregation: the restarted aggregator committed exactly the model the dead one had prepared.
    assert digest_to_cid(bytes(commits[2][0]["modelDigest"])) == prepared.group(1)
