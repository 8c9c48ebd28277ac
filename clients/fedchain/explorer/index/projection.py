"""The task tables as a projection of FederatedTask's events: one small handler per event, looked up in a table.

`apply_event` folds one decoded log into tasks, participants, rounds, updates and round_aggregators, in log order.
The same code runs while indexing and when re-deriving after a reorganisation, so both end in the same state.

Aggregation is k-of-n commit-reveal among the task's aggregators: every ResultCommitted and ResultRevealed lands in
`round_aggregators` (one row per round and aggregator: commitment, revealed model and report, whether it agrees
with the final result, AggregatorFault), and the round goes open -> aggregating (commit window) -> revealing ->
committed (k reveals agreed: AggregateCommitted) or failed (AggregationFailed: the next round retries it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedchain.explorer.index.records import AGGREGATOR_ROLE, DEFAULT_ADMIN_ROLE, Change, cid
from fedchain.explorer.index.reports import apply_report

# Events that attribute their transaction's gas to a round. The finalising reveal and a failed round's window close
# also open the next round: they count to the round they end, not there. A late reveal (after the round was final,
# possibly after later rounds opened) counts to the round it reveals.
ROUND_GAS_EVENTS = frozenset(
    {
        "UpdateSubmitted",
        "UpdateBatchSubmitted",
        "RoundExtended",
        "RoundReadyForAggregation",
        "ResultCommitted",
        "RevealOpened",
        "ResultRevealed",
        "AggregateCommitted",
        "AggregatorFault",
        "AggregationFailed",
        "SetupSubmitted",
        "SetupSetFrozen",
        "UnmaskSharesSubmitted",
    }
)


@dataclass(frozen=True)
class Event:
    """One decoded FederatedTask log, with what its handler needs to know about its transaction."""

    c: sqlite3.Connection
    name: str
    task: str
    block: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]
    created: str | None  # the contract the transaction created, if any
    sender: str | None


@dataclass(frozen=True)
class RoundEvent(Event):
    """An event of one round (it has a `round` argument), with its block's time."""

    round: int = 0
    timestamp: int | None = None


# ---------------------------------------------------------------------- task-level events


def on_task_configured(e: Event) -> Change | None:
    if e.created != e.task:
        return None  # only the constructor's own log configures a task
    a = e.args
    e.c.execute(
        "INSERT OR REPLACE INTO tasks(address, created_block, created_tx, creator, admin, model_spec_cid, "
        "initial_model_cid, num_rounds, min_updates, max_updates, round_duration, strategy_id, phase, "
        "current_round, aggregator_threshold, aggregation_duration) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?, 'registering', 0, ?, ?)",
        (
            e.task,
            e.block,
            e.tx_hash,
            e.sender,
            a["admin"],
            cid(a["modelSpecDigest"]),
            cid(a["initialModelDigest"]),
            a["numRounds"],
            a["minUpdates"],
            a["maxUpdates"],
            a["roundDuration"],
            a["strategyId"],
            a.get("aggregatorThreshold"),
            a.get("aggregationDuration"),
        ),
    )
    e.c.execute(
        "INSERT OR REPLACE INTO participants VALUES (?,?, 'admin', 'active', 0, ?, ?)",
        (e.task, a["admin"], e.block, e.block),
    )
    return Change("task", {"task": e.task, "phase": "registering"})


def on_role_changed(e: Event) -> Change | None:
    role = {AGGREGATOR_ROLE: "aggregator", DEFAULT_ADMIN_ROLE: "admin"}.get(e.args["role"], e.args["role"])
    status = "active" if e.name == "RoleGranted" else "revoked"
    current = e.c.execute("SELECT current_round FROM tasks WHERE address = ?", (e.task,)).fetchone()[0]
    e.c.execute(
        "INSERT INTO participants VALUES (?,?,?,?,?,?,?) ON CONFLICT(task, address, role) DO UPDATE SET "
        "status = excluded.status, changed_block = excluded.changed_block",
        (e.task, e.args["account"], role, status, current, e.block, e.block),
    )
    return None


