"""The aggregator dies mid-round (before and after its commit) and a restarted one finishes without double commits
and, for a stateful strategy, with its server state intact."""

from __future__ import annotations

import re

import numpy as np
import pytest
from e2e_helpers import Cli, committed_rounds, report_of, task_spec, wait_for_phase

from fedchain.chain import EventFollower, Phase, TaskClient, connect
from fedchain.learning.aggregation import ServerState, Update, build_strategy
from fedchain.storage import IpfsClient, compute_cid, digest_to_cid, encode_weights

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


def test_stateful_strategy_keeps_its_server_state_across_a_restart(cli: Cli) -> None:
    """FedAvgM's momentum lives on IPFS, referenced by each finalised report: a restarted aggregator picks it up,
    and an independent recomputation in this process reproduces every round's model CID bit for bit."""
    deployed = cli.deploy("--rounds", str(ROUNDS), "--devices", "2", "--strategy", "fedavgm")
    task = deployed["task"]
    devices = [
        cli.spawn(f"device-{i}", "device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/2")
        for i in range(2)
    ]
    agg_args = ("aggregator", "--task", task, "--account", "1")
    first = cli.spawn("aggregator-1", *agg_args, env={"FEDCHAIN_AGGREGATOR_CRASH": "after-commit:2"})
    assert first.wait(timeout=240) == CRASHED
    second = cli.spawn("aggregator-2", *agg_args)
    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=240, procs=[second, *devices])

    client = TaskClient(connect(cli.state.rpc_url), task)
    events = EventFollower(client.w3, task, client.abi)
    finals = committed_rounds(cli.state.rpc_url, task)
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        strategy = build_strategy(spec.strategy_spec())
        model_cid = deployed["initial_model_cid"]
        state = ServerState()
        for r in range(1, ROUNDS + 1):
            updates = [
                Update(
                    e.args["device"],
                    ipfs.get_weights(digest_to_cid(bytes(e.args["updateDigest"]))),
                    e.args["numSamples"],
                )
                for e in events.history("UpdateSubmitted", round=r)
            ]
            result = strategy.aggregate(ipfs.get_weights(model_cid), updates, state)
            meta = {"fedchain.kind": "global-model", "fedchain.round": str(r), "fedchain.task": client.address}
            model_cid = compute_cid(encode_weights(result.weights, meta))
            assert digest_to_cid(bytes(finals[r][0]["modelDigest"])) == model_cid, r
            report = report_of(ipfs, finals[r][0])
            assert report["strategy"] == "fedavgm" and report["server_state_cid"]
            stored = ServerState.from_tensors(ipfs.get_weights(report["server_state_cid"]))
            assert stored.tensors.keys() == result.state.tensors.keys()
            assert all(np.array_equal(stored.tensors[k], result.state.tensors[k]) for k in stored.tensors)
            state = stored
