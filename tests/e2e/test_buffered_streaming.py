"""Streaming wearables in the asynchronous buffered (FedBuff) mode on Ganache: three device processes replay their
smartwatch recordings into bounded window buffers and submit whenever they hold new windows; one subject moves the
watch halfway through (drift), every device's sensor hands over faulty windows (NaN samples, cut short, wrong
sampling rate) that the device refuses in its log; one aggregator publishes every version; real Kubo and PyTorch.

Pace: the recordings replay at 1,000x real time into buffers that hold a device's whole share (~160 windows), so a
device's data arrive within a second of its start and later trainings see all of it; the accuracy check does not
depend on how fast a loaded machine runs (the same choice as tests/e2e/test_wearable_devices.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e_helpers import Cli, evaluate_cid, wait_until_finished

from fedchain.chain import EventFollower, connect, devnet_account
from fedchain.chain.buffered import BufferedTaskClient
from fedchain.learning.data import Dataset
from fedchain.learning.drift import switch_placement
from fedchain.learning.model import build_model, set_weights
from fedchain.learning.spec import TaskSpec
from fedchain.learning.train import evaluate
from fedchain.learning.wearables import recording_windows, wearable_split, wearable_task
from fedchain.storage import IpfsClient, digest_to_cid
from fedchain.storage.codec import decode_weights

pytestmark = pytest.mark.e2e

VERSIONS = 20
K = 3
DEVICES = 3
DRIFTING = 2  # partition index of the subject who moves the watch
AGGREGATOR = 1


def switched_test_set(spec: TaskSpec) -> Dataset:
    """The held-out recordings as a watch in the drifted placement records them."""
    split = wearable_split(spec.dataset)
    task = wearable_task(spec.dataset.name)
    parts = [
        recording_windows(task, switch_placement(split.recordings.signals[i]), split.recordings.annotations[i])
        for i in split.test_recordings
    ]
    return Dataset(split.standardise(np.concatenate([w for w, _ in parts])), np.concatenate([y for _, y in parts]))


def accuracy_on(ipfs: IpfsClient, spec: TaskSpec, cid: str, data: Dataset) -> float:
    model = build_model(spec.model, seed=spec.seed)
    set_weights(model, {k: np.asarray(v) for k, v in decode_weights(ipfs.cat(cid)).items()})
    return evaluate(model, data).accuracy


def test_streaming_wearables_in_buffered_mode_with_drift_and_faulty_sensors(cli: Cli) -> None:
    deployed = cli.deploy(
        *("--mode", "buffered", "--dataset", "basic_motions", "--rounds", str(VERSIONS), "--devices", str(DEVICES)),
        *("--buffer-size", str(K), "--max-staleness", "8"),
        *("--aggregator-address", devnet_account(AGGREGATOR).address, "--threshold", "1"),
        *("--aggregation-duration", "120"),
    )
    task = deployed["task"]
    aggregator = cli.spawn(
        "aggregator", "aggregator", "--mode", "buffered", "--task", task, "--account", str(AGGREGATOR)
    )
    stream = ["--stream-buffer", "400", "--stream-speed", "1000", "--min-train-seconds", "2", "--verbose"]
    faults = ["--sensor-fault-rate", "0.15", "--sensor-faults", "nan,short,rate"]
    devices = []
    for i in range(DEVICES):
        drift = ["--drift-at", "0.5"] if i == DRIFTING else []
        devices.append(
            cli.spawn(
                f"device-{i}",
                *("device", "--mode", "buffered", "--task", task, "--account", str(2 + i)),
                *("--partition", f"{i}/{DEVICES}", *stream, *faults, *drift),
            )
        )
    wait_until_finished(cli.state.rpc_url, task, timeout=480, procs=[aggregator, *devices])
    for proc in [aggregator, *devices]:
        assert proc.wait(timeout=60) == 0, f"{proc.args[3:5]} did not exit cleanly"

    client = BufferedTaskClient(connect(cli.state.rpc_url), task)
    events = EventFollower(client.w3, task, client.contract.abi)
    versions = sorted(e.args["version"] for e in events.history("VersionPublished"))
    assert versions == list(range(1, VERSIONS + 1))
    # Every device contributed; the updates' numSamples are what the device's buffer held (faulty windows refused).
    entries = [e.args for e in events.history("UpdateBuffered")]
    by_device = {devnet_account(2 + i).address: [a for a in entries if a["device"] == devnet_account(2 + i).address]
                 for i in range(DEVICES)}  # fmt: skip
    assert all(by_device.values()), {d: len(a) for d, a in by_device.items()}
    for i in range(DEVICES):
        log = cli.log_text(f"device-{i}")
        assert "streaming" in log and "stream: {'held'" in log, log[-2000:]
        for reason in ("not_finite", "wrong_length", "wrong_rate"):
            assert f"window refused ({reason})" in log, (reason, log[-2000:])
        assert ("watch was moved" in log) == (i == DRIFTING)

    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = TaskSpec.from_json(ipfs.cat(digest_to_cid(client.config().model_spec_digest)))
        assert spec.dataset.name == "basic_motions"
        initial_cid = deployed["initial_model_cid"]
        final_cid = digest_to_cid(client.version_digest(VERSIONS))
        initial = evaluate_cid(ipfs, spec, initial_cid)
        final = evaluate_cid(ipfs, spec, final_cid)
        switched = switched_test_set(spec)
        initial_switched = accuracy_on(ipfs, spec, initial_cid, switched)
        final_switched = accuracy_on(ipfs, spec, final_cid, switched)
        published = {e.args["version"]: e.args for e in events.history("VersionPublished")}
        trace = [
            json.loads(ipfs.cat(digest_to_cid(bytes(published[v]["reportDigest"]))))["metrics"]["accuracy"]
            for v in range(1, VERSIONS + 1)
        ]
    print(f"held-out accuracy {initial:.3f} -> {final:.3f}; moved watch {initial_switched:.3f} -> {final_switched:.3f}")
    print("held-out accuracy by version:", trace)
    assert trace[-1] == pytest.approx(final, abs=1e-6)
    # The model reaches a clear bar; small buffers of non-IID devices make FedBuff's versions oscillate (measured:
    # 0.64-0.98 from one version to the next late in a run), so the final version gets a lower one.
    assert max(trace) >= 0.9, trace
    assert final >= 0.7 and final > initial + 0.3, (initial, final, trace)


def test_a_stateful_server_optimiser_carries_its_state_from_version_to_version(cli: Cli) -> None:
    """FedAvgM in a buffered task: one momentum step per version, the momentum stored on IPFS and named by every
    version's report, read back by the aggregator for the next buffer."""
    versions = 4
    deployed = cli.deploy(
        *("--mode", "buffered", "--strategy", "fedavgm", "--rounds", str(versions), "--devices", "2"),
        *("--buffer-size", "2", "--aggregator-address", devnet_account(AGGREGATOR).address, "--threshold", "1"),
    )
    task = deployed["task"]
    aggregator = cli.spawn(
        "aggregator-fedavgm", "aggregator", "--mode", "buffered", "--task", task, "--account", str(AGGREGATOR)
    )
    devices = [
        cli.spawn(
            f"device-fedavgm-{i}",
            *("device", "--mode", "buffered", "--task", task, "--account", str(2 + i), "--partition", f"{i}/2"),
        )
        for i in range(2)
    ]
    wait_until_finished(cli.state.rpc_url, task, timeout=300, procs=[aggregator, *devices])
    for proc in [aggregator, *devices]:
        assert proc.wait(timeout=60) == 0, f"{proc.args[3:5]} did not exit cleanly"
    client = BufferedTaskClient(connect(cli.state.rpc_url), task)
    events = EventFollower(client.w3, task, client.contract.abi)
    published = {e.args["version"]: e.args for e in events.history("VersionPublished")}
    assert sorted(published) == list(range(1, versions + 1))
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        reports = {v: json.loads(ipfs.cat(digest_to_cid(bytes(args["reportDigest"])))) for v, args in published.items()}
        states = [reports[v]["server_state_cid"] for v in range(1, versions + 1)]
        assert all(states) and len(set(states)) == versions, states  # a new momentum after every version
        momentum = decode_weights(ipfs.cat(states[-1]))
        assert momentum and all(name.startswith("momentum/") for name in momentum), sorted(momentum)
    assert all(r["strategy"] == "fedavgm" for r in reports.values())
    # Each buffer after the first stepped from the momentum the previous version's report names.
    log = cli.log_text("aggregator-fedavgm")
    for v in range(1, versions):
        assert f"server state {states[v - 1]} (from version {v}'s report)" in log, (v, log[-3000:])
    assert reports[versions]["metrics"]["accuracy"] > 0.8, reports[versions]["metrics"]
