"""Chaos: `kill -9` of the devnet's IPFS service, of its chain and of the devnet process itself, each in the middle
of a round of a real federated run. The devnet restarts what died (or, killed itself, is started again on the same
data folder) and every round still finalises exactly once, with nothing lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import Cli, committed_rounds, report_of, wait_for_phase

from fedchain.chain import Phase, TaskClient, connect
from fedchain.devnet import SERVICES_FILE, DevnetState, free_port, terminate
from fedchain.storage import IpfsClient, compute_cid, digest_to_cid

pytestmark = pytest.mark.e2e

ROUNDS = 4
DEVICES = 2


class DevnetProcess:
    """`fedchain devnet` as its own OS process, on fixed ports and one data folder."""

    def __init__(self, chain: str, tmp: Path) -> None:
        self.chain = chain
        self.data_dir = tmp / "devnet-data"
        self.state_file = tmp / "devnet.json"
        self.log = tmp / "devnet.log"
        self.ports = (free_port(), free_port())
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> DevnetState:
        self.state_file.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "fedchain.cli", "devnet", "--chain", self.chain, "--accounts", "8"),
                    *("--rpc-port", str(self.ports[0]), "--ipfs-port", str(self.ports[1])),
                    *("--state-file", str(self.state_file), "--data-dir", str(self.data_dir)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not self.state_file.exists():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)
        return DevnetState.load(self.state_file)

    def service_pid(self, name: str) -> int:
        return int(json.loads((self.data_dir / SERVICES_FILE).read_text())["processes"][name]["pid"])

    def kill_service(self, name: str, timeout: float = 60) -> None:
        """kill -9 one of the devnet's services and wait until the devnet has restarted it."""
        old = self.service_pid(name)
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.service_pid(name) != old:
                    return
            except (KeyError, ValueError, OSError):
                pass  # between the death and the restart, or mid-write
            assert time.monotonic() < deadline, f"{name} not restarted:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=60)


def wait_for_round(rpc_url: str, task: str, round_index: int, procs: list, timeout: float = 240) -> None:
    """Until round `round_index` is open (its devices are training or submitting)."""
    client = TaskClient(connect(rpc_url), task)
    deadline = time.monotonic() + timeout
    while True:
        info = client.current_round()
        if info.round >= round_index or info.phase == Phase.FINISHED:
            return
        for proc in procs:
            assert proc.poll() in (None, 0), f"{proc.args[3:5]} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"round {round_index} never opened (at {info.round})"
        time.sleep(0.1)


@pytest.mark.slow  # about 75 s: a 4-round run with three crashes and two devnet restarts
def test_kill_9_of_ipfs_chain_and_devnet_loses_no_round(tmp_path: Path) -> None:
    net = DevnetProcess("anvil", tmp_path)
    try:
        state = net.start()
        cli = Cli(state, tmp_path)
        deployed = cli.deploy("--rounds", str(ROUNDS), "--devices", str(DEVICES), "--round-duration", "600")
        task = deployed["task"]
        procs = [
            cli.spawn(f"device-{i}", "device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/{DEVICES}")
            for i in range(DEVICES)
        ]
        procs.append(cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1"))

        wait_for_round(state.rpc_url, task, 2, procs)
        net.kill_service("ipfs")
        wait_for_round(state.rpc_url, task, 3, procs)
        net.kill_service("chain")
        wait_for_round(state.rpc_url, task, 4, procs)
        # The devnet process itself: its chain and IPFS outlive it; started again, it saves the chain, stops them
        # and resumes on the same ports.
        assert net.proc is not None
        net.proc.send_signal(signal.SIGKILL)
        net.proc.wait(timeout=10)
        again = net.start()
        assert (again.rpc_url, again.ipfs_api, again.chain_id) == (state.rpc_url, state.ipfs_api, state.chain_id)

        wait_for_phase(state.rpc_url, task, {Phase.FINISHED}, timeout=300, procs=procs)
        assert all(p.wait(timeout=60) == 0 for p in procs)
        log = net.log.read_text()
        assert "ipfs process" in log and "chain process" in log and "is back" in log
        assert "of a previous devnet is still running" in log

        commits = committed_rounds(state.rpc_url, task)
        assert sorted(commits) == list(range(1, ROUNDS + 1))
        assert all(len(c) == 1 for c in commits.values()), {r: len(c) for r, c in commits.items()}

        # Stopped cleanly and started again: the same chain, every round's report and the final model readable.
        net.stop()
        assert not net.state_file.exists()
        state = net.start()
        w3 = connect(state.rpc_url)
        client = TaskClient(w3, task)
        assert client.current_round().phase == Phase.FINISHED
        assert w3.eth.get_transaction_receipt(_deploy_tx(w3, task)).status == 1
        assert committed_rounds(state.rpc_url, task) == commits
        with IpfsClient(state.ipfs_api) as ipfs:
            for r in range(1, ROUNDS + 1):
                assert report_of(ipfs, commits[r][0])["round"] == r
            final = digest_to_cid(client.global_model_digest())
            assert final == digest_to_cid(bytes(commits[ROUNDS][0]["modelDigest"]))
            assert compute_cid(ipfs.cat(final)) == final
    finally:
        net.stop()
        for name in ("chain", "ipfs"):  # leftovers of a failed run must not outlive the test
            with contextlib.suppress(KeyError, OSError, ValueError):
                os.kill(net.service_pid(name), signal.SIGKILL)


def _deploy_tx(w3, task: str) -> str:
    """The transaction that created `task` (searched from genesis: the devnet's chain is short)."""
    for n in range(w3.eth.block_number + 1):
        for tx in w3.eth.get_block(n, full_transactions=True).transactions:
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            if receipt.contractAddress and receipt.contractAddress.lower() == task.lower():
                return tx["hash"]
    raise AssertionError(f"no transaction created {task}")
