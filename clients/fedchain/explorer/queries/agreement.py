"""The verdicts of k-of-n commit-reveal agreement, as pure functions of the index's rows: each aggregator's part in
a round (agreed, faulted, disagreed, ...) and the round's agreement summary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedchain.explorer.queries.base import fmt_time

AGREEMENT_NOTE = (
    "Aggregators agree by commit-reveal: each commits a hash of its result, then reveals it; the round's result is "
    "final once k reveals agree on the model and the number of accepted updates. A revealed result that disagrees "
    "with the final one is recorded on chain as a fault (AggregatorFault). Without agreement before the deadline "
    "the round fails and the next round retries it from the unchanged global model."
)
# The columns of an aggregator's entry (round_aggregators with its transactions' gas).
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


def agreement_view(
    t: dict[str, Any], r: dict[str, Any], rows: Iterable[dict[str, Any]], role_holders: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """The round's k-of-n agreement: each aggregator's commitment and reveal, who agreed, who was faulted.

    `rows` are the round's round_aggregators entries in commit order; `role_holders` the aggregators that held the
    role when the round closed for aggregation (those that did not commit are listed as such).
    """
    state = r["state"]
    entries = [entry_view(e, state, r) for e in rows]
    seen = {e["aggregator"] for e in entries}
    for p in role_holders:
        if p["address"] not in seen:
            blank = {**dict.fromkeys(ENTRY_COLUMNS), "aggregator": p["address"], "fault": 0, "late": 0}
            verdict = "not-committed" if state == "aggregating" else "did-not-commit"
            entries.append({**entry_view(blank, state, r), "verdict": verdict})
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
        "commit_deadline": fmt_time(r["commit_deadline"]),
        "reveal_opened_block": r["reveal_block"],
        "reveal_opened_tx": r["reveal_tx"],
        "reveal_opened_at": fmt_time(r["reveal_opened_at"]),
        "reveal_deadline": fmt_time(r["reveal_deadline"]),
        "finalised_by": r["aggregator"],
        "finalised_tx": r["committed_tx"],
        "failed": None
        if state != "failed"
        else {
            "block": r["failed_block"],
            "tx": r["failed_tx"],
            "at": fmt_time(r["failed_at"]),
            "retried_in": r["round"] + 1,
        },
        "entries": entries,
    }


def entry_view(e: dict[str, Any], state: str, r: dict[str, Any]) -> dict[str, Any]:
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
        "committed_at": fmt_time(e["committed_at"]),
        "commit_gas": e["commit_gas"],
        "model_cid": e["model_cid"],
        "report_cid": e["report_cid"],
        "accepted": e["accepted"],
        "reveal_tx": e["reveal_tx"],
        "reveal_block": e["reveal_block"],
        "revealed_at": fmt_time(e["revealed_at"]),
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
