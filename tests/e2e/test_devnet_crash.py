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
from e2e_helpers import Cli, committed_rounds, report_of

from fedchain.app.devnet import SERVICES_FILE, Devnet, DevnetState, free_port, terminate
from fedchain.app.devnet.restart import RestartPolicy
from fedchain.chain import Phase, TaskClient, connect
from fedchain.chain.notify import EventNotifier
from fedchain.storage import IpfsClient, compute_cid, digest_to_cid

pytestmark = pytest.mark.e2e

ROUNDS = 5
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


def _finish_restarting_clients(cli: Cli, rpc_url: str, task: str, clients: dict, running: dict) -> list[str]:
    """Until the task finishes; a client that exits with a connection error is restarted once."""
    client = TaskClient(connect(rpc_url), task)
    restarted: list[str] = []
    deadline = time.monotonic() + 300
    while client.current_round().phase != Phase.FINISHED:
        for name, proc in running.items():
            if proc.poll() not in (None, 0):
                tail = cli.log_text(name)[-3000:]
                assert name not in restarted, f"{name} exited twice:\n{tail}"
                assert any(e in tail for e in ("IpfsUnavailable", "ConnectionError", "Connection reset")), tail
                restarted.append(name)
                running[name] = cli.spawn(name, *clients[name])
        assert time.monotonic() < deadline, "the task did not finish within 300 s"
        time.sleep(0.25)
    return restarted


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
        clients = {
            f"device-{i}": ("device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/{DEVICES}")
            for i in range(DEVICES)
        }
        clients["aggregator"] = ("aggregator", "--task", task, "--account", "1")
        running = {name: cli.spawn(name, *args) for name, args in clients.items()}
        procs = list(running.values())

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
        killed = time.monotonic()
        again = net.start()
        # Clients retry a refused call for about 6 s (chain.connection's retry policy): the outage must stay shorter.
        print(f"devnet process killed: chain back after {time.monotonic() - killed:.1f}s")
        assert (again.rpc_url, again.ipfs_api, again.chain_id) == (state.rpc_url, state.ipfs_api, state.chain_id)

        # Requests in flight through the killed devnet's proxies broke with it; web3 resends chain calls, but the
        # device's IPFS client does not resend a call reset mid-way, and the device exits. A process manager
        # restarts it, as here (once at most), and it resumes from chain state. The service kills above allow none.
        restarted = _finish_restarting_clients(cli, state.rpc_url, task, clients, running)
        print(f"clients restarted after the devnet process was killed: {restarted or 'none'}")
        assert all(p.wait(timeout=60) == 0 for p in running.values())
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


def test_ganache_chain_survives_kill_9_of_ganache_and_of_the_devnet(tmp_path: Path) -> None:
    """Ganache keeps its chain in LevelDB (--database.dbPath): a restarted Ganache, or a devnet started again on the
    same folder, serves the same blocks and contracts."""
    net = DevnetProcess("ganache", tmp_path)
    try:
        state = net.start()
        cli = Cli(state, tmp_path)
        deployed = cli.deploy("--rounds", "2", "--devices", "2", "--no-start")
        task = deployed["task"]
        w3 = connect(state.rpc_url)
        head = w3.eth.get_block("latest")
        config = TaskClient(w3, task).config()

        net.kill_service("ipfs")
        net.kill_service("chain")
        connect(state.rpc_url, wait=30)
        assert w3.eth.get_block(head.number).hash == head.hash
        assert TaskClient(w3, task).config() == config

        assert net.proc is not None
        net.proc.send_signal(signal.SIGKILL)
        net.proc.wait(timeout=10)
        leftovers = [net.service_pid(name) for name in ("chain", "ipfs")]
        net.start()
        assert "the chain process (pid" in net.log.read_text()  # Ganache (an npm shim) was found and stopped
        assert not any(_alive(pid) for pid in leftovers)
        assert w3.eth.get_block(head.number).hash == head.hash
        assert TaskClient(w3, task).config() == config
        with IpfsClient(state.ipfs_api) as ipfs:  # the repo on disk kept the model across both IPFS restarts
            assert compute_cid(ipfs.cat(deployed["initial_model_cid"])) == deployed["initial_model_cid"]
    finally:
        net.stop()
        for name in ("chain", "ipfs"):
            with contextlib.suppress(KeyError, OSError, ValueError):
                os.kill(net.service_pid(name), signal.SIGKILL)


