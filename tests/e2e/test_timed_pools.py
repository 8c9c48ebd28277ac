"""Pools of virtual devices with simulated speeds (fedchain/device/schedule.py) on Ganache with real Kubo and
PyTorch: the two sides of `fedchain bench online`.

- Buffered: 12 devices in two `fedchain pool --mode buffered` processes, a fleet with slow (5x) and sleeping devices;
  one aggregator. Every version is published, slow devices' updates land stale and count, nothing beyond the
  staleness bound is recorded, and the model learns.
- Synchronous with sampling: 12 devices in one `fedchain pool --fleet ... --per-round 4` process: every round's
  updates come from that round's sample only.
"""

from __future__ import annotations

import re
import time

import pytest
from e2e_helpers import Cli, evaluate_cid, wait_for_phase

from fedchain.chain import EventFollower, Phase, TaskClient, connect, devnet_account
from fedchain.chain.buffered import BufferedTaskClient, Status
from fedchain.device.schedule import Fleet, sample_round
from fedchain.storage import IpfsClient, digest_to_cid

pytestmark = pytest.mark.e2e

DEVICES = 12
FLEET = Fleet(train_seconds=0.5, slow_fraction=0.3, slow_factor=5, sleep_fraction=0.1, sleep_factor=10, seed=1)


def _pool_args(first: int, end: int, *extra: str) -> list[str]:
    return [
        *("pool", "--accounts", f"{2 + first}:{2 + end}", "--first-partition", str(first)),
        *("--num-partitions", str(DEVICES), "--fleet", FLEET.to_arg(), "--no-online", *extra),
    ]


def test_buffered_pools_with_slow_and_sleeping_devices(cli: Cli) -> None:
    # a slow device trains 2.5 s while versions come about every second: a bound of 8 lets its stale updates count
    versions, k, max_staleness = 12, 3, 8
    deployed = cli.deploy(
        *("--mode", "buffered", "--rounds", str(versions), "--devices", str(DEVICES)),
        *("--buffer-size", str(k), "--max-staleness", str(max_staleness)),
    )
    task = deployed["task"]
    procs = [cli.spawn("aggregator", "aggregator", "--mode", "buffered", "--task", task, "--account", "1")]
    for p, (first, end) in enumerate([(0, 6), (6, DEVICES)]):
        procs.append(cli.spawn(f"pool-{p}", *_pool_args(first, end, "--mode", "buffered", "--task", task)))
    client = BufferedTaskClient(connect(cli.state.rpc_url), task)
    deadline = time.monotonic() + 300
    while client.filling_buffer().status != Status.FINISHED:
        assert time.monotonic() < deadline, f"version {client.current_version()} after 300s"
        for proc in procs:
            assert proc.poll() in (None, 0), f"{proc.args[3:6]} exited with {proc.returncode}"
        time.sleep(0.5)
    for proc in procs:
        assert proc.wait(timeout=60) == 0

    events = EventFollower(client.w3, task, client.contract.abi)
    assert sorted(e.args["version"] for e in events.history("VersionPublished")) == list(range(1, versions + 1))
    entries = [e.args for e in events.history("UpdateBuffered")]
    assert all(a["staleness"] <= max_staleness for a in entries)
    roles = FLEET.roles(DEVICES)
    slow = {devnet_account(2 + i).address for i, role in enumerate(roles) if role == "slow"}
    assert any(a["device"] in slow and a["staleness"] > 0 for a in entries), entries
    # Both pools' devices took part: each pool's summary line counts its accepted updates.
    for p in range(2):
        text = cli.log_text(f"pool-{p}")
        summary = re.search(r"pool of 6 buffered devices: (\d+) trainings, (\d+) updates accepted", text)
        assert summary is not None and int(summary.group(2)) > 0, text[-2000:]
    assert len({a["device"] for a in entries}) >= 8

    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = _buffered_spec(client, ipfs)
        initial = evaluate_cid(ipfs, spec, deployed["initial_model_cid"])
        final = evaluate_cid(ipfs, spec, digest_to_cid(client.version_digest(versions)))
    assert final >= 0.8 and final > initial + 0.2, (initial, final)


def _buffered_spec(client: BufferedTaskClient, ipfs: IpfsClient):
    from fedchain.learning.spec import TaskSpec

    return TaskSpec.from_json(ipfs.cat(digest_to_cid(client.config().model_spec_digest)))


def test_sampled_synchronous_rounds_take_updates_from_the_round_sample_only(cli: Cli) -> None:
    rounds, per_round = 3, 4
    deployed = cli.deploy(
        *("--rounds", str(rounds), "--devices", str(DEVICES)),
        *("--min-updates", "2", "--max-updates", str(per_round), "--round-duration", "8"),
    )
    task = deployed["task"]
    procs = [cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")]
    procs.append(cli.spawn("pool", *_pool_args(0, DEVICES, "--per-round", str(per_round), "--task", task)))
    assert wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=300, procs=procs) == Phase.FINISHED
    client = TaskClient(connect(cli.state.rpc_url), task)
    events = EventFollower(client.w3, task, client.abi)
    addresses = [devnet_account(2 + i).address for i in range(DEVICES)]
    for r in range(1, rounds + 1):
        submitted = {e.args["device"] for e in events.history("UpdateSubmitted", round=r)}
        sampled = {addresses[i] for i in sample_round(DEVICES, per_round, r, FLEET.seed)}
        assert submitted and submitted <= sampled, (r, submitted, sampled)
        assert len(submitted) >= 2
