"""`fedchain demo`: a whole federated run on a local devnet, one OS process per device plus the aggregator."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from web3 import Web3

from fedchain.chain import EventFollower, Phase, TaskClient, connect, devnet_account
from fedchain.deploy import TaskPlan, create_task, default_min_updates
from fedchain.devnet import Devnet, DevnetState, terminate
from fedchain.learning.data import load_dataset
from fedchain.learning.model import build_model, set_weights
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.learning.train import evaluate, train_centralized
from fedchain.storage import IpfsClient, digest_to_cid

ADMIN_INDEX = 0
AGGREGATOR_INDEX = 1
FIRST_DEVICE_INDEX = 2


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 5
    rounds: int = 10
    chain: str = "ganache"
    non_iid: float | None = None
    online: bool = True
    workdir: Path = Path(".fedchain/demo")
    timeout: float = 900.0
    round_duration: int = 60
    spec: TaskSpec = field(default_factory=default_task_spec)
    explorer_port: int | None = None  # run `fedchain explorer` on this port for the whole demo


@dataclass
class RoundRow:
    round: int
    opened_at: float
    submitted: int = 0
    accepted: int | None = None
    rejected: int | None = None
    accuracy: float | None = None
    loss: float | None = None
    gas: int = 0
    seconds: float | None = None
    max_train_seconds: float | None = None
    model_cid: str = ""


def run_demo(
    options: DemoOptions,
    console: Console | None = None,
    live: bool = True,
    after: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the demo and return its summary (what `--json` prints).

    `after(summary)` runs before the devnet (and the explorer, if any) stop: `fedchain demo --explorer` waits there
    for Ctrl-C so the run can be explored.
    """
    if options.devices < 1 or options.rounds < 1:
        raise ValueError("need at least one device and one round")
    console = console or Console(stderr=True)
    started = time.perf_counter()
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    net = Devnet(workdir, options.chain, num_accounts=FIRST_DEVICE_INDEX + options.devices + 2)
    processes: list[subprocess.Popen[bytes]] = []
    explorer: subprocess.Popen[bytes] | None = None
    explorer_url: str | None = None
    try:
        state = net.start()
        state.save(workdir / "devnet.json")
        console.print(f"devnet: {options.chain} at {state.rpc_url}, IPFS at {state.ipfs_api} (logs in {workdir}/logs)")
        if options.explorer_port is not None:
            explorer, explorer_url = _start_explorer(options, state, workdir)
            console.print(f"[bold]explorer: {explorer_url}[/] (follow the rounds live in a browser)")
        w3 = connect(state.rpc_url)
        ipfs = IpfsClient(state.ipfs_api)
        device_addresses = state.accounts[FIRST_DEVICE_INDEX : FIRST_DEVICE_INDEX + options.devices]
        plan = TaskPlan(
            spec=options.spec,
            num_rounds=options.rounds,
            min_updates=default_min_updates(options.devices),
            max_updates=options.devices,
            round_duration=options.round_duration,
            devices=tuple(device_addresses),
            aggregators=(state.accounts[AGGREGATOR_INDEX],),
        )
        deployed = create_task(w3, devnet_account(ADMIN_INDEX), ipfs, plan)
        console.print(f"task {deployed.address}: {options.rounds} rounds, {options.devices} devices")
        processes = _launch(options, state, deployed.address, workdir / "logs")
        rows = _follow(options, w3, ipfs, deployed.address, processes, console, live)
        for proc in processes:  # they exit on TaskFinished; give them a moment
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                terminate(proc)
        task = TaskClient(w3, deployed.address)
        final_cid = digest_to_cid(task.global_model_digest())
        ipfs.cat(final_cid)  # verified against its CID by the client: the model on IPFS is the one on chain
        gas = _gas_per_function(w3, task, deployed.block_number)
        gas["deploy"] = deployed.gas["deploy"]
        centralized = _centralized_accuracy(options)
        summary = _summary(options, deployed.address, rows, gas, final_cid, centralized, time.perf_counter() - started)
        if explorer_url is not None:
            summary["explorer_url"] = explorer_url
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        console.print(
            f"final accuracy {summary['final_accuracy']:.4f} (centralized reference {centralized:.4f}); "
            f"final model {final_cid}"
        )
        if after is not None:
            after(summary)
        return summary
    finally:
        for proc in processes:
            terminate(proc)
        if explorer is not None:
            terminate(explorer)
        net.stop()


