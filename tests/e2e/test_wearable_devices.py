"""A wearable task on a real devnet: streaming devices (recordings replayed at 1,000x real time into a bounded buffer,
a faulty sensor's windows refused in the device's log: NaN samples on both, also cut-short and wrongly sampled
windows on the second, whose watch is moved halfway) train the 6-channel 1-D CNN with an aggregator."""

from __future__ import annotations

import pytest
from e2e_helpers import Cli, committed_rounds, evaluate_cid, task_spec, wait_for_phase

from fedchain.chain import Phase
from fedchain.storage import IpfsClient, digest_to_cid

pytestmark = pytest.mark.e2e

ROUNDS = 3
DEVICES = 2


def test_streaming_wearables_train_the_activity_task(cli: Cli) -> None:
    deployed = cli.deploy(
        "--dataset", "basic_motions", "--rounds", str(ROUNDS), "--devices", str(DEVICES), "--round-duration", "120"
    )
    task = deployed["task"]
    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")
    # 1,000x real time into a buffer that holds a device's whole share (~240 windows): by round 2 every device trains on
    # all its recordings, so the accuracy check does not depend on how fast a loaded machine runs the rounds (at 20x
    # with 120 windows, a CI run under load trained on a few seconds of signal and gained only 0.04).
    stream = ["--stream-buffer", "400", "--stream-speed", "1000", "--sensor-fault-rate", "0.2", "--verbose"]
    extra = {1: ["--sensor-faults", "nan,short,rate", "--drift-at", "0.5"]}
    devices = [
        cli.spawn(
            f"device-{i}",
            *("device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/{DEVICES}", *stream),
            *extra.get(i, []),
        )
        for i in range(DEVICES)
    ]
    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=300, procs=[aggregator, *devices])
    for proc in [aggregator, *devices]:
        assert proc.wait(timeout=60) == 0, f"{proc.args[3]} did not exit cleanly"
    commits = committed_rounds(cli.state.rpc_url, task)
    assert sorted(commits) == list(range(1, ROUNDS + 1))
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        assert spec.dataset.name == "basic_motions" and spec.model.channels == 6
        initial = evaluate_cid(ipfs, spec, deployed["initial_model_cid"])
        (last,) = commits[ROUNDS]
        final = evaluate_cid(ipfs, spec, digest_to_cid(bytes(last["modelDigest"])))
    assert final > initial + 0.2, (initial, final)
    for i in range(DEVICES):
        log = cli.log_text(f"device-{i}")
        assert "streaming" in log and "window refused (not_finite)" in log, log[-2000:]
    moved = cli.log_text("device-1")
    for reason in ("wrong_length", "wrong_rate"):
        assert f"window refused ({reason})" in moved, (reason, moved[-2000:])
    assert "drift: the watch was moved" in moved, moved[-2000:]