def on_device_join_requested(e: Event) -> Change | None:
    e.c.execute(
        "INSERT INTO participants VALUES (?,?, 'device', 'requested', NULL, ?, ?) "
        "ON CONFLICT(task, address, role) DO UPDATE SET status = 'requested', "
        "changed_block = excluded.changed_block",
        (e.task, e.args["device"], e.block, e.block),
    )
    return None


def on_device_approved(e: Event) -> Change | None:
    e.c.execute(
        "INSERT INTO participants VALUES (?,?, 'device', 'approved', ?, ?, ?) "
        "ON CONFLICT(task, address, role) DO UPDATE SET status = 'approved', "
        "since_round = excluded.since_round, since_block = excluded.since_block, "
        "changed_block = excluded.changed_block",
        (e.task, e.args["device"], e.args["round"], e.block, e.block),
    )
    return None


def on_device_removed(e: Event) -> Change | None:
    status = "left" if e.args["by"] == e.args["device"] else "removed"
    e.c.execute(
        "UPDATE participants SET status = ?, changed_block = ? WHERE task = ? AND address = ? AND role = 'device'",
        (status, e.block, e.task, e.args["device"]),
    )
    return None


def on_task_finished(e: Event) -> Change | None:
    e.c.execute(
        "UPDATE tasks SET phase = 'finished', final_model_cid = ?, ended_block = ? WHERE address = ?",
        (cid(e.args["finalModelDigest"]), e.block, e.task),
    )
    return Change("task", {"task": e.task, "phase": "finished"})


def on_task_cancelled(e: Event) -> Change | None:
    e.c.execute("UPDATE tasks SET phase = 'cancelled', ended_block = ? WHERE address = ?", (e.block, e.task))
    e.c.execute(
        "UPDATE rounds SET state = 'cancelled' WHERE task = ? AND round = ? AND state NOT IN ('committed', 'failed')",
        (e.task, e.args["round"]),
    )
    return Change("task", {"task": e.task, "phase": "cancelled", "round": e.args["round"]})


# ---------------------------------------------------------------------- round events


def on_round_opened(e: RoundEvent) -> None:
    e.c.execute(
        "INSERT OR REPLACE INTO rounds(task, round, state, opened_block, opened_tx, opened_at, "
        "global_model_cid, deadline, gas) VALUES (?,?, 'open', ?,?,?,?,?, "
        "COALESCE((SELECT gas FROM rounds WHERE task = ? AND round = ?), 0))",
        (
            e.task,
            e.round,
            e.block,
            e.tx_hash,
            e.timestamp,
            cid(e.args["globalModelDigest"]),
            e.args["deadline"],
            e.task,
            e.round,
        ),
    )
    e.c.execute("UPDATE tasks SET phase = 'open', current_round = ? WHERE address = ?", (e.round, e.task))


def on_update_submitted(e: RoundEvent) -> None:
    e.c.execute(
        "INSERT OR REPLACE INTO updates VALUES (?,?,?,?,?,?,?,?, 'pending', NULL, NULL, NULL)",
        (
            e.task,
            e.round,
            e.args["device"],
            cid(e.args["updateDigest"]),
            e.args["numSamples"],
            e.tx_hash,
            e.block,
            e.log_index,
        ),
    )
    e.c.execute("UPDATE rounds SET received = received + 1 WHERE task = ? AND round = ?", (e.task, e.round))


def on_update_batch_submitted(e: RoundEvent) -> None:
    # A relayed batch: its entries count as received (the relayer's claim, as on chain); which of them the
    # aggregators accepted is in the round's report. The entries themselves are in the batch file on IPFS.
    e.c.execute(
        "UPDATE rounds SET received = received + ? WHERE task = ? AND round = ?", (e.args["entries"], e.task, e.round)
    )


def on_round_extended(e: RoundEvent) -> None:
    e.c.execute(
        "UPDATE rounds SET deadline = ?, extensions = extensions + 1 WHERE task = ? AND round = ?",
        (e.args["newDeadline"], e.task, e.round),
    )


