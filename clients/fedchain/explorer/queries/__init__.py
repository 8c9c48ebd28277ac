"""What every page and API route shows, read from the index (never by scanning the chain).

Each method returns plain JSON-ready dicts: the JSON API serves them as they are and the pages render the same
dicts. Lookups of a transaction or block that the index does not hold (outside the indexed range, or not yet
indexed) ask the node once; IPFS content is fetched on demand, verified against its CID, and cached in memory.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from fedchain.chain.artifacts import load_artifact
from fedchain.explorer.abi import AbiCodec
from fedchain.explorer.chains import chain_info, explorer_link
from fedchain.explorer.index import (
    AGGREGATOR_ROLE,
    DEFAULT_ADMIN_ROLE,
    TASK_CONTRACT,
    SyncStatus,
    connect_db,
)
from fedchain.explorer.rpc import JsonRpc, NodeUnavailable, RpcError
from fedchain.explorer.search import Query, SearchError, parse_query
from fedchain.explorer.strategies import STRATEGIES, STRATEGY_NAMES
from fedchain.storage import IpfsClient, StorageError, cid_to_digest, digest_to_cid
from fedchain.storage.codec import decode_weights, read_metadata

AGREEMENT_NOTE = (
    "Aggregators agree by commit-reveal: each commits a hash of its result, then reveals it; the round's result is "
    "final once k reveals agree on the model and the number of accepted updates. A revealed result that disagrees "
    "with the final one is recorded on chain as a fault (AggregatorFault). Without agreement before the deadline "
    "the round fails and the next round retries it from the unchanged global model."
)
METRICS_NOTE = (
    "Accuracy and loss are the aggregator's own evaluation of each round's model on the task's held-out set, "
    "taken from the aggregation report it published on IPFS (the chain stores only that report's digest)."
)
MAX_CONTENT_BYTES = 64 << 20
LATEST = 10
ENTRY_COLUMNS = (
    "aggregator",
    "commitment",
    "commit_tx",
    "commit_block",
    "committed_at",
    "commit_gas",
    "model_cid",
    "report_cid",
    "accepted",
    "reveal_tx",
    "reveal_block",
    "revealed_at",
    "reveal_gas",
    "late",
    "agrees",
    "fault",
    "fault_tx",
    "fault_block",
    "fault_count",
    "final_model_cid",
)


class NotFound(LookupError):
    """Nothing matches; the message says what was looked for."""


class BadInput(ValueError):
    """The request itself is malformed (not a hash, a negative round, ...)."""


@dataclass
class Settings:
    rpc_url: str
    ipfs_api: str | None
    chain_id: int
    index_path: Path


def _fmt_time(ts: int | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _address(value: str) -> str:
    try:
        return to_checksum_address(value)
    except ValueError:
        raise BadInput(f"{value[:80]!r} is not an address (0x and 40 hex digits)") from None


def _hash(value: str) -> str:
    text = value.lower()
    if len(text) != 66 or not text.startswith("0x") or any(ch not in "0123456789abcdef" for ch in text[2:]):
        raise BadInput(f"{value[:80]!r} is not a 32-byte hash (0x and 64 hex digits)")
    return text


def _dict(row: sqlite3.Row | None) -> dict[str, Any]:
    return {} if row is None else {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row has no iteration of keys


class Explorer:
    """Read side of the explorer: one per process, connections per thread."""

    def __init__(
        self,
        settings: Settings,
        status: SyncStatus | None = None,
        rpc: JsonRpc | None = None,
        ipfs: IpfsClient | None = None,
    ) -> None:
        self.settings = settings
        self.status = status or SyncStatus()
        self.rpc = rpc
        self.ipfs = ipfs
        artifact = load_artifact(TASK_CONTRACT)
        self.codec = AbiCodec(artifact.abi)
        self.bytecode = artifact.bytecode
        self.chain = chain_info(settings.chain_id)
        self._local = threading.local()
        self._client_version: str | None = None
        self._ipfs_info: dict[str, Any] = {}
        self._ipfs_info_at = 0.0
        self._ipfs_lock = threading.Lock()
        self._content: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._content_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_db(self.settings.index_path)
            self._local.conn = conn
        return conn

    def _rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [_dict(r) for r in self.db.execute(sql, params).fetchall()]

    def _row(self, sql: str, *params: Any) -> dict[str, Any] | None:
        row = self.db.execute(sql, params).fetchone()
        return None if row is None else _dict(row)

    def link(self, kind: str, value: str | int) -> str | None:
        return explorer_link(self.settings.chain_id, kind, value)

    def client_version(self) -> str | None:
        if self._client_version is None and self.rpc is not None:
            try:
                self._client_version = str(self.rpc.call("web3_clientVersion"))
            except (RpcError, NodeUnavailable):
                return None
        return self._client_version

    def ipfs_info(self, max_age: float = 10.0) -> dict[str, Any]:
        """The IPFS node's id, version and pin count; refreshed in the background when older than `max_age`."""
        if self.ipfs is None:
            return {"api_url": None, "error": "no IPFS API configured"}
        stale = time.monotonic() - self._ipfs_info_at > max_age
        if stale and self._ipfs_lock.acquire(blocking=False):
            if not self._ipfs_info:
                self._refresh_ipfs()  # the first request waits; later ones get the cached answer at once
            else:
                threading.Thread(target=self._refresh_ipfs, daemon=True).start()
                return self._ipfs_info
        return self._ipfs_info

    def _refresh_ipfs(self) -> None:
        assert self.ipfs is not None
        try:
            info: dict[str, Any] = {"api_url": self.settings.ipfs_api, "error": None}
            try:
                ident = self.ipfs.id()
                version = self.ipfs.version()
                pins = self.ipfs.pin_ls()
                info.update(
                    id=ident.get("ID"),
                    agent_version=ident.get("AgentVersion"),
                    version=version.get("Version"),
                    pins=len(pins),
                )
            except (StorageError, OSError) as exc:
                info["error"] = f"{type(exc).__name__}: {exc}"[:300]
            self._ipfs_info = info
            self._ipfs_info_at = time.monotonic()
        finally:
            self._ipfs_lock.release()

    # ------------------------------------------------------------------ overview

    def overview(self) -> dict[str, Any]:
        blocks = self._rows("SELECT * FROM blocks ORDER BY number DESC LIMIT ?", LATEST)
        for b in blocks:
            b["time"] = _fmt_time(b["timestamp"])
        txs = self._rows(
            "SELECT hash, block_number, from_addr, to_addr, created, fn_name, task, gas_used, status FROM txs "
            "ORDER BY block_number DESC, tx_index DESC LIMIT ?",
            LATEST,
        )
        latest = blocks[0] if blocks else None
        return {
            "chain": {
                "chain_id": self.settings.chain_id,
                "name": self.chain.name,
                "client_version": self.client_version(),
                "rpc_url": self.settings.rpc_url,
                "head": self.status.head,
                "indexed_block": self.status.next_block - 1,
                "latest_block": latest["number"] if latest else None,
                "base_fee": latest["base_fee"] if latest else None,
                "public_explorer": self.chain.explorer,
            },
            "latest_blocks": blocks,
            "latest_transactions": txs,
            "ipfs": self.ipfs_info(),
            "tasks": self.tasks(),
            "index": self.status.as_dict(),
        }

    def tasks(self) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT t.address, t.phase, t.current_round, t.num_rounds, t.created_block, t.admin, t.final_model_cid, "
            "(SELECT COUNT(*) FROM participants p WHERE p.task = t.address AND p.role = 'device' "
            " AND p.status = 'approved') AS devices, "
            "(SELECT COUNT(*) FROM rounds r WHERE r.task = t.address AND r.state = 'committed') AS rounds_committed, "
            "t.failed_rounds, t.aggregator_threshold, "
            "(SELECT COUNT(*) FROM participants p WHERE p.task = t.address AND p.role = 'aggregator' "
            " AND p.status = 'active') AS aggregators, "
            "(SELECT accuracy FROM rounds r WHERE r.task = t.address AND r.accuracy IS NOT NULL "
            " ORDER BY r.round DESC LIMIT 1) AS latest_accuracy "
            "FROM tasks t ORDER BY t.created_block DESC"
        )
        return rows

    # ------------------------------------------------------------------ task

    def _task_row(self, address: str) -> dict[str, Any]:
        task = self._row("SELECT * FROM tasks WHERE address = ?", _address(address))
        if task is None:
            raise NotFound(f"no FederatedTask at {_address(address)} in the index")
        return task

    def task(self, address: str) -> dict[str, Any]:
        t = self._task_row(address)
        rounds = self.rounds(t["address"], t)
        participants = self._rows(
            "SELECT p.address, p.role, p.status, p.since_round, p.since_block, p.changed_block, "
            "(SELECT COUNT(*) FROM updates u WHERE u.task = p.task AND u.device = p.address) AS updates, "
            "(SELECT COUNT(*) FROM updates u WHERE u.task = p.task AND u.device = p.address "
            " AND u.status = 'rejected') AS rejected "
            "FROM participants p WHERE p.task = ? ORDER BY CASE p.role WHEN 'admin' THEN 0 WHEN 'aggregator' THEN 1 "
            "ELSE 2 END, p.since_block, p.address",
            t["address"],
        )
        aggregators = self._aggregators(t["address"], participants)
        faults = {a["address"]: a["faults"] for a in aggregators}
        for p in participants:
            p["faults"] = faults.get(p["address"], 0) if p["role"] == "aggregator" else None
        failed = self._rows(
            "SELECT hash, block_number, from_addr, fn_name, revert FROM txs WHERE task = ? AND status = 0 "
            "ORDER BY block_number DESC LIMIT 50",
            t["address"],
        )
        params = self._row(
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
                "strategy": STRATEGIES.get(t["strategy_id"], f"strategy {t['strategy_id']}"),
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
            "public_explorer_url": self.link("address", t["address"]),
        }

    def _aggregators(self, task: str, participants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every aggregator of the task (role holders, past or present, and whoever committed or revealed) with its
        commitments, reveals, agreements and faults."""
        stats = {
            r["aggregator"]: r
            for r in self._rows(
                "SELECT aggregator, COUNT(commit_tx) AS commits, COUNT(reveal_tx) AS reveals, "
                "SUM(CASE WHEN agrees = 1 THEN 1 ELSE 0 END) AS agreed, SUM(fault) AS fault_rows, "
                "MAX(fault_count) AS fault_counter, SUM(late) AS late_reveals, MAX(round) AS last_round "
                "FROM round_aggregators WHERE task = ? GROUP BY aggregator",
                task,
            )
        }
        finalised = {
            r["aggregator"]: r["n"]
            for r in self._rows(
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
        t = task or self._task_row(address)
        rows = self._rows("SELECT * FROM rounds WHERE task = ? ORDER BY round", t["address"])
        agreed = {
            r["round"]: r["n"]
            for r in self._rows(
                "SELECT round, COUNT(*) AS n FROM round_aggregators WHERE task = ? AND agrees = 1 GROUP BY round",
                t["address"],
            )
        }
        return [self._round_summary(r, t, agreed.get(r["round"], 0)) for r in rows]

    @staticmethod
    def _round_summary(r: dict[str, Any], t: dict[str, Any], agreed: int) -> dict[str, Any]:
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
            "opened_at": _fmt_time(r["opened_at"]),
            "committed_at": _fmt_time(r["committed_at"]),
            "failed_at": _fmt_time(r["failed_at"]),
            "deadline": _fmt_time(r["deadline"]),
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

    # ------------------------------------------------------------------ round, update

    def round(self, address: str, number: int) -> dict[str, Any]:
        if number < 0:
            raise BadInput(f"round {number} is negative")
        t = self._task_row(address)
        r = self._row("SELECT * FROM rounds WHERE task = ? AND round = ?", t["address"], number)
        if r is None:
            raise NotFound(f"task {t['address']} has no round {number} in the index (it has {t['current_round']})")
        updates = self._updates("u.task = ? AND u.round = ?", t["address"], number)
        agreement = self._agreement(t, r)
        summary = self._round_summary(r, t, agreement["agreed"])
        previous = self._row("SELECT state FROM rounds WHERE task = ? AND round = ?", t["address"], number - 1)
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
                "committed_at": _fmt_time(r["committed_at"]),
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

    def _agreement(self, t: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
        """The round's k-of-n agreement: each aggregator's commitment and reveal, who agreed, who was faulted."""
        state = r["state"]
        rows = self._rows(
            "SELECT ra.*, c.gas_used AS commit_gas, v.gas_used AS reveal_gas FROM round_aggregators ra "
            "LEFT JOIN txs c ON c.hash = ra.commit_tx LEFT JOIN txs v ON v.hash = ra.reveal_tx "
            "WHERE ra.task = ? AND ra.round = ? "
            "ORDER BY COALESCE(ra.commit_block, ra.reveal_block), COALESCE(ra.commit_log, ra.reveal_log)",
            t["address"],
            r["round"],
        )
        entries = [self._entry(e, state, r) for e in rows]
        if r["ready_block"] is not None:
            # Aggregators that held the role when the round closed for aggregation but did not commit.
            seen = {e["aggregator"] for e in entries}
            for p in self._rows(
                "SELECT address, status, since_block, changed_block FROM participants WHERE task = ? "
                "AND role = 'aggregator' AND since_block <= ? AND (status = 'active' OR changed_block > ?) "
                "ORDER BY since_block, address",
                t["address"],
                r["ready_block"],
                r["ready_block"],
            ):
                if p["address"] not in seen:
                    blank = {**dict.fromkeys(ENTRY_COLUMNS), "aggregator": p["address"], "fault": 0, "late": 0}
                    verdict = "not-committed" if state == "aggregating" else "did-not-commit"
                    entries.append({**self._entry(blank, state, r), "verdict": verdict})
        agreed = sum(1 for e in entries if e.get("agrees") == 1)
        k, n = t["aggregator_threshold"], r["aggregators"]
        commits, reveals = r["commits"], r["reveals"]
        status = {
            "open": "collecting updates",
            "aggregating": "collecting commitments",
            "revealing": "revealing",
            "committed": "agreed",
            "failed": "failed",
            "cancelled": "cancelled",
        }.get(state, state)
        if state == "committed":
            summary = f"{agreed} of {n if n is not None else '?'} aggregators agreed (threshold {k})"
        elif state == "failed":
            summary = (
                f"no agreement: retried in round {r['round'] + 1} ({commits} commitments, {reveals} reveals, "
                f"{k} agreeing reveals needed)"
            )
        elif state == "revealing":
            summary = f"{reveals} of {commits} commitments revealed; {k} agreeing reveals make the result final"
        elif state == "aggregating":
            summary = f"{commits} of {n if n is not None else '?'} aggregators committed"
        elif state == "cancelled":
            summary = "the task was cancelled during this round"
        else:
            summary = "the round is collecting updates"
        return {
            "status": status,
            "summary": summary,
            "threshold": k,
            "aggregators": n,
            "commits": commits,
            "reveals": reveals,
            "agreed": agreed,
            "faults": r["faults"],
            "faulted": [e["aggregator"] for e in entries if e.get("fault")],
            "commit_deadline": _fmt_time(r["commit_deadline"]),
            "reveal_opened_block": r["reveal_block"],
            "reveal_opened_tx": r["reveal_tx"],
            "reveal_opened_at": _fmt_time(r["reveal_opened_at"]),
            "reveal_deadline": _fmt_time(r["reveal_deadline"]),
            "finalised_by": r["aggregator"],
            "finalised_tx": r["committed_tx"],
            "failed": None
            if state != "failed"
            else {
                "block": r["failed_block"],
                "tx": r["failed_tx"],
                "at": _fmt_time(r["failed_at"]),
                "retried_in": r["round"] + 1,
            },
            "entries": entries,
        }

    @staticmethod
    def _entry(e: dict[str, Any], state: str, r: dict[str, Any]) -> dict[str, Any]:
        """One aggregator's part in a round, with a verdict: agreed, faulted, disagreed, no-agreement, revealed
        (not final yet), awaiting-reveal, not-revealed."""
        if e["fault"]:
            verdict = "faulted"
        elif e["reveal_tx"] is not None:
            if e["agrees"] == 1:
                verdict = "agreed"
            elif e["agrees"] == 0:
                verdict = "disagreed"
            elif state == "failed":
                verdict = "no-agreement"
            else:
                verdict = "revealed"
        elif state in ("aggregating", "revealing"):
            verdict = "awaiting-reveal"
        else:
            verdict = "not-revealed"
        return {
            "aggregator": e["aggregator"],
            "verdict": verdict,
            "commitment": e["commitment"],
            "commit_tx": e["commit_tx"],
            "commit_block": e["commit_block"],
            "committed_at": _fmt_time(e["committed_at"]),
            "commit_gas": e["commit_gas"],
            "model_cid": e["model_cid"],
            "report_cid": e["report_cid"],
            "accepted": e["accepted"],
            "reveal_tx": e["reveal_tx"],
            "reveal_block": e["reveal_block"],
            "revealed_at": _fmt_time(e["revealed_at"]),
            "reveal_gas": e["reveal_gas"],
            "late": bool(e["late"]),
            "agrees": e["agrees"],
            "fault": bool(e["fault"]),
            "fault_tx": e["fault_tx"],
            "fault_block": e["fault_block"],
            "fault_count": e["fault_count"],
            "final_model_cid": e["final_model_cid"],
            "finalised": e["reveal_tx"] is not None and e["reveal_tx"] == r["committed_tx"],
        }

    def _updates(self, where: str, *params: Any) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT u.*, t.gas_used, t.status AS tx_status, b.timestamp FROM updates u "
            "LEFT JOIN txs t ON t.hash = u.tx_hash LEFT JOIN blocks b ON b.number = u.block_number "
            f"WHERE {where} ORDER BY u.block_number, u.log_index",
            *params,
        )
        for u in rows:
            u["time"] = _fmt_time(u.pop("timestamp"))
            u.pop("tx_status", None)
        return rows

    def update(self, address: str, number: int, device: str) -> dict[str, Any]:
        rnd = self.round(address, number)
        dev = _address(device)
        match = [u for u in rnd["updates"] if u["device"] == dev]
        if not match:
            raise NotFound(f"device {dev} submitted no update to round {number} of task {rnd['task']}")
        return {
            **match[0],
            "round_state": rnd["state"],
            "aggregate": rnd["aggregate"],
            "global_model_cid": rnd["global_model_cid"],
            "tx": self.tx(match[0]["tx_hash"]),
        }

    # ------------------------------------------------------------------ addresses, devices

    def address(self, value: str) -> dict[str, Any]:
        addr = _address(value)
        task = self._row("SELECT address FROM tasks WHERE address = ?", addr)
        roles = self._rows(
            "SELECT task, role, status, since_round, since_block, changed_block FROM participants WHERE address = ? "
            "ORDER BY task, role",
            addr,
        )
        txs = self._rows(
            "SELECT hash, block_number, from_addr, to_addr, created, fn_name, task, gas_used, status FROM txs "
            "WHERE from_addr = ? OR to_addr = ? OR created = ? ORDER BY block_number DESC, tx_index DESC LIMIT 100",
            addr,
            addr,
            addr,
        )
        tx_count = self.db.execute(
            "SELECT (SELECT COUNT(*) FROM txs WHERE from_addr = ?) + (SELECT COUNT(*) FROM txs WHERE to_addr = ? "
            "AND from_addr != ?)",
            (addr, addr, addr),
        ).fetchone()[0]
        device_tasks = sorted({r["task"] for r in roles if r["role"] == "device"})
        device_tasks += sorted(
            {r["task"] for r in self._rows("SELECT DISTINCT task FROM updates WHERE device = ?", addr)}
            - set(device_tasks)
        )
        history = [self._device_history(t, addr) for t in device_tasks]
        updates = self._updates("u.device = ?", addr)
        aggregator_tasks = sorted({r["task"] for r in roles if r["role"] == "aggregator"})
        aggregator_tasks += sorted(
            {r["task"] for r in self._rows("SELECT DISTINCT task FROM round_aggregators WHERE aggregator = ?", addr)}
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
            "public_explorer_url": self.link("address", addr),
        }

    def _device_history(self, task: str, device: str) -> dict[str, Any]:
        """Round by round: what the device did (submitted, accepted, rejected) or missed."""
        t = self._task_row(task)
        role = self._row(
            "SELECT status, since_round, changed_block FROM participants WHERE task = ? AND address = ? "
            "AND role = 'device'",
            task,
            device,
        )
        rows = self._rows(
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
        t = self._task_row(task)
        role = self._row(
            "SELECT status, since_block, changed_block FROM participants WHERE task = ? AND address = ? "
            "AND role = 'aggregator'",
            task,
            aggregator,
        )
        rows = self._rows(
            "SELECT ra.*, c.gas_used AS commit_gas, v.gas_used AS reveal_gas, r.state, r.committed_tx, "
            "r.model_cid AS round_model_cid FROM round_aggregators ra "
            "JOIN rounds r ON r.task = ra.task AND r.round = ra.round "
            "LEFT JOIN txs c ON c.hash = ra.commit_tx LEFT JOIN txs v ON v.hash = ra.reveal_tx "
            "WHERE ra.task = ? AND ra.aggregator = ? ORDER BY ra.round",
            task,
            aggregator,
        )
        rounds = [{"round": e["round"], "round_state": e["state"], **self._entry(e, e["state"], e)} for e in rows]
        finalised = self.db.execute(
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

    # ------------------------------------------------------------------ transactions, blocks

    def tx(self, value: str) -> dict[str, Any]:
        tx_hash = _hash(value)
        row = self._row("SELECT * FROM txs WHERE hash = ?", tx_hash)
        if row is not None:
            logs = self._rows("SELECT * FROM logs WHERE tx_hash = ? ORDER BY log_index", tx_hash)
            block = self._row("SELECT timestamp FROM blocks WHERE number = ?", row["block_number"])
            return self._tx_view(row, logs, block["timestamp"] if block else None, "index")
        return self._tx_from_node(tx_hash)

    def _tx_from_node(self, tx_hash: str) -> dict[str, Any]:
        if self.rpc is None:
            raise NotFound(f"transaction {tx_hash} is not in the index")
        try:
            tx = self.rpc.call("eth_getTransactionByHash", tx_hash)
            receipt = self.rpc.call("eth_getTransactionReceipt", tx_hash) if tx else None
        except (RpcError, NodeUnavailable) as exc:
            raise NotFound(
                f"transaction {tx_hash} is not in the index, and the node could not be asked: {exc}"
            ) from exc
        if tx is None:
            raise NotFound(f"no transaction {tx_hash} on this chain (chain id {self.settings.chain_id})")
        known = {r["address"] for r in self._rows("SELECT address FROM tasks")}
        to = to_checksum_address(tx["to"]) if tx.get("to") else None
        created = (
            to_checksum_address(receipt["contractAddress"]) if receipt and receipt.get("contractAddress") else None
        )
        row = {
            "hash": tx_hash,
            "block_number": int(tx["blockNumber"], 16) if tx.get("blockNumber") else None,
            "tx_index": int(tx["transactionIndex"], 16) if tx.get("transactionIndex") else None,
            "from_addr": to_checksum_address(tx["from"]),
            "to_addr": to,
            "created": created,
            "value": str(int(tx.get("value") or "0x0", 16)),
            "nonce": int(tx["nonce"], 16),
            "gas_limit": int(tx["gas"], 16),
            "gas_used": int(receipt["gasUsed"], 16) if receipt else None,
            "gas_price": int(receipt.get("effectiveGasPrice") or tx.get("gasPrice") or "0x0", 16) if receipt else None,
            "status": int(receipt["status"], 16) if receipt and receipt.get("status") else None,
            "input": tx["input"],
            "task": to if to in known else None,
            "fn_name": None,
            "revert": None,
        }
        logs = []
        for lg in (receipt or {}).get("logs", []):
            address = to_checksum_address(lg["address"])
            decoded = self.codec.decode_log(lg["topics"], lg["data"]) if address in known else None
            logs.append(
                {
                    "log_index": int(lg["logIndex"], 16),
                    "address": address,
                    "topics": json.dumps(lg["topics"]),
                    "data": lg["data"],
                    "name": decoded.name if decoded else None,
                    "args": json.dumps(decoded.args) if decoded else None,
                }
            )
        return self._tx_view(row, logs, None, "node" if receipt else "node (pending)")

    def _tx_view(self, row: dict[str, Any], logs: list[dict[str, Any]], ts: int | None, source: str) -> dict[str, Any]:
        call = None
        if row["task"] is not None and row["to_addr"] is not None:
            decoded = self.codec.decode_call(row["input"])
            if decoded is not None:
                call = {
                    "contract": TASK_CONTRACT,
                    "function": decoded.name,
                    "args": decoded.args,
                    "types": decoded.types,
                    "labels": _labels(decoded.args),
                }
        elif row["task"] is not None and row["created"] is not None:
            decoded = self.codec.decode_constructor(row["input"], self.bytecode)
            if decoded is not None:
                call = {
                    "contract": TASK_CONTRACT,
                    "function": "constructor",
                    "args": decoded.args,
                    "types": decoded.types,
                    "labels": {},
                }
        events = []
        for lg in logs:
            args = json.loads(lg["args"]) if lg.get("args") else None
            events.append(
                {
                    "log_index": lg["log_index"],
                    "address": lg["address"],
                    "name": lg.get("name"),
                    "args": args,
                    "cids": _cids_in(args),
                    "types": self.codec.event_types(lg["name"]) if lg.get("name") else {},
                    "labels": _labels(args),
                    "topics": json.loads(lg["topics"]) if isinstance(lg["topics"], str) else lg["topics"],
                    "data": lg["data"],
                }
            )
        gas_price = row["gas_price"]
        fee = row["gas_used"] * gas_price if row["gas_used"] is not None and gas_price is not None else None
        related = self._rows(
            "SELECT task, round, device, NULL AS aggregator, 'update' AS kind FROM updates WHERE tx_hash = ? "
            "UNION ALL SELECT task, round, NULL, aggregator, 'commit' FROM round_aggregators WHERE commit_tx = ? "
            "UNION ALL SELECT task, round, NULL, aggregator, CASE WHEN late = 1 THEN 'late reveal' ELSE 'reveal' END "
            "FROM round_aggregators WHERE reveal_tx = ? "
            "UNION ALL SELECT task, round, NULL, aggregator, 'fault' FROM round_aggregators "
            "WHERE fault_tx = ? AND fault_tx IS NOT reveal_tx "
            "UNION ALL SELECT task, round, NULL, NULL, 'reveal window' FROM rounds WHERE reveal_tx = ? "
            "UNION ALL SELECT task, round, NULL, aggregator, 'aggregate' FROM rounds WHERE committed_tx = ? "
            "UNION ALL SELECT task, round, NULL, NULL, 'failure' FROM rounds WHERE failed_tx = ?",
            *([row["hash"]] * 7),
        )
        return {
            "hash": row["hash"],
            "block_number": row["block_number"],
            "tx_index": row["tx_index"],
            "time": _fmt_time(ts),
            "from": row["from_addr"],
            "to": row["to_addr"],
            "created": row["created"],
            "value": row["value"],
            "nonce": row["nonce"],
            "gas_limit": row["gas_limit"],
            "gas_used": row["gas_used"],
            "gas_price": gas_price,
            "fee_wei": str(fee) if fee is not None else None,
            "status": row["status"],
            "revert": row["revert"],
            "task": row["task"],
            "call": call,
            "call_cids": _cids_in(call["args"]) if call else {},
            "input": row["input"],
            "events": events,
            "related": related,
            "source": source,
            "public_explorer_url": self.link("tx", row["hash"]),
        }

    def block(self, value: str | int) -> dict[str, Any]:
        number: int | None = None
        text = str(value).strip()
        if text.isdigit():
            number = int(text)
            row = self._row("SELECT * FROM blocks WHERE number = ?", number)
        else:
            row = self._row("SELECT * FROM blocks WHERE hash = ?", _hash(text))
        if row is None or not row["full"]:
            return self._block_from_node(number if number is not None else _hash(text), row)
        txs = self._rows(
            "SELECT hash, tx_index, from_addr, to_addr, created, fn_name, task, gas_used, status FROM txs "
            "WHERE block_number = ? ORDER BY tx_index",
            row["number"],
        )
        return self._block_view(row, txs, "index")

    def _block_from_node(self, ident: int | str, stored: dict[str, Any] | None) -> dict[str, Any]:
        shown = f"block {ident}"
        if self.rpc is None:
            raise NotFound(f"{shown} is not in the index")
        try:
            if isinstance(ident, int):
                block = self.rpc.call("eth_getBlockByNumber", hex(ident), True)
            else:
                block = self.rpc.call("eth_getBlockByHash", ident, True)
        except (RpcError, NodeUnavailable) as exc:
            raise NotFound(f"{shown} is not in the index, and the node could not be asked: {exc}") from exc
        if block is None:
            head = self.status.head
            raise NotFound(f"no {shown} on this chain" + (f" (the head is block {head})" if head is not None else ""))
        row = {
            "number": int(block["number"], 16),
            "hash": block["hash"],
            "parent_hash": block["parentHash"],
            "timestamp": int(block["timestamp"], 16),
            "tx_count": len(block["transactions"]),
            "gas_used": int(block["gasUsed"], 16),
            "gas_limit": int(block["gasLimit"], 16),
            "base_fee": int(block["baseFeePerGas"], 16) if block.get("baseFeePerGas") else None,
            "miner": block.get("miner"),
        }
        known = {r["address"] for r in self._rows("SELECT address FROM tasks")}
        txs = []
        for i, tx in enumerate(block["transactions"]):
            to = to_checksum_address(tx["to"]) if tx.get("to") else None
            decoded = self.codec.decode_call(tx["input"]) if to in known else None
            txs.append(
                {
                    "hash": tx["hash"],
                    "tx_index": i,
                    "from_addr": to_checksum_address(tx["from"]),
                    "to_addr": to,
                    "created": None,
                    "fn_name": decoded.name if decoded else None,
                    "task": to if to in known else None,
                    "gas_used": None,
                    "status": None,
                }
            )
        return self._block_view(row, txs, "node")

    def _block_view(self, row: dict[str, Any], txs: list[dict[str, Any]], source: str) -> dict[str, Any]:
        number = row["number"]
        head = self.status.head
        return {
            "number": number,
            "hash": row["hash"],
            "parent_hash": row["parent_hash"],
            "timestamp": row["timestamp"],
            "time": _fmt_time(row["timestamp"]),
            "tx_count": row["tx_count"],
            "gas_used": row["gas_used"],
            "gas_limit": row["gas_limit"],
            "base_fee": row["base_fee"],
            "miner": row["miner"],
            "transactions": txs,
            "previous": number - 1 if number > 0 else None,
            "next": number + 1 if head is None or number < head else None,
            "source": source,
            "public_explorer_url": self.link("block", number),
        }

    # ------------------------------------------------------------------ IPFS content

    def cid_references(self, cid: str) -> list[dict[str, Any]]:
        """Where the index mentions a CID: a task's spec or models, a round's model or report, an update."""
        refs: list[dict[str, Any]] = []
        for t in self._rows(
            "SELECT address, model_spec_cid, initial_model_cid, final_model_cid FROM tasks WHERE model_spec_cid = ? "
            "OR initial_model_cid = ? OR final_model_cid = ?",
            cid,
            cid,
            cid,
        ):
            for field, what in (
                ("model_spec_cid", "model and training description"),
                ("initial_model_cid", "initial model"),
                ("final_model_cid", "final model"),
            ):
                if t[field] == cid:
                    refs.append({"kind": field.removesuffix("_cid"), "what": what, "task": t["address"], "round": None})
        for r in self._rows(
            "SELECT task, round, model_cid, report_cid, global_model_cid FROM rounds WHERE model_cid = ? "
            "OR report_cid = ? OR global_model_cid = ? ORDER BY task, round",
            cid,
            cid,
            cid,
        ):
            if r["model_cid"] == cid:
                refs.append({"kind": "aggregate", "what": "aggregated model", "task": r["task"], "round": r["round"]})
            if r["report_cid"] == cid:
                refs.append({"kind": "report", "what": "aggregation report", "task": r["task"], "round": r["round"]})
            if r["global_model_cid"] == cid:
                refs.append(
                    {
                        "kind": "global_model",
                        "what": "global model the round started from",
                        "task": r["task"],
                        "round": r["round"],
                    }
                )
        for u in self._rows("SELECT task, round, device, tx_hash FROM updates WHERE cid = ?", cid):
            refs.append({"kind": "update", "what": "device update", **u})
        for a in self._rows(
            "SELECT task, round, aggregator, model_cid, report_cid, reveal_tx FROM round_aggregators "
            "WHERE model_cid = ? UNION SELECT task, round, aggregator, model_cid, report_cid, reveal_tx "
            "FROM round_aggregators WHERE report_cid = ? ORDER BY task, round, aggregator",
            cid,
            cid,
        ):
            for field, kind, what in (
                ("model_cid", "revealed_model", "model revealed by aggregator"),
                ("report_cid", "revealed_report", "aggregation report revealed by aggregator"),
            ):
                if a[field] == cid:
                    refs.append(
                        {
                            "kind": kind,
                            "what": what,
                            "task": a["task"],
                            "round": a["round"],
                            "aggregator": a["aggregator"],
                            "tx_hash": a["reveal_tx"],
                        }
                    )
        for r in self._rows("SELECT task, round FROM rounds WHERE server_state_cid = ?", cid):
            refs.append({"kind": "server_state", "what": "strategy's server state after", **r})
        return refs

    def content(self, cid: str) -> dict[str, Any]:
        """What a CID holds (JSON, safetensors weights or bytes), verified against the CID; cached."""
        try:
            digest = cid_to_digest(cid)
        except StorageError as exc:
            raise BadInput(str(exc)) from None
        refs = self.cid_references(cid)
        with self._content_lock:
            cached = self._content.get(cid)
        if cached is None:
            cached = self._fetch_content(cid, bool(refs))
            if cached.get("error") is None:
                with self._content_lock:
                    self._content[cid] = cached
                    while len(self._content) > 256:
                        self._content.popitem(last=False)
        return {"cid": cid, "digest": "0x" + digest.hex(), "references": refs, **cached}

    def raw_content(self, cid: str) -> bytes:
        try:
            cid_to_digest(cid)
        except StorageError as exc:
            raise BadInput(str(exc)) from None
        if self.ipfs is None:
            raise NotFound("no IPFS API configured")
        try:
            return self.ipfs.cat(cid, max_size=MAX_CONTENT_BYTES)
        except StorageError as exc:
            raise NotFound(f"cannot fetch {cid} from the IPFS node: {exc}") from exc

    def _fetch_content(self, cid: str, referenced: bool) -> dict[str, Any]:
        if self.ipfs is None:
            return {"error": "no IPFS API configured", "type": None}
        try:
            data = self.ipfs.cat(cid, max_size=MAX_CONTENT_BYTES)
        except StorageError as exc:
            if not referenced:
                raise NotFound(
                    f"{cid} is not referenced by any indexed task and the IPFS node cannot provide it: {exc}"
                ) from exc
            return {"error": f"the IPFS node cannot provide it: {exc}", "type": None, "size": None}
        out: dict[str, Any] = {"size": len(data), "verified": True, "error": None}
        try:
            body = json.loads(data)
            text = json.dumps(body, indent=2, sort_keys=True)
            out.update(type="json", json=body if len(text) < 200_000 else None, text=text[:200_000])
            return out
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        try:
            metadata = read_metadata(data, max_bytes=MAX_CONTENT_BYTES)
            weights = decode_weights(data, max_bytes=MAX_CONTENT_BYTES)
            tensors = [
                {
                    "name": name,
                    "dtype": str(arr.dtype),
                    "shape": list(arr.shape),
                    "parameters": int(arr.size),
                    "l2_norm": float(math.sqrt(float((arr.astype("float64") ** 2).sum()))) if arr.size else 0.0,
                }
                for name, arr in sorted(weights.items())
            ]
            out.update(
                type="safetensors",
                metadata=metadata,
                tensors=tensors,
                parameters=sum(t["parameters"] for t in tensors),
            )
            return out
        except Exception:  # neither JSON nor safetensors: show the first bytes
            out.update(type="bytes", preview_hex=data[:256].hex())
            return out

    # ------------------------------------------------------------------ search

    def resolve(self, raw: str) -> dict[str, Any]:
        """Where a search leads: {kind, url, api}; SearchError or NotFound with a clear message otherwise."""
        q: Query = parse_query(raw)
        if q.kind == "round":
            self.round(q.value, q.round or 0)
            path = f"/task/{q.value}/round/{q.round}"
            return {"query": raw, "kind": "round", "url": path, "api": "/api" + path}
        if q.kind == "address":
            if self._row("SELECT 1 FROM tasks WHERE address = ?", q.value):
                return {"query": raw, "kind": "task", "url": f"/task/{q.value}", "api": f"/api/task/{q.value}"}
            known = self._row(
                "SELECT 1 FROM txs WHERE from_addr = ? OR to_addr = ? UNION SELECT 1 FROM participants "
                "WHERE address = ? LIMIT 1",
                q.value,
                q.value,
                q.value,
            )
            kind = "address" if known else "address (no indexed activity)"
            return {"query": raw, "kind": kind, "url": f"/address/{q.value}", "api": f"/api/address/{q.value}"}
        if q.kind == "block":
            number = int(q.value)
            self.block(number)
            return {"query": raw, "kind": "block", "url": f"/block/{number}", "api": f"/api/block/{number}"}
        if q.kind == "cid":
            self.content(q.value)
            return {"query": raw, "kind": "cid", "url": f"/ipfs/{q.value}", "api": f"/api/ipfs/{q.value}"}
        # A 32-byte hash: a transaction, a block, or the digest of a CID the index knows.
        if self._row("SELECT 1 FROM txs WHERE hash = ?", q.value):
            return {"query": raw, "kind": "tx", "url": f"/tx/{q.value}", "api": f"/api/tx/{q.value}"}
        block = self._row("SELECT number FROM blocks WHERE hash = ?", q.value)
        if block:
            n = block["number"]
            return {"query": raw, "kind": "block", "url": f"/block/{n}", "api": f"/api/block/{n}"}
        cid = digest_to_cid(q.value)
        if self.cid_references(cid):
            return {"query": raw, "kind": "cid", "url": f"/ipfs/{cid}", "api": f"/api/ipfs/{cid}"}
        if self.rpc is not None:
            try:
                if self.rpc.call("eth_getTransactionByHash", q.value):
                    return {"query": raw, "kind": "tx", "url": f"/tx/{q.value}", "api": f"/api/tx/{q.value}"}
                found = self.rpc.call("eth_getBlockByHash", q.value, False)
                if found:
                    n = int(found["number"], 16)
                    return {"query": raw, "kind": "block", "url": f"/block/{n}", "api": f"/api/block/{n}"}
            except (RpcError, NodeUnavailable):
                pass
        raise NotFound(
            f"No transaction, block or known CID digest has the hash {q.value} on this chain "
            f"(chain id {self.settings.chain_id})."
        )


ROLE_NAMES = {AGGREGATOR_ROLE: "AGGREGATOR_ROLE", DEFAULT_ADMIN_ROLE: "DEFAULT_ADMIN_ROLE"}


def _labels(args: dict[str, Any] | None) -> dict[str, str]:
    """Human names for well-known values (AccessControl roles)."""
    return {k: ROLE_NAMES[v] for k, v in (args or {}).items() if isinstance(v, str) and v in ROLE_NAMES}


def _cids_in(args: dict[str, Any] | None) -> dict[str, str]:
    """CIDs of the digest arguments (bytes32 named *Digest) of a call or event."""
    out: dict[str, str] = {}
    for key, value in (args or {}).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in _cids_in(value).items()})
        elif key.endswith("Digest") and isinstance(value, str) and len(value) == 66 and value != "0x" + "00" * 32:
            out[key] = digest_to_cid(value)
    return out


__all__ = ["BadInput", "Explorer", "NotFound", "SearchError", "Settings"]
