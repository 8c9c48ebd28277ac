"""The explorer's end-to-end scenario, shared by test_explorer_api.py and test_explorer_browser.py (one run per
session): a finished federated run with a misbehaving device, three aggregators of which one lies (2 of 3 must
agree: the liar is faulted every round) and a reverted transaction, indexed live."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from e2e_helpers import Cli, start_explorer, wait_explorer_synced, wait_for_phase

from fedchain.app.devnet import Devnet, DevnetState, terminate
from fedchain.chain import Phase, TaskClient, connect, devnet_account
from fedchain.storage import IpfsClient, cid_to_digest

EXPLORER_ROUNDS = 3
HONEST_DEVICES = 3  # accounts 2, 3, 4
BAD_DEVICE = 5  # submits bytes that are not safetensors every round: the aggregator rejects them
AGGREGATORS = (1, 12, 13)  # devnet accounts holding AGGREGATOR_ROLE; accounts 6..11 serve other purposes
LYING_AGGREGATOR = 13  # reveals a corrupted model every round (`fedchain aggregator --lie`)
THRESHOLD = 2  # agreeing reveals that finalise a round
NUM_ACCOUNTS = 14


@dataclass
class ExplorerRun:
    state: DevnetState
    task: str
    url: str
    deployed: dict
    bad_device: str
    reverted_tx: str
    logs: Path
    aggregators: tuple[str, ...] = ()
    liar: str = ""

    @property
    def honest_aggregators(self) -> set[str]:
        return set(self.aggregators) - {self.liar}


def _bad_device(state: DevnetState, task: str, stop: threading.Event) -> None:
    """Every round, submit an update that is not a model (rejected by the aggregator with its reason)."""
    client = TaskClient.for_account(connect(state.rpc_url), task, devnet_account(BAD_DEVICE))
    with IpfsClient(state.ipfs_api) as ipfs:
        done = 0
        while done < EXPLORER_ROUNDS and not stop.is_set():
            info = client.current_round()
            if info.phase == Phase.OPEN and info.round > done:
                cid = ipfs.add(f"not a model, round {info.round}".encode())
                client.submit_update(info.round, cid_to_digest(cid), 7)
                done = info.round
            stop.wait(0.2)


def _reverted_submission(state: DevnetState, task: str) -> str:
    """A submitUpdate for a round that is not open, mined as a failed transaction (no preflight)."""
    w3 = connect(state.rpc_url)
    account = devnet_account(BAD_DEVICE + 1)
    client = TaskClient(w3, task)
    fn = client.contract.functions.submitUpdate(99, b"\x01" * 32, 1)
    tx = fn.build_transaction(
        {
            "from": account.address,
            "gas": 100_000,
            "nonce": w3.eth.get_transaction_count(account.address),
            "chainId": w3.eth.chain_id,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    assert receipt["status"] == 0
    return "0x" + bytes(receipt["transactionHash"]).hex()


@contextmanager
def explorer_scenario(workdir: Path) -> Iterator[ExplorerRun]:
    """Ganache + Kubo; the explorer (started first, so it indexes live); a task with 3 honest devices and one that
    sends garbage, 3 rounds, three aggregators (one lying, threshold 2); one reverted transaction. Yields once every
    aggregator has exited (the liar reveals the last round late) and the explorer has caught up."""
    net = Devnet(workdir / "devnet", "ganache", num_accounts=NUM_ACCOUNTS)
    state = net.start()
    cli = Cli(state, workdir)
    explorer = None
    stop = threading.Event()
    try:
        explorer, url = start_explorer(state, workdir, workdir / "index.sqlite")
        aggregators = tuple(devnet_account(i).address for i in AGGREGATORS)
        deployed = cli.deploy(
            *("--rounds", str(EXPLORER_ROUNDS), "--devices", str(HONEST_DEVICES + 1), "--round-duration", "120"),
            *(arg for address in aggregators for arg in ("--aggregator-address", address)),
            *("--threshold", str(THRESHOLD)),
        )
        task = deployed["task"]
        reverted = _reverted_submission(state, task)
        bad = threading.Thread(target=_bad_device, args=(state, task, stop), daemon=True)
        bad.start()
        aggregator_procs = [
            cli.spawn(
                f"aggregator-{i}",
                "aggregator",
                *("--task", task, "--account", str(i)),
                *(("--lie",) if i == LYING_AGGREGATOR else ()),
            )
            for i in AGGREGATORS
        ]
        devices = [
            cli.spawn(f"device-{i}", "device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/3")
            for i in range(HONEST_DEVICES)
        ]
        wait_for_phase(state.rpc_url, task, {Phase.FINISHED}, timeout=400, procs=[*aggregator_procs, *devices])
        stop.set()
        bad.join(timeout=10)
        # An aggregator whose reveal came after the last round was final reveals it late, then exits.
        for proc in aggregator_procs:
            assert proc.wait(timeout=120) == 0, f"aggregator {proc.args[3:]} exited with {proc.returncode}"
        wait_explorer_synced(url, state.rpc_url)
        yield ExplorerRun(
            state,
            task,
            url,
            deployed,
            devnet_account(BAD_DEVICE).address,
            reverted,
            workdir,
            aggregators,
            devnet_account(LYING_AGGREGATOR).address,
        )
    finally:
        stop.set()
        cli.stop_all()
        if explorer is not None:
            terminate(explorer)
        net.stop()


def chromium_path() -> str | None:
    """Debian's Chromium (`make test` installs it, or stops saying how: tools/browser/chromium.sh); under `make test`
    (FEDCHAIN_REQUIRE_BROWSER) or in CI its absence is a failure, elsewhere a skip."""
    path = "/usr/bin/chromium"
    if os.path.exists(path):
        return path
    if os.environ.get("CI") or os.environ.get("FEDCHAIN_REQUIRE_BROWSER"):
        raise AssertionError(f"{path} is missing: install it with apt-get install chromium (tools/browser/chromium.sh)")
    return None
