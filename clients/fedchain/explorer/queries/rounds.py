"""The round page (its updates, its aggregate, its agreement) and the update page."""

from __future__ import annotations

import json
from typing import Any

from fedchain.explorer.queries.agreement import AGREEMENT_NOTE, agreement_view
from fedchain.explorer.queries.base import BadInput, NotFound, Reader, checked_address, fmt_time
from fedchain.explorer.queries.tasks import METRICS_NOTE, round_summary
from fedchain.explorer.queries.transactions import TransactionPages


def update_rows(r: Reader, where: str, *params: Any) -> list[dict[str, Any]]:
    """Updates matching `where` (over updates u), in chain order, with their transaction's gas and time."""
    rows = r.rows(
        "SELECT u.*, t.gas_used, t.status AS tx_status, b.timestamp FROM updates u "
        "LEFT JOIN txs t ON t.hash = u.tx_hash LEFT JOIN blocks b ON b.number = u.block_number "
        f"WHERE {where} ORDER BY u.block_number, u.log_index",
        *params,
    )
    for u in rows:
        u["time"] = fmt_time(u.pop("timestamp"))
        u.pop("tx_status", None)
    return rows


class RoundPages:
    def __init__(self, reader: Reader, transactions: TransactionPages) -> None:
        self.r = reader
        self.transactions = transactions

    def round(self, address: str, number: int) -> dict[str, Any]:
        if number < 0:
            raise BadInput(f"round {number} is negative")
        t = self.r.task_row(address)
        r = self.r.row("SELECT * FROM rounds WHERE task = ? AND round = ?", t["address"], number)
        if r is None:
            raise NotFound(f"task {t['address']} has no round {number} in the index (it has {t['current_round']})")
        updates = update_rows(self.r, "u.task = ? AND u.round = ?", t["address"], number)
        agreement = self.agreement(t, r)
        summary = round_summary(r, t, agreement["agreed"])
        previous = self.r.row("SELECT state FROM rounds WHERE task = ? AND round = ?", t["address"], number - 1)
        return {
            "task": t["address"],
            **summary,
            "num_rounds": t["num_rounds"],
            "opened_tx": r["opened_tx"],
            "ready_block": r["ready_block"],
            "ready_tx": r["ready_tx"],
            "total_samples": r["total_samples"],
            "inputs_hash": r["inputs_hash"],
            "updates": updates,
            "aggregate": None
            if r["committed_tx"] is None
            else {
                "model_cid": r["model_cid"],
                "report_cid": r["report_cid"],
                "aggregator": r["aggregator"],
                "committed_tx": r["committed_tx"],
                "committed_block": r["committed_block"],
                "committed_at": fmt_time(r["committed_at"]),
                "accepted": r["accepted_updates"],
                "rejected": r["rejected_updates"],
                "accuracy": r["accuracy"],
                "loss": r["loss"],
                "inputs_hash": r["inputs_hash"],
                "report_error": r["report_error"],
                "strategy": r["strategy"],
                "strategy_params": json.loads(r["strategy_params"]) if r["strategy_params"] else None,
                "server_state_cid": r["server_state_cid"],
                "note": r["report_note"],
            },
            "agreement": agreement,
            "retry_of": number - 1 if previous is not None and previous["state"] == "failed" else None,
            "previous_round": number - 1 if number > 1 else None,
            "next_round": number + 1 if number < t["current_round"] else None,
            "metrics_note": METRICS_NOTE,
            "agreement_note": AGREEMENT_NOTE,
        }

    def agreement(self, t: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
        """The round's k-of-n agreement (agreement.py) from its round_aggregators rows and the role holders."""
        rows = self.r.rows(
            "SELECT ra.*, c.gas_used AS commit_gas, v.gas_used AS reveal_gas FROM round_aggregators ra "
            "LEFT JOIN txs c ON c.hash = ra.commit_tx LEFT JOIN txs v ON v.hash = ra.reveal_tx "
            "WHERE ra.task = ? AND ra.round = ? "
            "ORDER BY COALESCE(ra.commit_block, ra.reveal_block), COALESCE(ra.commit_log, ra.reveal_log)",
            t["address"],
            r["round"],
        )
        holders: list[dict[str, Any]] = []
        if r["ready_block"] is not None:
            # Aggregators that held the role when the round closed for aggregation (the ones that did not commit
            # are listed too).
            holders = self.r.rows(
                "SELECT address, status, since_block, changed_block FROM participants WHERE task = ? "
                "AND role = 'aggregator' AND since_block <= ? AND (status = 'active' OR changed_block > ?) "
                "ORDER BY since_block, address",
                t["address"],
                r["ready_block"],
                r["ready_block"],
            )
        return agreement_view(t, r, rows, holders)

    def update(self, address: str, number: int, device: str) -> dict[str, Any]:
        rnd = self.round(address, number)
        dev = checked_address(device)
        match = [u for u in rnd["updates"] if u["device"] == dev]
        if not match:
            raise NotFound(f"device {dev} submitted no update to round {number} of task {rnd['task']}")
        return {
            **match[0],
            "round_state": rnd["state"],
            "aggregate": rnd["aggregate"],
            "global_model_cid": rnd["global_model_cid"],
            "tx": self.transactions.tx(match[0]["tx_hash"]),
        }
