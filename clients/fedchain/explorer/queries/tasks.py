"""The task page: configuration, participants, aggregators with their record, the rounds table and totals."""

from __future__ import annotations

import json
from typing import Any

from fedchain.explorer.queries.agreement import AGREEMENT_NOTE
from fedchain.explorer.queries.base import Reader, fmt_time
from fedchain.learning.aggregation.registry import STRATEGY_LABELS, STRATEGY_NAMES

METRICS_NOTE = (
    "Accuracy and loss are the aggregator's own evaluation of each round's model on the task's held-out set, "
    "taken from the aggregation report it published on IPFS (the chain stores only that report's digest)."
)


class TaskPages:
    def __init__(self, reader: Reader) -> None:
        self.r = reader

    def task(self, address: str) -> dict[str, Any]:
        t = self.r.task_row(address)
        rounds = self.rounds(t["address"], t)
        participants = self.r.rows(
            "SELECT p.address, p.role, p.status, p.since_round, p.since_block, p.changed_block, "
            "(SELECT COUNT(*) FROM updates u WHERE u.task = p.task AND u.device = p.address) AS updates, "
            "(SELECT COUNT(*) FROM updates u WHERE u.task = p.task AND u.device = p.address "
            " AND u.status = 'rejected') AS rejected "
            "FROM participants p WHERE p.task = ? ORDER BY CASE p.role WHEN 'admin' THEN 0 WHEN 'aggregator' THEN 1 "
            "ELSE 2 END, p.since_block, p.address",
            t["address"],
        )
        aggregators = self.aggregators(t["address"], participants)
        faults = {a["address"]: a["faults"] for a in aggregators}
        for p in participants:
            p["faults"] = faults.get(p["address"], 0) if p["role"] == "aggregator" else None
        failed = self.r.rows(
            "SELECT hash, block_number, from_addr, fn_name, revert FROM txs WHERE task = ? AND status = 0 "
            "ORDER BY block_number DESC LIMIT 50",
            t["address"],
        )
        params = self.r.row(
            "SELECT round, strategy, strategy_params FROM rounds WHERE task = ? AND strategy_params IS NOT NULL "
            "ORDER BY round DESC LIMIT 1",
            t["address"],
        )
        failed_rounds = [
            {
                "round": r["round"],
                "commits": r["commits"],
                "reveals": r["reveals"],
                "failed_block": r["closed_block"],
                "failed_at": r["failed_at"],
                "retried_in": r["retried_in"],
            }
            for r in rounds
            if r["state"] == "failed"
        ]
        gas = sum(r["gas"] or 0 for r in rounds)
        return {
            "address": t["address"],
            "phase": t["phase"],
            "current_round": t["current_round"],
            "final_model_cid": t["final_model_cid"],
            "config": {
                "admin": t["admin"],
                "creator": t["creator"],
                "created_block": t["created_block"],
                "created_tx": t["created_tx"],
                "model_spec_cid": t["model_spec_cid"],
                "initial_model_cid": t["initial_model_cid"],
                "num_rounds": t["num_rounds"],
                "min_updates": t["min_updates"],
                "max_updates": t["max_updates"],
                "round_duration": t["round_duration"],
                "strategy_id": t["strategy_id"],
                "strategy": STRATEGY_LABELS.get(t["strategy_id"], f"strategy {t['strategy_id']}"),
                "strategy_name": STRATEGY_NAMES.get(t["strategy_id"]),
                # The parameters are off chain: from the latest aggregation report that states them.
                "strategy_params": json.loads(params["strategy_params"]) if params else None,
                "strategy_params_round": params["round"] if params else None,
                "aggregator_threshold": t["aggregator_threshold"],
                "aggregation_duration": t["aggregation_duration"],
            },
            "participants": participants,
            "aggregators": aggregators,
            "rounds": rounds,
            "failed_rounds": failed_rounds,
            "failed_transactions": failed,
            "totals": {
                "gas": gas,
                "updates": sum(r["received"] for r in rounds),
                "rejected": sum(r["rejected"] or 0 for r in rounds),
                "rounds_committed": sum(1 for r in rounds if r["state"] == "committed"),
                "rounds_failed": len(failed_rounds),
                "faults": sum(a["faults"] for a in aggregators),
            },
            "metrics_note": METRICS_NOTE,
            "agreement_note": AGREEMENT_NOTE,
            "public_explorer_url": self.r.link("address", t["address"]),
        }

    def aggregators(self, task: str, participants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every aggregator of the task (role holders, past or present, and whoever committed or revealed) with its
        commitments, reveals, agreements and faults."""
        stats = {
            r["aggregator"]: r
            for r in self.r.rows(
                "SELECT aggregator, COUNT(commit_tx) AS commits, COUNT(reveal_tx) AS reveals, "
                "SUM(CASE WHEN agrees = 1 THEN 1 ELSE 0 END) AS agreed, SUM(fault) AS fault_rows, "
                "MAX(fault_count) AS fault_counter, SUM(late) AS late_reveals, MAX(round) AS last_round "
                "FROM round_aggregators WHERE task = ? GROUP BY aggregator",
                task,
            )
        }
        finalised = {
            r["aggregator"]: r["n"]
            for r in self.r.rows(
                "SELECT aggregator, COUNT(*) AS n FROM rounds WHERE task = ? AND state = 'committed' "
                "GROUP BY aggregator",
                task,
            )
        }
        roles = {p["address"]: p for p in participants if p["role"] == "aggregator"}
        out = []
        for address in list(roles) + sorted(set(stats) - set(roles)):
            st = stats.get(address, {})
            role = roles.get(address)
            out.append(
                {
                    "address": address,
                    "status": role["status"] if role else "unknown",
                    "since_block": role["since_block"] if role else None,
                    "commits": st.get("commits") or 0,
                    "reveals": st.get("reveals") or 0,
                    "agreed": st.get("agreed") or 0,
                    "late_reveals": st.get("late_reveals") or 0,
                    # AggregatorFault carries the contract's running count: it covers faults before the index.
                    "faults": max(st.get("fault_rows") or 0, st.get("fault_counter") or 0),
                    "finalised": finalised.get(address, 0),
                    "last_round": st.get("last_round"),
                }
            )
        return out

    def rounds(self, address: str, task: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        t = task or self.r.task_row(address)
        rows = self.r.rows("SELECT * FROM rounds WHERE task = ? ORDER BY round", t["address"])
        agreed = {
            r["round"]: r["n"]
            for r in self.r.rows(
                "SELECT round, COUNT(*) AS n FROM round_aggregators WHERE task = ? AND agrees = 1 GROUP BY round",
                t["address"],
            )
        }
        return [round_summary(r, t, agreed.get(r["round"], 0)) for r in rows]


def round_summary(r: dict[str, Any], t: dict[str, Any], agreed: int) -> dict[str, Any]:
    duration = None
    if r["committed_at"] is not None and r["opened_at"] is not None:
        duration = r["committed_at"] - r["opened_at"]
    failed = r["state"] == "failed"
    return {
        "round": r["round"],
        "state": r["state"],
        "received": r["received"],
        "required": t["max_updates"],
        "min_updates": t["min_updates"],
        "accepted": r["accepted_updates"],
        "rejected": r["rejected_updates"],
        "global_model_cid": r["global_model_cid"],
        "model_cid": r["model_cid"],
        "report_cid": r["report_cid"],
        "accuracy": r["accuracy"],
        "loss": r["loss"],
        "gas": r["gas"],
        "duration_s": duration,
        "opened_block": r["opened_block"],
        "closed_block": r["failed_block"] if failed else r["committed_block"],
        "opened_at": fmt_time(r["opened_at"]),
        "committed_at": fmt_time(r["committed_at"]),
        "failed_at": fmt_time(r["failed_at"]),
        "deadline": fmt_time(r["deadline"]),
        "extensions": r["extensions"],
        "report_error": r["report_error"],
        "threshold": t["aggregator_threshold"],
        "aggregators": r["aggregators"],
        "commits": r["commits"],
        "reveals": r["reveals"],
        "agreed": agreed,
        "faults": r["faults"],
        "finalised_by": r["aggregator"],
        "retried_in": r["round"] + 1 if failed else None,
    }
