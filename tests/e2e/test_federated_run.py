"""A whole federated run on Ganache: 3 device processes, an aggregator process, 4 rounds, real Kubo and PyTorch."""

from __future__ import annotations

import pytest
from e2e_helpers import Cli, committed_rounds, evaluate_cid, report_of, task_spec, wait_for_phase

from fedchain.chain import Phase, TaskClient, connect
from fedchain.storage import IpfsClient, digest_to_cid

pytestmark = pytest.mark.e2e

ROUNDS = 4
DEVICES = 3


def test_devices_and_aggregator_train_to_high_accuracy(cli: Cli) -> None:
    deployed = cli.deploy("--rounds", str(ROUNDS), "--devices", str(DEVICES), "--round-duration", "120")
    task = deployed["task"]
    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")
    devices = [
        cli.spawn(f"device-{i}", "device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/{DEVICES}")
        for i in range(DEVICES)
    ]
    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=300, procs=[aggregator, *devices])
    for proc in [aggregator, *devices]:
        assert proc.wait(timeout=60) == 0, f"{proc.args[3]} did not exit cleanly"

    client = TaskClient(connect(cli.state.rpc_url), task)
    commits = committed_rounds(cli.state.rpc_url, task)
    assert sorted(commits) == list(range(1, ROUNDS + 1))
    assert all(len(c) == 1 for c in commits.values()), "a round was committed twice"

    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        initial = evaluate_cid(ipfs, spec, deployed["initial_model_cid"])
        accuracies = []
        for r in range(1, ROUNDS + 1):
            (args,) = commits[r]
            assert bytes(args["modelDigest"]) == client.round_model_digest(r)
            accuracies.append(evaluate_cid(ipfs, spec, digest_to_cid(bytes(args["modelDigest"]))))
            report = report_of(ipfs, args)
            assert report["round"] == r and report["inputs_hash"] == "0x" + bytes(args["inputsHash"]).hex()
            assert len(report["accepted"]) == DEVICES and report["rejected"] == []
            assert report["model_cid"] == digest_to_cid(bytes(args["modelDigest"]))
            assert report["metrics"]["accuracy"] == pytest.approx(accuracies[-1], abs=1e-6)
        final_cid = digest_to_cid(client.global_model_digest())
        assert final_cid in ipfs.pin_ls()

    assert accuracies[-1] >= 0.90, accuracies
    assert accuracies[-1] > initial + 0.2, (initial, accuracies)
    assert accuracies[-1] >= accuracies[0] - 0.01, accuracies