def _start_explorer(options: DemoOptions, state: DevnetState, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`fedchain explorer` against the demo's devnet, as its own process; returns it once it answers."""
    import httpx

    port = options.explorer_port or 8000
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "fedchain.cli", "explorer", "--port", str(port)]
    cmd += ["--rpc-url", state.rpc_url, "--ipfs-api", state.ipfs_api, "--index", str(workdir / "explorer.sqlite")]
    with open(workdir / "logs" / "explorer.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the explorer exited with code {proc.returncode} (is port {port} in use? --explorer-port picks "
                f"another); see {workdir}/logs/explorer.log"
            )
        try:
            if httpx.get(url + "api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    terminate(proc)
    raise TimeoutError(f"the explorer did not answer at {url} within 60s; see {workdir}/logs/explorer.log")


def _launch(options: DemoOptions, state: DevnetState, task: str, logs: Path) -> list[subprocess.Popen[bytes]]:
    common = ["--task", task, "--rpc-url", state.rpc_url, "--ipfs-api", state.ipfs_api]
    commands = [
        (
            "aggregator",
            [sys.executable, "-m", "fedchain.cli", "aggregator", *common, "--account", str(AGGREGATOR_INDEX)],
        )
    ]
    for i in range(options.devices):
        cmd = [sys.executable, "-m", "fedchain.cli", "device", *common]
        cmd += ["--account", str(FIRST_DEVICE_INDEX + i), "--partition", f"{i}/{options.devices}"]
        cmd += ["--online" if options.online else "--no-online"]
        if options.non_iid is not None:
            cmd += ["--non-iid", str(options.non_iid)]
        commands.append((f"device-{i}", cmd))
    processes = []
    for name, cmd in commands:
        with open(logs / f"{name}.log", "ab") as log:
            processes.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    return processes


def _follow(
    options: DemoOptions,
    w3: Web3,
    ipfs: IpfsClient,
    task_address: str,
    processes: list[subprocess.Popen[bytes]],
    console: Console,
    live: bool,
) -> dict[int, RoundRow]:
    """Watch the task's events until it finishes, evaluating each committed model independently."""
    task = TaskClient(w3, task_address)
    follower = EventFollower(w3, task_address, task.abi)
    _, test = load_dataset(options.spec.dataset)
    model = build_model(options.spec.model, seed=options.spec.seed)
    rows: dict[int, RoundRow] = {}
    gas_by_tx: dict[str, int] = {}
    deadline = time.monotonic() + options.timeout
    finished = False
    view = Live(_table(rows, options), console=console, refresh_per_second=4, transient=False) if live else None
    if view is not None:
        view.start()
    try:
        while not finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo did not finish within {options.timeout:.0f}s; logs in {options.workdir}")
            if processes and processes[0].poll() is not None:
                raise RuntimeError(f"the aggregator exited early (code {processes[0].returncode}); see its log")
            for event in follower.poll():
                now = time.perf_counter()
                r = event.args.get("round")
                if event.name == "RoundOpened":
                    rows[r] = RoundRow(round=r, opened_at=now)
                elif r in rows and event.name in ("UpdateSubmitted", "RoundExtended", "AggregateCommitted"):
                    row = rows[r]
                    if event.tx_hash not in gas_by_tx:
                        gas_by_tx[event.tx_hash] = w3.eth.get_transaction_receipt(event.tx_hash)["gasUsed"]
                        row.gas += gas_by_tx[event.tx_hash]
                    if event.name == "UpdateSubmitted":
                        row.submitted += 1
                    elif event.name == "AggregateCommitted":
                        row.seconds = now - row.opened_at
                        _record_aggregate(row, event.args, ipfs, model, test)
                elif event.name in ("TaskFinished", "TaskCancelled"):
                    finished = True
            if view is not None:
                view.update(_table(rows, options))
            if not finished:
                time.sleep(0.1)
    finally:
        if view is not None:
            view.stop()
    if task.current_round().phase != Phase.FINISHED:
        raise RuntimeError("the task was cancelled")
    return rows


def _record_aggregate(row: RoundRow, args: dict[str, Any], ipfs: IpfsClient, model: Any, test: Any) -> None:
    row.model_cid = digest_to_cid(bytes(args["modelDigest"]))
    row.accepted = int(args["acceptedUpdates"])
    report = json.loads(ipfs.cat(digest_to_cid(bytes(args["reportDigest"])), max_size=16 << 20))
    row.rejected = len(report.get("rejected", []))
    train_times = [a["train_seconds"] for a in report.get("accepted", []) if "train_seconds" in a]
    row.max_train_seconds = max(train_times) if train_times else None
    set_weights(model, ipfs.get_weights(row.model_cid))
    result = evaluate(model, test)
    row.accuracy, row.loss = result.accuracy, result.loss


def _table(rows: dict[int, RoundRow], options: DemoOptions) -> Table:
    table = Table(title=f"fedchain demo: {options.devices} devices on {options.chain}", expand=False)
    for col in ("round", "accuracy", "loss", "updates", "gas", "seconds"):
        table.add_column(col, justify="right")
    for r in sorted(rows):
        row = rows[r]
        updates = f"{row.accepted}/{row.submitted}" if row.accepted is not None else f"{row.submitted}…"
        table.add_row(
            f"{r}/{options.rounds}",
            f"{row.accuracy:.4f}" if row.accuracy is not None else "…",
            f"{row.loss:.4f}" if row.loss is not None else "…",
            updates,
            f"{row.gas:,}",
            f"{row.seconds:.2f}" if row.seconds is not None else "…",
        )
    return table


def _gas_per_function(w3: Web3, task: TaskClient, from_block: int) -> dict[str, int]:
    """Average gas of every function called on the task, from the receipts of its transactions."""
    used: dict[str, list[int]] = defaultdict(list)
    for number in range(from_block, w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["to"] is None or Web3.to_checksum_address(tx["to"]) != task.address:
                continue
            fn, _ = task.contract.decode_function_input(tx["input"])
            used[fn.fn_name].append(w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])
    return {name: round(statistics.fmean(values)) for name, values in sorted(used.items())}


def _centralized_accuracy(options: DemoOptions) -> float:
    """The same model trained on the union of the devices' data: the reference a federated run aims for."""
    train, test = load_dataset(options.spec.dataset)
    epochs = options.rounds * options.spec.train.local_epochs
    return train_centralized(options.spec, train, test, epochs=epochs).accuracy


def _summary(
    options: DemoOptions,
    task: str,
    rows: dict[int, RoundRow],
    gas: dict[str, int],
    final_cid: str,
    centralized: float,
    total_seconds: float,
) -> dict[str, Any]:
    ordered = [rows[r] for r in sorted(rows)]
    accuracies = [row.accuracy for row in ordered]
    round_seconds = [round(row.seconds or 0.0, 3) for row in ordered]
    overhead = [
        round((row.seconds or 0.0) - (row.max_train_seconds or 0.0), 3) for row in ordered if row.seconds is not None
    ]
    return {
        "task": task,
        "rounds": options.rounds,
        "devices": options.devices,
        "chain": options.chain,
        "non_iid_alpha": options.non_iid,
        "online": options.online,
        "final_accuracy": accuracies[-1] if accuracies else None,
        "centralized_accuracy": centralized,
        "accuracy_per_round": accuracies,
        "loss_per_round": [row.loss for row in ordered],
        "updates_per_round": [row.accepted for row in ordered],
        "rejected_per_round": [row.rejected for row in ordered],
        "round_seconds": round_seconds,
        "train_seconds_per_round": [row.max_train_seconds for row in ordered],
        "overhead_seconds_per_round": overhead,
        "gas_per_round": [row.gas for row in ordered],
        "gas": gas,
        "final_model_cid": final_cid,
        "total_seconds": round(total_seconds, 2),
    }
