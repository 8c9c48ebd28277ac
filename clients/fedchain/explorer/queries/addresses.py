"""The address page: an account's roles, its history as a device and as an aggregator per task, its transactions."""

from __future__ import annotations

from typing import Any

from fedchain.explorer.queries.agreement import entry_view
from fedchain.explorer.queries.base import Reader, checked_address
from fedchain.explorer.queries.rounds import update_rows


class AddressPages:
    def __init__(self, reader: Reader) -> None:
        self.r = reader

    def address(self, value: str) -> dict[str, Any]:
        addr = checked_address(value)
        task = self.r.row("SELECT address FROM tasks WHERE address = ?", addr)
        roles = self.r.rows(
            "SELECT task, role, status, since_round, since_block, changed_block FROM participants WHERE address = ? "
            "ORDER BY task, role",
            addr,
        )
        txs = self.r.rows(
            "SELECT hash, block_number, from_addr, to_addr, created, fn_name, task, gas_used, status FROM txs "
            "WHERE from_addr = ? OR to_addr = ? OR created = ? ORDER BY block_number DESC, tx_index DESC LIMIT 100",
            addr,
            addr,
            addr,
        )
        tx_count = self.r.db.execute(
            "SELECT (SELECT COUNT(*) FROM txs WHERE from_addr = ?) + (SELECT COUNT(*) FROM txs WHERE to_addr = ? "
            "AND from_addr != ?)",
            (addr, addr, addr),
        ).fetchone()[0]
        device_tasks = sorted({r["task"] for r in roles if r["role"] == "device"})
        device_tasks += sorted(
            {r["task"] for r in self.r.rows("SELECT DISTINCT task FROM updates WHERE device = ?", addr)}
            - set(device_tasks)
        )
        history = [self._device_history(t, addr) for t in device_tasks]
        updates = update_rows(self.r, "u.device = ?", addr)
        aggregator_tasks = sorted({r["task"] for r in roles if r["role"] == "aggregator"})
        aggregator_tasks += sorted(
            {r["task"] for r in self.r.rows("SELECT DISTINCT task FROM round_aggregators WHERE aggregator = ?", addr)}
            - set(aggregator_tasks)
        )
        aggregation = [self._aggregator_history(t, addr) for t in aggregator_tasks]
        if task:
            kind = "task"
        elif history:
            kind = "device"
        elif aggregation:
            kind = "aggregator"
        else:
            kind = "participant" if roles else "account"
        return {
            "address": addr,
            "kind": kind,
            "roles": roles,
            "device_tasks": history,
            "aggregator_tasks": aggregation,
            "updates": updates,
            "transactions": txs,
            "transaction_count": tx_count,
            "public_explorer_url": self.r.link("address", addr),
        }

    def _device_history(self, task: str, device: str) -> dict[str, Any]:
        """Round by round: what the device did (submitted, accepted, rejected) or missed."""
        t = self.r.task_row(task)
        role = self.r.row(
            "SELECT status, since_round, changed_block FROM participants WHERE task = ? AND address = ? "
            "AND role = 'device'",
            task,
            device,
        )
        rows = self.r.rows(
            "SELECT r.round, r.state, r.opened_block, u.cid, u.num_samples, u.status, u.reason, u.tx_hash, "
            "u.block_number FROM rounds r LEFT JOIN updates u ON u.task = r.task AND u.round = r.round "
            "AND u.device = ? WHERE r.task = ? ORDER BY r.round",
            device,
            task,
        )
        since = role["since_round"] if role else 0
        left_block = role["changed_block"] if role and role["status"] in ("removed", "left") else None
        history = []
        for r in rows:
            if r["cid"] is not None:
                outcome = r["status"]
            elif role is not None and since is not None and r["round"] < since:
                outcome = "not yet a participant"
            elif left_block is not None and (r["opened_block"] or 0) >= left_block:
                outcome = f"{role['status'] if role else 'removed'} before this round"
            elif r["state"] == "open":
                outcome = "not submitted yet"
            else:
                outcome = "missed"
            history.append({**r, "outcome": outcome})
        submitted = [h for h in history if h["cid"] is not None]
        return {
            "task": task,
            "status": role["status"] if role else "unknown",
            "since_round": since,
            "rounds": history,
            "submitted": len(submitted),
            "accepted": sum(1 for h in submitted if h["status"] == "accepted"),
            "rejected": sum(1 for h in submitted if h["status"] == "rejected"),
            "samples": sum(h["num_samples"] or 0 for h in submitted),
            "num_rounds": t["num_rounds"],
        }

    def _aggregator_history(self, task: str, aggregator: str) -> dict[str, Any]:
        """Round by round: the aggregator's commitments and reveals in one task, which agreed, which were faulted."""
        t = self.r.task_row(task)
        role = self.r.row(
            "SELECT status, since_block, changed_block FROM participants WHERE task = ? AND address = ? "
            "AND role = 'aggregator'",
            task,
            aggregator,
        )
        rows = self.r.rows(
            "SELECT ra.*, c.gas_used AS commit_gas, v.gas_used AS reveal_gas, r.state, r.committed_tx, "
            "r.model_cid AS round_model_cid FROM round_aggregators ra "
            "JOIN rounds r ON r.task = ra.task AND r.round = ra.round "
            "LEFT JOIN txs c ON c.hash = ra.commit_tx LEFT JOIN txs v ON v.hash = ra.reveal_tx "
            "WHERE ra.task = ? AND ra.aggregator = ? ORDER BY ra.round",
            task,
            aggregator,
        )
        rounds = [{"round": e["round"], "round_state": e["state"], **entry_view(e, e["state"], e)} for e in rows]
        finalised = self.r.db.execute(
            "SELECT COUNT(*) FROM rounds WHERE task = ? AND aggregator = ? AND state = 'committed'", (task, aggregator)
        ).fetchone()[0]
        fault_counter = max((e["fault_count"] or 0 for e in rounds), default=0)
        return {
            "task": task,
            "status": role["status"] if role else "unknown",
            "threshold": t["aggregator_threshold"],
            "rounds": rounds,
            "commits": sum(1 for e in rounds if e["commit_tx"] is not None),
            "reveals": sum(1 for e in rounds if e["reveal_tx"] is not None),
            "agreed": sum(1 for e in rounds if e["agrees"] == 1),
            "faults": max(sum(1 for e in rounds if e["fault"]), fault_counter),
            "late_reveals": sum(1 for e in rounds if e["late"]),
            "finalised": finalised,
            "num_rounds": t["num_rounds"],
        }
