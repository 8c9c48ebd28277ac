"""Light and torch devices in one task on a real devnet (Ganache, Kubo, an aggregator process): a device on the
numpy-only runtime (`--runtime light`), one where torch cannot be imported at all (a gateway without a torch wheel:
`auto` must pick light) and a torch device train together; every round takes all three updates and the model
reaches the demo's accuracy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from e2e_helpers import Cli, committed_rounds, evaluate_cid, report_of, task_spec, wait_for_phase, wait_until_finished

from fedchain.chain import EventFollower, Phase, connect, devnet_account
from fedchain.chain.buffered import BufferedTaskClient
from fedchain.learning.spec import TaskSpec
from fedchain.storage import IpfsClient, digest_to_cid

pytestmark = pytest.mark.e2e

ROUNDS = 3
DEVICES = 3
# `fedchain ...` in an interpreter where any `import torch` fails, as where no torch wheel exists.
WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; from fedchain.cli import app; app(prog_name='fedchain')"


def _spawn_without_torch(cli: Cli, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = open(cli.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed when the process object is collected
    proc = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_TORCH, *args, *cli.endpoints()],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    cli.processes.append(proc)
    return proc


def test_light_and_torch_devices_train_one_task(cli: Cli) -> None:
    deployed = cli.deploy("--rounds", str(ROUNDS), "--devices", str(DEVICES), "--round-duration", "120")
    task = deployed["task"]
    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")

    def device_args(i: int) -> list[str]:
        return ["device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/{DEVICES}"]

    devices = [
        cli.spawn("device-torch", *device_args(0), "--runtime", "torch"),
        cli.spawn("device-light", *device_args(1), "--runtime", "light"),
        _spawn_without_torch(cli, "device-no-torch", *device_args(2)),  # --runtime auto
    ]
    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=300, procs=[aggregator, *devices])
    for proc in [aggregator, *devices]:
        assert proc.wait(timeout=60) == 0, f"{proc.args[3:5]} did not exit cleanly"
    assert "training runtime: torch" in cli.log_text("device-torch")
    for name in ("device-light", "device-no-torch"):
        log = cli.log_text(name)
        assert "training runtime: light (numpy only)" in log, log[-2000:]
        assert log.count("round ") >= ROUNDS and "trained on" in log

    commits = committed_rounds(cli.state.rpc_url, task)
    assert sorted(commits) == list(range(1, ROUNDS + 1))
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        initial = evaluate_cid(ipfs, spec, deployed["initial_model_cid"])
        accuracies = []
        for r in range(1, ROUNDS + 1):
            (args,) = commits[r]
            report = report_of(ipfs, args)
            # Every device's update, light or torch, was accepted by the aggregator's checks.
            assert len(report["accepted"]) == DEVICES and report["rejected"] == [], report
            accuracies.append(evaluate_cid(ipfs, spec, digest_to_cid(bytes(args["modelDigest"]))))
    assert accuracies[-1] >= 0.90, accuracies
    assert accuracies[-1] > initial + 0.2, (initial, accuracies)


def test_a_light_pool_and_a_torch_pool_train_one_task(cli: Cli) -> None:
    """`fedchain pool --runtime ...`: three virtual devices in a process where torch cannot be imported (auto picks
    light) and three in a torch pool, each device sending its own submitUpdate (signed while the pool sends, see
    chain.tx.sign_and_send); every round takes all six updates and the model learns."""
    devices = 6
    deployed = cli.deploy("--rounds", str(ROUNDS), "--devices", str(devices), "--round-duration", "120")
    task = deployed["task"]
    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")
    pool_args = ["pool", "--task", task, "--num-partitions", str(devices)]
    pools = [
        _spawn_without_torch(cli, "pool-light", *pool_args, "--accounts", "2:5"),  # --runtime auto
        cli.spawn("pool-torch", *pool_args, "--accounts", "5:8", "--first-partition", "3", "--runtime", "torch"),
    ]
    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=300, procs=[aggregator, *pools])
    for proc in [aggregator, *pools]:
        assert proc.wait(timeout=60) == 0, f"{proc.args[3:5]} did not exit cleanly"
    assert "training runtime: light (numpy only)" in cli.log_text("pool-light"), cli.log_text("pool-light")[-2000:]
    assert "training runtime: torch" in cli.log_text("pool-torch")

    commits = committed_rounds(cli.state.rpc_url, task)
    assert sorted(commits) == list(range(1, ROUNDS + 1))
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        initial = evaluate_cid(ipfs, spec, deployed["initial_model_cid"])
        for r in range(1, ROUNDS + 1):
            (args,) = commits[r]
            report = report_of(ipfs, args)
            assert len(report["accepted"]) == devices and report["rejected"] == [], report
        final = evaluate_cid(ipfs, spec, digest_to_cid(bytes(commits[ROUNDS][0]["modelDigest"])))
    assert final >= 0.85 and final > initial + 0.2, (initial, final)


def test_light_devices_in_an_asynchronous_buffered_task(cli: Cli) -> None:
    """The buffered (FedBuff) loop on the light runtime too: a torch device, a `--runtime light` device and one where
    torch cannot be imported fill the buffers together; every version is published from their updates."""
    versions, buffer_size = 6, 3
    deployed = cli.deploy(
        *("--mode", "buffered", "--rounds", str(versions), "--devices", str(DEVICES)),
        *("--buffer-size", str(buffer_size), "--max-staleness", "4"),
    )
    task = deployed["task"]
    aggregator = cli.spawn("aggregator", "aggregator", "--mode", "buffered", "--task", task, "--account", "1")

    def device_args(i: int) -> list[str]:
        # at least a second per training, so no device fills the buffers alone
        return [
            *("device", "--mode", "buffered", "--task", task, "--account", str(2 + i)),
            *("--partition", f"{i}/{DEVICES}", "--min-train-seconds", "1"),
        ]

    devices = [
        cli.spawn("device-torch", *device_args(0), "--runtime", "torch"),
        cli.spawn("device-light", *device_args(1), "--runtime", "light"),
        _spawn_without_torch(cli, "device-no-torch", *device_args(2)),  # --runtime auto
    ]
    wait_until_finished(cli.state.rpc_url, task, timeout=300, procs=[aggregator, *devices])
    client = BufferedTaskClient(connect(cli.state.rpc_url), task)
    for proc in [aggregator, *devices]:
        assert proc.wait(timeout=60) == 0, f"{proc.args[3:5]} did not exit cleanly"
    assert "training runtime: torch" in cli.log_text("device-torch")
    accepted: dict[str, int] = {}
    for name in ("device-light", "device-no-torch"):
        log = cli.log_text(name)
        assert "training runtime: light (numpy only)" in log, log[-2000:]
    events = EventFollower(client.w3, task, client.contract.abi)
    for event in events.history("UpdateBuffered"):
        accepted[event.args["device"]] = accepted.get(event.args["device"], 0) + 1
    # every device, light or torch, had updates in the buffers
    assert set(accepted) == {devnet_account(2 + i).address for i in range(DEVICES)}, accepted
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = TaskSpec.from_json(ipfs.cat(digest_to_cid(client.config().model_spec_digest)))
        initial = evaluate_cid(ipfs, spec, deployed["initial_model_cid"])
        final = evaluate_cid(ipfs, spec, digest_to_cid(client.version_digest(versions)))
    assert final >= 0.85 and final > initial + 0.2, (initial, final)