def test_a_service_that_keeps_dying_is_given_up_on_and_the_other_keeps_running(tmp_path: Path) -> None:
    """Bounded restarts: past the budget the devnet stops restarting IPFS, says so, and the chain still serves.
    An in-memory chain (no persist) that dies is reported, not replaced by an empty one."""
    policy = RestartPolicy(max_restarts=1, window_s=300, base_delay_s=0.1)
    with Devnet(tmp_path / "net", "anvil", num_accounts=2, restart_policy=policy) as net:
        net.processes["ipfs"].kill()
        _until(lambda: net.restarts["ipfs"] == 1)
        with IpfsClient(net.ipfs_api) as ipfs:  # back on the same port
            assert ipfs.cat(ipfs.add(b"still here")) == b"still here"
        net.processes["ipfs"].kill()
        _until(lambda: "ipfs" in net.gave_up)
        assert "gave up after 1 restarts" in net.gave_up["ipfs"]
        assert connect(net.rpc_url).eth.chain_id == 31337  # one service dying does not stop the other

        net.processes["chain"].kill()
        _until(lambda: "chain" in net.gave_up)
        assert "keeps no chain on disk" in net.gave_up["chain"]
        with pytest.raises(RuntimeError, match="devnet chain"):
            net.check_alive()


def _until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_anvil_killed_right_after_a_transaction_keeps_it_and_takes_writes_while_down(tmp_path: Path) -> None:
    """The journal, not a lucky snapshot: a transfer mined just before kill -9 (long before the next snapshot) is
    in the restarted chain with its hash and block; one sent while Anvil is down is held, answered, and mined."""
    from fedchain.chain.accounts import devnet_account

    # No periodic snapshot during the test: only the journal can bring the transfer back.
    with Devnet(tmp_path / "net", "anvil", num_accounts=3, persist=True, snapshot_interval=3600) as net:
        w3 = connect(net.rpc_url)
        sender = devnet_account(0)
        to = net.state.accounts[1] if net.state else ""

        def transfer(nonce: int) -> bytes:
            tx = {"to": to, "value": 1, "gas": 21000, "gasPrice": 10**9, "nonce": nonce, "chainId": 31337}
            return bytes(w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))

        notifier = EventNotifier(net.rpc_url, [to])  # eth_subscribe over the proxy's WebSocket tunnel
        _until(lambda: notifier.pushing, timeout=10)
        first = w3.eth.wait_for_transaction_receipt(transfer(0))
        generation = net.store.generation if net.store else -1
        net.processes["chain"].kill()  # well inside the snapshot interval
        second = transfer(1)  # held by the proxy until Anvil is back, then journaled and forwarded
        _until(lambda: net.restarts["chain"] == 1)
        _until(lambda: notifier.pushing, timeout=20)  # the subscription is re-established
        notifier.close()
        assert net.store is not None and net.store.generation == generation + 1  # the replay's own snapshot
        again = w3.eth.get_transaction_receipt(first.transactionHash)
        assert (again.blockNumber, again.status) == (first.blockNumber, 1)
        assert w3.eth.wait_for_transaction_receipt(second, timeout=30).status == 1
        assert w3.eth.get_transaction_count(sender.address) == 2


def _alive(pid: int) -> bool:
    """A running process (a zombie awaiting its reaper has an empty command line)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def test_a_second_devnet_on_the_same_folder_is_refused_and_leaves_the_first_alone(tmp_path: Path) -> None:
    with Devnet(tmp_path / "net", "anvil", num_accounts=2, persist=True) as first:
        pids = {name: p.pid for name, p in first.processes.items()}
        with pytest.raises(RuntimeError, match="another devnet is running"):
            Devnet(tmp_path / "net", "anvil", num_accounts=2, persist=True).start()
        assert {name: p.pid for name, p in first.processes.items()} == pids
        assert all(p.poll() is None for p in first.processes.values())


def test_a_stopped_devnet_resumes_its_chain_and_fresh_starts_over(tmp_path: Path) -> None:
    from fedchain.chain.accounts import devnet_account

    sender = devnet_account(0)
    with Devnet(tmp_path / "net", "anvil", num_accounts=2, persist=True) as net:
        w3 = connect(net.rpc_url)
        tx = {"to": net.state.accounts[1] if net.state else "", "value": 1, "gas": 21000, "gasPrice": 10**9}
        raw = sender.sign_transaction({**tx, "nonce": 0, "chainId": 31337}).raw_transaction
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
    with Devnet(tmp_path / "net", "anvil", num_accounts=2, persist=True) as net:
        assert connect(net.rpc_url).eth.get_transaction_receipt(receipt.transactionHash).blockNumber == 1
    with Devnet(tmp_path / "net", "anvil", num_accounts=2, persist=True, fresh=True) as net:
        assert connect(net.rpc_url).eth.block_number == 0