def on_round_ready_for_aggregation(e: RoundEvent) -> None:
    # The commit window opens; its deadline is not in the event: the block's time plus aggregationDuration.
    # n is the number of aggregators holding the role now (the contract's aggregatorCount).
    e.c.execute(
        "UPDATE rounds SET state = 'aggregating', ready_block = ?, ready_tx = ?, total_samples = ?, "
        "inputs_hash = ?, commit_deadline = ? + (SELECT aggregation_duration FROM tasks WHERE address = ?), "
        "aggregators = (SELECT COUNT(*) FROM participants WHERE task = ? AND role = 'aggregator' "
        "AND status = 'active') WHERE task = ? AND round = ?",
        (
            e.block,
            e.tx_hash,
            e.args["totalSamples"],
            e.args["inputsHash"],
            e.timestamp,
            e.task,
            e.task,
            e.task,
            e.round,
        ),
    )
    e.c.execute("UPDATE tasks SET phase = 'aggregating' WHERE address = ? AND current_round = ?", (e.task, e.round))


def on_result_committed(e: RoundEvent) -> None:
    e.c.execute(
        "INSERT INTO round_aggregators(task, round, aggregator, commitment, commit_tx, commit_block, "
        "commit_log, committed_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(task, round, aggregator) DO UPDATE "
        "SET commitment = excluded.commitment, commit_tx = excluded.commit_tx, "
        "commit_block = excluded.commit_block, commit_log = excluded.commit_log, "
        "committed_at = excluded.committed_at",
        (e.task, e.round, e.args["aggregator"], e.args["commitment"], e.tx_hash, e.block, e.log_index, e.timestamp),
    )
    e.c.execute("UPDATE rounds SET commits = commits + 1 WHERE task = ? AND round = ?", (e.task, e.round))


def on_reveal_opened(e: RoundEvent) -> None:
    e.c.execute(
        "UPDATE rounds SET state = 'revealing', reveal_block = ?, reveal_tx = ?, reveal_opened_at = ?, "
        "reveal_deadline = ?, commits = ? WHERE task = ? AND round = ?",
        (e.block, e.tx_hash, e.timestamp, e.args["deadline"], e.args["commits"], e.task, e.round),
    )
    e.c.execute("UPDATE tasks SET phase = 'revealing' WHERE address = ? AND current_round = ?", (e.task, e.round))


def on_result_revealed(e: RoundEvent) -> None:
    """In the reveal window a reveal counts towards the round's reveals; after the round was finalised (a late
    reveal, possibly rounds later) it is compared with the final result at once."""
    rnd = e.c.execute(
        "SELECT state, model_cid, accepted_updates FROM rounds WHERE task = ? AND round = ?", (e.task, e.round)
    ).fetchone()
    model_cid = cid(e.args["modelDigest"])
    late = rnd is not None and rnd["state"] == "committed"
    agrees = None
    if late:
        agrees = int(model_cid == rnd["model_cid"] and e.args["acceptedUpdates"] == rnd["accepted_updates"])
    e.c.execute(
        "INSERT INTO round_aggregators(task, round, aggregator, model_cid, report_cid, accepted, reveal_tx, "
        "reveal_block, reveal_log, revealed_at, late, agrees, final_model_cid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(task, round, aggregator) DO UPDATE SET model_cid = excluded.model_cid, "
        "report_cid = excluded.report_cid, accepted = excluded.accepted, reveal_tx = excluded.reveal_tx, "
        "reveal_block = excluded.reveal_block, reveal_log = excluded.reveal_log, "
        "revealed_at = excluded.revealed_at, late = excluded.late, "
        "agrees = CASE WHEN fault = 1 THEN 0 ELSE excluded.agrees END, "
        "final_model_cid = COALESCE(final_model_cid, excluded.final_model_cid)",
        (
            e.task,
            e.round,
            e.args["aggregator"],
            model_cid,
            cid(e.args["reportDigest"]),
            e.args["acceptedUpdates"],
            e.tx_hash,
            e.block,
            e.log_index,
            e.timestamp,
            int(late),
            agrees,
            rnd["model_cid"] if late else None,
        ),
    )
    if not late:
        e.c.execute("UPDATE rounds SET reveals = reveals + 1 WHERE task = ? AND round = ?", (e.task, e.round))


