"""Virtual devices (`fedchain pool`) and pushed events, on a real Anvil and Kubo with separate processes.

* a run with a pool of virtual devices ends with the same final model, bit for bit, as the same run with one OS
  process per device;
* a pool killed mid-run is restarted by the demo and its devices resume from chain state: every round still has
  every device's update;
* `EventNotifier` is pushed a contract's events over the node's WebSocket within milliseconds;
* the batched transaction path (signed here, sent and confirmed in JSON-RPC batches) lands every transaction.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from e2e_helpers import Cli

from fedchain.app.devnet import Devnet
from fedchain.chain import EventFollower, TaskClient, connect
from fedchain.chain.accounts import devnet_account, devnet_accounts
from fedchain.chain.notify import EventNotifier
from fedchain.chain.tx import send_raw_batch, wait_receipts

pytestmark = pytest.mark.e2e


def _demo(workdir: Path, *args: str, kill_pool_at_round: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "fedchain.cli", "demo", "--chain", "anvil", "--json", "--workdir", str(workdir)]
    proc = subprocess.Popen(
        [*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    if kill_pool_at_round is not None:
        log = workdir / "logs" / "pool-0.log"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and f"round {kill_pool_at_round}:" in log.read_text(errors="replace"):
                break
            time.sleep(0.05)
        victims = [p for p in psutil.Process(proc.pid).children(recursive=True) if _is_pool_0(p, workdir)]
        assert len(victims) == 1, "pool-0 should be running"
        os.kill(victims[0].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _is_pool_0(process: psutil.Process, workdir: Path) -> bool:
    """pool-0 by its command line, or, forked from the demo's fork server (same command line as the server's), by
    its output: pool-0's log open on its stdout."""
    try:
        cmdline = process.cmdline()
        if "pool" in cmdline and str(workdir / "ready" / "pool-0") in cmdline:
            return True
        log = str(workdir / "logs" / "pool-0.log")
        return any(f.path == log and f.fd == 1 for f in process.open_files())
    except psutil.Error:  # exited meanwhile
        return False


@pytest.mark.slow
def test_a_pool_of_virtual_devices_trains_the_same_bits_as_one_process_per_device(tmp_path: Path) -> None:
    args = ("--devices", "4", "--rounds", "3")
    processes = _demo(tmp_path / "processes", *args, "--no-virtual")
    pooled = _demo(tmp_path / "pooled", *args, "--virtual", "--pools", "2")
    assert processes["virtual"] is False and pooled["virtual"] is True and pooled["pools"] == 2
    assert pooled["final_model_cid"] == processes["final_model_cid"]
    assert pooled["accuracy_per_round"] == processes["accuracy_per_round"]
    assert pooled["updates_per_round"] == [4, 4, 4]
    # The pools relay their devices' signed updates: one batch per pool per round instead of one per device.
    assert pooled["submit"] == "batch" and "submitUpdate" not in pooled["gas"]
    assert pooled["gas"]["submitUpdateBatch"] < 2 * processes["gas"]["submitUpdate"]


@pytest.mark.slow
def test_a_killed_pool_is_restarted_and_its_devices_resume_from_chain_state(tmp_path: Path) -> None:
    summary = _demo(tmp_path, "--devices", "12", "--pools", "2", "--rounds", "4", kill_pool_at_round=2)
    assert summary["pool_restarts"] >= 1
    assert summary["failed_rounds"] == 0
    assert summary["updates_per_round"] == [12, 12, 12, 12]
    log = (tmp_path / "logs" / "pool-0.log").read_text(errors="replace")
    assert log.count("pool of 6 devices registered") == 2  # started twice, the second time from chain state


@pytest.fixture(scope="module")
def anvil_net(tmp_path_factory: pytest.TempPathFactory):
    net = Devnet(tmp_path_factory.mktemp("devnet-anvil-virtual"), "anvil", num_accounts=40)
    net.start()
    try:
        yield net
    finally:
        net.stop()


def test_events_are_pushed_over_the_websocket_within_milliseconds(anvil_net: Devnet, tmp_path: Path) -> None:
    assert anvil_net.state is not None
    cli = Cli(anvil_net.state, tmp_path)
    task = cli.deploy("--rounds", "2", "--devices", "2")["task"]
    w3 = connect(anvil_net.state.rpc_url)
    with EventNotifier(anvil_net.state.rpc_url, [task], poll_interval=5.0) as notifier:
        assert notifier.pushing
        notifier.wait(0.5)  # the flag set on subscribing
        newcomer = TaskClient.for_account(w3, task, devnet_account(30))
        sent = time.monotonic()
        newcomer.request_join()  # emits DeviceJoinRequested
        assert notifier.wait(5.0)
        assert time.monotonic() - sent < 1.0  # a poll at 5 s would take 5 s
        assert notifier.notifications >= 1
        # Another contract's events do not wake it.
        other = cli.deploy("--rounds", "2", "--devices", "2")["task"]
        TaskClient.for_account(w3, other, devnet_account(31)).request_join()
        assert not notifier.wait(0.5)


