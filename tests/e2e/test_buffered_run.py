"""An asynchronous buffered (FedBuff) run on Ganache: five device processes, one five times slower and one that falls
asleep holding its update, two aggregator processes agreeing 2-of-2 on every version; real Kubo and PyTorch.

Nothing waits for the slowest device: the fast ones fill the buffers, the slow one's updates land with staleness > 0
and still count (weighted down), and the sleeper's update, too stale when it wakes, is refused by the chain; the
device logs it, retrains from the latest version and the run goes on to the last version.
"""

from __future__ import annotations

import pytest
from e2e_helpers import Cli, evaluate_cid, wait_until_finished

from fedchain.chain import EventFollower, connect, devnet_account
from fedchain.chain.buffered import BufferedTaskClient
from fedchain.storage import IpfsClient, digest_to_cid

pytestmark = pytest.mark.e2e

VERSIONS = 20
K = 3
MAX_STALENESS = 8
DEVICES = 5
SLOW = 5  # devnet account of the device five times slower than the others
SLEEPER = 6  # devnet account of the device that sleeps after its first training
AGGREGATORS = (1, 7)


def test_buffered_run_with_slow_and_sleeping_devices(cli: Cli) -> None:
    aggregators = [devnet_account(i).address for i in AGGREGATORS]
    deployed = cli.deploy(
        *("--mode", "buffered", "--rounds", str(VERSIONS), "--devices", str(DEVICES)),
        *("--buffer-size", str(K), "--max-staleness", str(MAX_STALENESS)),
        *(arg for a in aggregators for arg in ("--aggregator-address", a)),
        *("--threshold", "2", "--aggregation-duration", "60"),
    )
    task = deployed["task"]
    assert deployed["mode"] == "buffered" and deployed["buffer_size"] == K
    aggregator_procs = [
        cli.spawn(f"aggregator-{i}", "aggregator", "--mode", "buffered", "--task", task, "--account", str(i))
        for i in AGGREGATORS
    ]
    devices = []
    for i in range(DEVICES):
        account = 2 + i
        timing = ["--min-train-seconds", "2"]
        if account == SLOW:
            timing += ["--speed-factor", "5"]
        if account == SLEEPER:
            timing += ["--sleep-after", "1", "--sleep-seconds", "30"]
        devices.append(
            cli.spawn(
                f"device-{account}",
                *("device", "--mode", "buffered", "--task", task, "--account", str(account)),
                *("--partition", f"{i}/{DEVICES}", *timing),
            )
        )
    wait_until_finished(cli.state.rpc_url, task, timeout=480, procs=[*aggregator_procs, *devices])
    for proc in [*aggregator_procs, *devices]:
        assert proc.wait(timeout=60) == 0, f"{proc.args[3:5]} did not exit cleanly"

    client = BufferedTaskClient(connect(cli.state.rpc_url), task)
    events = EventFollower(client.w3, task, client.contract.abi)
    published = {e.args["version"]: e.args for e in events.history("VersionPublished")}
    assert sorted(published) == list(range(1, VERSIONS + 1))
    assert list(events.history("AggregatorFault")) == [] and list(events.history("BufferDiscarded")) == []
    # 2-of-2 agreement: both aggregators revealed the published model of every buffer.
    reveals: dict[int, dict[str, bytes]] = {}
    for e in events.history("ResultRevealed"):
        reveals.setdefault(e.args["buffer"], {})[e.args["aggregator"]] = bytes(e.args["modelDigest"])
    for version, args in published.items():
        final = bytes(args["modelDigest"])
        assert client.version_digest(version) == final
        assert reveals[args["buffer"]] == {a: final for a in aggregators}, version

    # The slow device's updates were accepted stale into buffers that were published.
    published_buffers = {args["buffer"] for args in published.values()}
    slow = devnet_account(SLOW).address
    slow_entries = [e.args for e in events.history("UpdateBuffered", device=slow)]
    assert any(a["staleness"] > 0 and a["buffer"] in published_buffers for a in slow_entries), slow_entries
    assert all(e.args["staleness"] <= MAX_STALENESS for e in events.history("UpdateBuffered"))

    # The sleeper's update was refused as too stale, logged, and the device went on.
    sleeper_log = cli.log_text(f"device-{SLEEPER}")
    assert "refused by the chain: contract reverted: TooStale" in sleeper_log, sleeper_log[-3000:]
    assert "retrain from the latest version" in sleeper_log

    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = task_spec_buffered(client, ipfs)
        initial = evaluate_cid(ipfs, spec, deployed["initial_model_cid"])
        final = evaluate_cid(ipfs, spec, digest_to_cid(client.version_digest(VERSIONS)))
        report = json_report(ipfs, published[VERSIONS])
    assert report["version"] == VERSIONS and report["metrics"]["accuracy"] == pytest.approx(final, abs=1e-6)
    assert final >= 0.85 and final > initial + 0.2, (initial, final)


def task_spec_buffered(client: BufferedTaskClient, ipfs: IpfsClient):
    from fedchain.learning.spec import TaskSpec

    return TaskSpec.from_json(ipfs.cat(digest_to_cid(client.config().model_spec_digest)))


def json_report(ipfs: IpfsClient, args: dict) -> dict:
    import json

    return json.loads(ipfs.cat(digest_to_cid(bytes(args["reportDigest"]))))


def test_buffered_deploy_refuses_what_it_cannot_aggregate(cli: Cli) -> None:
    """Secure aggregation is refused before anything is deployed, saying why; a stateful server optimiser deploys (its
    state goes from version to version through the reports)."""
    assert cli.deploy("--mode", "buffered", "--strategy", "fedadam")["mode"] == "buffered"
    with pytest.raises(AssertionError, match="secure aggregation"):
        cli.deploy("--mode", "buffered", "--secure-aggregation")
    deployed = cli.deploy("--mode", "buffered", "--strategy", "median", "--buffer-size", "4", "--max-staleness", "1")
    config = BufferedTaskClient(connect(cli.state.rpc_url), deployed["task"]).config()
    assert (config.buffer_size, config.max_staleness, config.weighting_id) == (4, 1, 1)