def on_aggregator_fault(e: RoundEvent) -> None:
    e.c.execute(
        "INSERT INTO round_aggregators(task, round, aggregator, fault, fault_tx, fault_block, fault_count, "
        "final_model_cid, agrees) VALUES (?,?,?, 1, ?,?,?,?, 0) ON CONFLICT(task, round, aggregator) "
        "DO UPDATE SET fault = 1, fault_tx = excluded.fault_tx, fault_block = excluded.fault_block, "
        "fault_count = excluded.fault_count, final_model_cid = excluded.final_model_cid, agrees = 0",
        (
            e.task,
            e.round,
            e.args["aggregator"],
            e.tx_hash,
            e.block,
            e.args["faults"],
            cid(e.args["finalModelDigest"]),
        ),
    )
    e.c.execute("UPDATE rounds SET faults = faults + 1 WHERE task = ? AND round = ?", (e.task, e.round))


def on_aggregation_failed(e: RoundEvent) -> None:
    # The next round (RoundOpened, same transaction) retries with the unchanged global model.
    e.c.execute(
        "UPDATE rounds SET state = 'failed', failed_block = ?, failed_tx = ?, failed_at = ?, commits = ?, "
        "reveals = ? WHERE task = ? AND round = ?",
        (e.block, e.tx_hash, e.timestamp, e.args["commits"], e.args["reveals"], e.task, e.round),
    )
    e.c.execute("UPDATE tasks SET failed_rounds = failed_rounds + 1 WHERE address = ?", (e.task,))
    # No commitment at all: a secure round short of minUpdates at its deadline, or no aggregator committed.
    reason = (
        "the aggregators did not agree"
        if int(e.args["commits"]) > 0
        else "the round failed before any result was committed (too few updates, or no aggregator answered)"
    )
    e.c.execute(
        "UPDATE updates SET status = 'not-aggregated', reason = ? WHERE task = ? AND round = ? AND status = 'pending'",
        (reason, e.task, e.round),
    )


def on_aggregate_committed(e: RoundEvent) -> None:
    report_cid = cid(e.args["reportDigest"])
    model_cid = cid(e.args["modelDigest"])
    accepted = e.args["acceptedUpdates"]
    e.c.execute(
        "UPDATE rounds SET state = 'committed', committed_block = ?, committed_tx = ?, committed_at = ?, "
        "aggregator = ?, model_cid = ?, report_cid = ?, accepted_updates = ?, inputs_hash = ? "
        "WHERE task = ? AND round = ?",
        (
            e.block,
            e.tx_hash,
            e.timestamp,
            e.args["aggregator"],
            model_cid,
            report_cid,
            accepted,
            e.args["inputsHash"],
            e.task,
            e.round,
        ),
    )
    e.c.execute(
        "UPDATE updates SET status = 'committed' WHERE task = ? AND round = ? AND status = 'pending'",
        (e.task, e.round),
    )
    # Which reveals so far agree with the final result (model and accepted count: the contract's key within the
    # reveal window, where every reveal used the round's inputs hash). Faults follow as their own events.
    e.c.execute(
        "UPDATE round_aggregators SET agrees = CASE WHEN model_cid = ? AND accepted = ? THEN 1 ELSE 0 END, "
        "final_model_cid = ? WHERE task = ? AND round = ? AND model_cid IS NOT NULL AND fault = 0",
        (model_cid, accepted, model_cid, e.task, e.round),
    )
    e.c.execute("INSERT OR IGNORE INTO reports(cid, task, round) VALUES (?,?,?)", (report_cid, e.task, e.round))
    stored = e.c.execute("SELECT body FROM reports WHERE cid = ?", (report_cid,)).fetchone()
    if stored is not None and stored["body"]:
        apply_report(e.c, report_cid, json.loads(stored["body"]))


