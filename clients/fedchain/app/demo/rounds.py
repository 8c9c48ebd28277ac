"""Following a demo's task round by round: its events, each finalised model evaluated independently, the live
table, gas per round and per function, and the run's summary with its centralized and non-private references."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fedchain.aggregator import SUSPENDED_EXIT_CODE
from fedchain.app.demo.options import FIRST_DEVICE_INDEX, DemoOptions
from fedchain.app.demo.processes import restart_crashed_pools

# torch and web3 are imported where they are used (see run.py).
if TYPE_CHECKING:
    from web3 import Web3

    from fedchain.chain import TaskClient
    from fedchain.learning.types import Weights
    from fedchain.storage import IpfsClient

# Events whose transactions count towards a round's gas.
ROUND_TX_EVENTS = (
    "UpdateSubmitted",
    "UpdateBatchSubmitted",
    "RoundExtended",
    "ResultCommitted",
    "RevealOpened",
    "ResultRevealed",
    "AggregateCommitted",
    "AggregationFailed",
)


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
    failed: bool = False
    attackers_accepted: int | None = None


def follow_rounds(
    options: DemoOptions,
    w3: Web3,
    ipfs: IpfsClient,
    task_address: str,
    processes: list[subprocess.Popen[bytes]],
    console: Console,
    live: bool,
    from_block: int = 0,
    round1_opened_at: float | None = None,
    evaluate: Callable[[Weights], tuple[float, float]] | None = None,
) -> tuple[dict[int, RoundRow], dict[str, int]]:
    """Watch the task's events until it finishes, evaluating each finalised model independently.

    `evaluate(weights)` gives a model's (accuracy, loss) on the task's held-out set (the demo's helper process);
    by default the model is evaluated here. Returns the rows and the AggregatorFault events per aggregator."""
    from fedchain.chain import EventFollower, Phase, TaskClient
    from fedchain.chain.notify import EventNotifier

    if evaluate is None:
        evaluate = _local_evaluation(options)
    task = TaskClient(w3, task_address)
    follower = EventFollower(w3, task_address, task.abi, from_block=from_block)
    notifier = EventNotifier(options_rpc_url(w3), [task.address], poll_interval=0.1)
    round_txs: dict[int, set[str]] = defaultdict(set)
    pool_restarts = 0
    rows: dict[int, RoundRow] = {}
    faults: dict[str, int] = defaultdict(int)
    attackers = {a.lower() for a in _device_addresses(options)[: options.attacker_count()]}
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
            for proc in processes[: options.aggregators]:
                # a suspended aggregator (a liar after maxAggregatorFaults faults) stops by design; the others agree
                if proc.poll() is not None and proc.returncode != SUSPENDED_EXIT_CODE:
                    raise RuntimeError(f"an aggregator exited early (code {proc.returncode}); see its log")
            pool_restarts += restart_crashed_pools(processes, options.workdir / "logs", console)
            for event in follower.poll():
                now = time.perf_counter()
                r = event.args.get("round")
                if event.name == "RoundOpened":
                    opened = round1_opened_at if r == 1 and round1_opened_at is not None else now
                    rows[r] = RoundRow(round=r, opened_at=opened)
                elif event.name == "AggregatorFault":
                    faults[event.args["aggregator"]] += 1
                elif r in rows and event.name in ROUND_TX_EVENTS:
                    row = rows[r]
                    round_txs[r].add(event.tx_hash)  # gas is read once the run is over: receipts cost time
                    if event.name == "UpdateSubmitted":
                        row.submitted += 1
                    elif event.name == "UpdateBatchSubmitted":
                        row.submitted += int(event.args["entries"])
                    elif event.name == "AggregateCommitted":
                        row.seconds = now - row.opened_at
                        _record_aggregate(row, event.args, ipfs, evaluate, attackers)
                    elif event.name == "AggregationFailed":
                        row.seconds = now - row.opened_at
                        row.failed = True
                elif event.name in ("TaskFinished", "TaskCancelled"):
                    finished = True
            if view is not None:
                view.update(_table(rows, options))
            if not finished:
                notifier.wait(1.0)
        for r, hashes in round_txs.items():
            rows[r].gas = sum(_receipt_gas(w3, hashes, gas_by_tx))
        if view is not None:  # the table stays on screen: show it with the gas, read now that the run is over
            view.update(_table(rows, options, gas_known=True))
    finally:
        notifier.close()
        if view is not None:
            view.stop()
    if task.current_round().phase != Phase.FINISHED:
        raise RuntimeError("the task was cancelled")
    faults["pool_restarts"] = pool_restarts
    return rows, dict(faults)


def options_rpc_url(w3: Web3) -> str:
    """The HTTP endpoint a connection talks to (for the WebSocket beside it)."""
    return str(getattr(w3.provider, "endpoint_uri", "") or "")


def _receipt_gas(w3: Web3, hashes: set[str], cache: dict[str, int]) -> list[int]:
    missing = [h for h in hashes if h not in cache]
    for start in range(0, len(missing), 500):
        chunk = missing[start : start + 500]
        with w3.batch_requests() as batch:
            for h in chunk:
                batch.add(w3.eth.get_transaction_receipt(h))
            receipts = batch.execute()
        cache.update({h: int(rcpt["gasUsed"]) for h, rcpt in zip(chunk, receipts, strict=True)})
    return [cache[h] for h in hashes]


def _device_addresses(options: DemoOptions) -> list[str]:
    from fedchain.chain.accounts import devnet_addresses

    return devnet_addresses(FIRST_DEVICE_INDEX + options.devices)[FIRST_DEVICE_INDEX:]


def _local_evaluation(options: DemoOptions) -> Callable[[Weights], tuple[float, float]]:
    """(accuracy, loss) of a model's weights on the task's held-out set, in this process (imports torch)."""
    from fedchain.learning.data import load_dataset
    from fedchain.learning.model import build_model, set_weights
    from fedchain.learning.train import evaluate

    _, test = load_dataset(options.spec.dataset)
    model = build_model(options.spec.model, seed=options.spec.seed)

    def on_test_set(weights: Weights) -> tuple[float, float]:
        set_weights(model, weights)
        result = evaluate(model, test)
        return result.accuracy, result.loss

    return on_test_set


def _record_aggregate(
    row: RoundRow,
    args: dict[str, Any],
    ipfs: IpfsClient,
    evaluate: Callable[[Weights], tuple[float, float]],
    attackers: set[str],
) -> None:
    from fedchain.storage import digest_to_cid

    row.model_cid = digest_to_cid(bytes(args["modelDigest"]))
    row.accepted = int(args["acceptedUpdates"])
    report = json.loads(ipfs.cat(digest_to_cid(bytes(args["reportDigest"])), max_size=16 << 20))
    row.rejected = len(report.get("rejected", []))
    row.attackers_accepted = sum(1 for a in report.get("accepted", []) if a["device"].lower() in attackers)
    train_times = [a["train_seconds"] for a in report.get("accepted", []) if "train_seconds" in a]
    row.max_train_seconds = max(train_times) if train_times else None
    row.accuracy, row.loss = evaluate(ipfs.get_weights(row.model_cid))


def _table(rows: dict[int, RoundRow], options: DemoOptions, gas_known: bool = False) -> Table:
    table = Table(title=f"fedchain demo: {options.devices} devices on {options.chain}", expand=False)
    for col in ("round", "accuracy", "loss", "updates", "gas", "seconds"):
        table.add_column(col, justify="right")
    for r in sorted(rows):
        row = rows[r]
        updates = f"{row.accepted}/{row.submitted}" if row.accepted is not None else f"{row.submitted}…"
        if row.failed:
            updates = f"no agreement ({row.submitted})"
        table.add_row(
            f"{r}/{options.rounds}",
            f"{row.accuracy:.4f}" if row.accuracy is not None else "…",
            f"{row.loss:.4f}" if row.loss is not None else "…",
            updates,
            f"{row.gas:,}" if gas_known else "…",  # receipts are read once the run is over (they cost time)
            f"{row.seconds:.2f}" if row.seconds is not None else "…",
        )
    return table


def gas_per_function(w3: Web3, task: TaskClient, from_block: int) -> dict[str, int]:
    """Average gas of every function called on the task, from the receipts of its transactions."""
    from web3 import Web3

    used: dict[str, list[int]] = defaultdict(list)
    for number in range(from_block, w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["to"] is None or Web3.to_checksum_address(tx["to"]) != task.address:
                continue
            fn, _ = task.contract.decode_function_input(tx["input"])
            used[fn.fn_name].append(w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])
    return {name: round(statistics.fmean(values)) for name, values in sorted(used.items())}


def non_private_accuracy(options: DemoOptions) -> float:
    """Final accuracy of plain FedAvg on the demo's devices, data split and rounds, simulated in this process."""
    from fedchain.learning.aggregation.fedavg import FedAvg
    from fedchain.learning.simulation import simulate

    return float(
        simulate(FedAvg(), "none", devices=options.devices, attackers=0, alpha=options.non_iid, rounds=options.rounds)
    )


def centralized_accuracy(options: DemoOptions) -> float:
    """The same model trained on the union of the devices' data: the reference a federated run aims for."""
    from fedchain.learning.data import load_dataset
    from fedchain.learning.train import train_centralized

    train, test = load_dataset(options.spec.dataset)
    epochs = options.rounds * options.spec.train.local_epochs
    return train_centralized(options.spec, train, test, epochs=epochs).accuracy


def summarise(
    options: DemoOptions,
    task: str,
    rows: dict[int, RoundRow],
    gas: dict[str, int],
    final_cid: str,
    centralized: float,
    total_seconds: float,
) -> dict[str, Any]:
    ordered = [rows[r] for r in sorted(rows) if not rows[r].failed and rows[r].accepted is not None]
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
        "attackers_accepted_per_round": [row.attackers_accepted for row in ordered],
        "round_seconds": round_seconds,
        "train_seconds_per_round": [row.max_train_seconds for row in ordered],
        "overhead_seconds_per_round": overhead,
        "gas_per_round": [row.gas for row in ordered],
        "gas": gas,
        "final_model_cid": final_cid,
        "total_seconds": round(total_seconds, 2),
    }