def test_batched_sends_land_every_transaction_and_report_refusals(anvil_net: Devnet, tmp_path: Path) -> None:
    assert anvil_net.state is not None
    cli = Cli(anvil_net.state, tmp_path)
    task = cli.deploy("--rounds", "2", "--devices", "2")["task"]
    w3 = connect(anvil_net.state.rpc_url)
    senders = [TaskClient.for_account(w3, task, account) for account in devnet_accounts(range(20, 28))]
    fees = senders[0].sender.fees()
    signed = [s.sender.sign(s.contract.functions.requestJoin(), 200_000, fees) for s in senders]
    raws = [raw for _, raw in signed]
    sent = send_raw_batch(w3, [*raws, raws[0][:-3] + b"\x00\x00\x00"])  # the last one is a corrupt signature
    hashes = [h for h in sent if isinstance(h, bytes)]
    assert len(hashes) == len(senders) and not isinstance(sent[-1], bytes)
    receipts = wait_receipts(w3, hashes)
    assert all(int(r["status"], 16) == 1 for r in receipts)
    assert all(TaskClient(w3, task).device_info(s.sender.address).approved is False for s in senders)


def test_devices_left_out_of_a_batch_notice_and_submit_directly(anvil_net: Devnet, tmp_path: Path) -> None:
    """A relayer that leaves signed updates out of its batch cannot drop them: each device checks the batches the
    chain recorded (files on IPFS, bound by their Merkle roots) and submits the missing update itself."""
    assert anvil_net.state is not None
    cli = Cli(anvil_net.state, tmp_path)
    relayer = devnet_account(35).address
    deployed = cli.deploy("--rounds", "2", "--devices", "6", "--relayer-address", relayer)
    task = deployed["task"]
    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")
    pool = cli.spawn(
        "pool",
        "pool",
        "--task",
        task,
        "--accounts",
        "2:8",
        "--num-partitions",
        "6",
        "--relayer-account",
        "35",
        "--omit-from-batch",
        "2",
    )
    assert pool.wait(timeout=240) == 0, cli.log_text("pool")[-3000:]
    assert aggregator.wait(timeout=60) == 0, cli.log_text("aggregator")[-3000:]
    log = cli.log_text("pool")
    assert log.count("relayed 4 signed updates") == 2
    assert log.count("2 signed updates are in no batch recorded on chain") == 2
    w3 = connect(anvil_net.state.rpc_url)
    client = TaskClient(w3, task)
    direct = list(EventFollower(w3, task, client.abi).history("UpdateSubmitted"))
    batches = list(EventFollower(w3, task, client.abi).history("UpdateBatchSubmitted"))
    assert len(direct) == 4 and len(batches) == 2  # 2 omitted devices x 2 rounds, one batch per round
    for r in (1, 2):
        report = report_of_round(anvil_net, client, r)
        assert len(report["accepted"]) == 6 and report["rejected"] == []


def report_of_round(net: Devnet, client: TaskClient, round_index: int) -> dict:
    from fedchain.storage import IpfsClient, digest_to_cid

    event = next(
        e for e in EventFollower(client.w3, client.address, client.abi).history("AggregateCommitted", round=round_index)
    )
    assert net.state is not None
    with IpfsClient(net.state.ipfs_api) as ipfs:
        return json.loads(ipfs.cat(digest_to_cid(bytes(event.args["reportDigest"]))))


@pytest.mark.slow
def test_pools_run_as_ray_actors_on_a_local_loopback_ray(anvil_net: Devnet, tmp_path: Path) -> None:
    """`fedchain pool --ray-local 2 --pools 2`: two pool actors, each relaying its devices' signed updates; every
    round has every device's update, one batch per pool."""
    assert anvil_net.state is not None
    cli = Cli(anvil_net.state, tmp_path)
    relayers = [devnet_account(i).address for i in (36, 37)]
    deployed = cli.deploy("--rounds", "2", "--devices", "6", *[x for r in relayers for x in ("--relayer-address", r)])
    task = deployed["task"]
    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")
    pools = cli.spawn(
        "ray-pools",
        "pool",
        "--task",
        task,
        "--accounts",
        "2:8",
        "--num-partitions",
        "6",
        "--relayer-account",
        "36",
        "--ray-local",
        "2",
        "--pools",
        "2",
    )
    assert pools.wait(timeout=300) == 0, cli.log_text("ray-pools")[-3000:]
    assert aggregator.wait(timeout=60) == 0, cli.log_text("aggregator")[-3000:]
    w3 = connect(anvil_net.state.rpc_url)
    client = TaskClient(w3, task)
    batches = list(EventFollower(w3, task, client.abi).history("UpdateBatchSubmitted"))
    assert sorted((e.args["round"], e.args["relayer"]) for e in batches) == sorted(
        (r, a) for r in (1, 2) for a in relayers
    )
    assert all(e.args["entries"] == 3 for e in batches)
    for r in (1, 2):
        assert len(report_of_round(anvil_net, client, r)["accepted"]) == 6