TASK_HANDLERS: dict[str, Callable[[Event], Change | None]] = {
    "RoleGranted": on_role_changed,
    "RoleRevoked": on_role_changed,
    "DeviceJoinRequested": on_device_join_requested,
    "DeviceApproved": on_device_approved,
    "DeviceRemoved": on_device_removed,
    "TaskFinished": on_task_finished,
    "TaskCancelled": on_task_cancelled,
}
# A round event without a handler here (SetupSubmitted, EpsilonSpent, ...) still counts its gas and shows as a change.
ROUND_HANDLERS: dict[str, Callable[[RoundEvent], None]] = {
    "RoundOpened": on_round_opened,
    "UpdateSubmitted": on_update_submitted,
    "UpdateBatchSubmitted": on_update_batch_submitted,
    "RoundExtended": on_round_extended,
    "RoundReadyForAggregation": on_round_ready_for_aggregation,
    "ResultCommitted": on_result_committed,
    "RevealOpened": on_reveal_opened,
    "ResultRevealed": on_result_revealed,
    "AggregatorFault": on_aggregator_fault,
    "AggregationFailed": on_aggregation_failed,
    "AggregateCommitted": on_aggregate_committed,
}


def apply_event(
    c: sqlite3.Connection,
    row: Any,
    args: dict[str, Any] | None,
    created: str | None,
    sender: str | None,
) -> Change | None:
    """Fold one decoded FederatedTask log (a `logs` row: name, address, block_number, tx_hash, log_index) into the
    task tables; returns what a live page may show."""
    if args is None or row["name"] is None:
        return None
    event = Event(
        c, row["name"], row["address"], row["block_number"], row["tx_hash"], row["log_index"], args, created, sender
    )
    if event.name == "TaskConfigured":
        return on_task_configured(event)
    if c.execute("SELECT 1 FROM tasks WHERE address = ?", (event.task,)).fetchone() is None:
        return None  # a contract that is not (yet) a known task
    task_handler = TASK_HANDLERS.get(event.name)
    if task_handler is not None:
        return task_handler(event)
    r = args.get("round")
    if r is None:
        return None
    if event.name in ROUND_GAS_EVENTS:
        _attribute_gas(c, event.task, r, event.tx_hash)
    round_event = RoundEvent(**vars(event), round=r, timestamp=_timestamp(c, event.block))
    round_handler = ROUND_HANDLERS.get(event.name)
    if round_handler is not None:
        round_handler(round_event)
    state = c.execute("SELECT state, received FROM rounds WHERE task = ? AND round = ?", (event.task, r)).fetchone()
    return Change(
        "round",
        {
            "task": event.task,
            "round": r,
            "event": event.name,
            "state": state["state"] if state else None,
            "received": state["received"] if state else None,
            "block": event.block,
        },
    )


def _timestamp(c: sqlite3.Connection, block: int) -> int | None:
    row = c.execute("SELECT timestamp FROM blocks WHERE number = ?", (block,)).fetchone()
    return None if row is None else int(row[0])


def _attribute_gas(c: sqlite3.Connection, task: str, r: int, tx_hash: str) -> None:
    """Count a transaction's gas once towards a round (a transaction with several of its events counts once)."""
    cur = c.execute("INSERT OR IGNORE INTO round_txs VALUES (?,?,?)", (task, r, tx_hash))
    if cur.rowcount:
        gas = c.execute("SELECT gas_used FROM txs WHERE hash = ?", (tx_hash,)).fetchone()
        if gas is not None and gas[0] is not None:
            c.execute(
                "INSERT INTO rounds(task, round, state, gas) VALUES (?,?, 'open', ?) "
                "ON CONFLICT(task, round) DO UPDATE SET gas = gas + excluded.gas",
                (task, r, int(gas[0])),
            )
