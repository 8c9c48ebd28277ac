"""Aggregation reports: fetched from IPFS once per committed round, and folded into the round and its updates.

The final aggregation report (JSON on IPFS, digest in AggregateCommitted) is verified against its CID by the storage
client, and gives the round its accuracy and loss (evaluated by the aggregator), its strategy and parameters, and
each update its outcome (accepted or rejected, with the reason). What the report claims is checked against the
chain; disagreements are shown as the round's report_error, not trusted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from eth_utils import to_checksum_address

from fedchain.explorer.index.records import Change, ContentSource
from fedchain.explorer.index.schema import transaction
from fedchain.learning.aggregation.registry import STRATEGY_NAMES

MAX_REPORT_BYTES = 4 << 20
REPORT_RETRY_S = (1.0, 2.0, 5.0, 15.0, 60.0)


def fetch_due_reports(conn: sqlite3.Connection, ipfs: ContentSource, limit: int = 20) -> list[Change]:
    """Fetch reports of committed rounds not yet fetched (with backoff on failures); the rounds that got one."""
    now = time.time()
    due = conn.execute(
        "SELECT cid, task, round, attempts FROM reports WHERE body IS NULL AND next_attempt <= ? "
        "ORDER BY task, round LIMIT ?",
        (now, limit),
    ).fetchall()
    landed: list[Change] = []
    for row in due:
        try:
            body = json.loads(ipfs.cat(row["cid"], max_size=MAX_REPORT_BYTES))
            if not isinstance(body, dict):
                raise ValueError("the report is not a JSON object")
        except Exception as exc:  # unreachable IPFS, a mismatching or malformed report: shown, retried later
            attempts = row["attempts"] + 1
            delay = REPORT_RETRY_S[min(attempts - 1, len(REPORT_RETRY_S) - 1)]
            message = f"{type(exc).__name__}: {exc}"[:300]
            with transaction(conn) as c:
                c.execute(
                    "UPDATE reports SET error = ?, attempts = ?, next_attempt = ? WHERE cid = ?",
                    (message, attempts, now + delay, row["cid"]),
                )
                c.execute(
                    "UPDATE rounds SET report_error = ? WHERE report_cid = ?",
                    (f"aggregation report not available yet: {message}", row["cid"]),
                )
            continue
        with transaction(conn) as c:
            c.execute(
                "UPDATE reports SET body = ?, error = NULL, attempts = attempts + 1 WHERE cid = ?",
                (json.dumps(body, sort_keys=True), row["cid"]),
            )
            apply_report(c, row["cid"], body)
        landed.append(Change("round", {"task": row["task"], "round": row["round"], "event": "report"}))
    return landed


def apply_report(c: sqlite3.Connection, report_cid: str, body: dict[str, Any]) -> None:
    """Fold a fetched report into its round (metrics, strategy) and the round's updates (accepted, rejected)."""
    rnd = c.execute("SELECT task, round, model_cid FROM rounds WHERE report_cid = ?", (report_cid,)).fetchone()
    if rnd is None:
        return
    task, r = rnd["task"], rnd["round"]
    problems = []
    if body.get("round") != r:
        problems.append(f"report says round {body.get('round')}, chain says {r}")
    if body.get("model_cid") not in (None, rnd["model_cid"]):
        problems.append(f"report's model {body.get('model_cid')} differs from the committed {rnd['model_cid']}")
    problems += _apply_outcomes(c, task, r, body)
    metrics = body.get("metrics") if isinstance(body.get("metrics"), dict) else {}
    rejected = body.get("rejected") if isinstance(body.get("rejected"), list) else []
    accuracy, loss = metrics.get("accuracy"), metrics.get("loss")
    strategy = body.get("strategy") if isinstance(body.get("strategy"), str) else None
    params = body.get("strategy_params") if isinstance(body.get("strategy_params"), dict) else None
    configured = c.execute("SELECT strategy_id FROM tasks WHERE address = ?", (task,)).fetchone()
    expected = STRATEGY_NAMES.get(configured[0]) if configured is not None else None
    if strategy is not None and expected is not None and strategy != expected:
        problems.append(f"report says strategy {strategy}, the task's configuration says {expected}")
    state_cid = body.get("server_state_cid")
    note = body.get("note")
    c.execute(
        "UPDATE rounds SET accuracy = ?, loss = ?, rejected_updates = ?, report_error = ?, strategy = ?, "
        "strategy_params = ?, server_state_cid = ?, report_note = ? WHERE task = ? AND round = ?",
        (
            float(accuracy) if isinstance(accuracy, int | float) else None,
            float(loss) if isinstance(loss, int | float) else None,
            len(rejected),
            "; ".join(problems)[:500] or None,
            strategy,
            json.dumps(params, sort_keys=True) if params is not None else None,
            state_cid if isinstance(state_cid, str) and state_cid else None,
            str(note)[:500] if note else None,
            task,
            r,
        ),
    )


def _apply_outcomes(c: sqlite3.Connection, task: str, r: int, body: dict[str, Any]) -> list[str]:
    """Each listed update's outcome; an update the report does not list is 'unreported'. Returns the problems."""
    problems = []
    submitted = {
        u["device"]: u["cid"]
        for u in c.execute("SELECT device, cid FROM updates WHERE task = ? AND round = ?", (task, r))
    }
    for status, entries in (("accepted", body.get("accepted")), ("rejected", body.get("rejected"))):
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            device = entry.get("device")
            try:
                device = to_checksum_address(device) if isinstance(device, str) else None
            except ValueError:
                device = None
            if device is None or device not in submitted:
                problems.append(f"report lists {entry.get('device')!r}, which submitted nothing this round")
                continue
            if entry.get("cid") != submitted[device]:
                problems.append(f"report's CID for {device} differs from the one on chain")
            train = entry.get("train_seconds")
            c.execute(
                "UPDATE updates SET status = ?, reason = ?, detail = ?, train_seconds = ? "
                "WHERE task = ? AND round = ? AND device = ?",
                (
                    status,
                    str(entry.get("reason")) if status == "rejected" and entry.get("reason") else None,
                    str(entry.get("detail"))[:500] if entry.get("detail") else None,
                    float(train) if isinstance(train, int | float) else None,
                    task,
                    r,
                    device,
                ),
            )
    c.execute(
        "UPDATE updates SET status = 'unreported', reason = 'not listed in the aggregation report' "
        "WHERE task = ? AND round = ? AND status IN ('pending', 'committed')",
        (task, r),
    )
    return problems
