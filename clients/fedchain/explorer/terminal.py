"""`fedchain status`, `fedchain rounds` and `fedchain report`: the index, synced once, shown in the terminal or
as a picture. They share the explorer's on-disk index, so a second run only indexes the blocks added since."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedchain.explorer.app import default_index_path
from fedchain.explorer.index import Indexer
from fedchain.explorer.queries import Explorer, Settings
from fedchain.explorer.rpc import JsonRpc
from fedchain.storage import IpfsClient


def synced_explorer(rpc_url: str, ipfs_api: str | None, index_path: Path | None = None) -> Explorer:
    """Bring the on-disk index up to the chain head (and fetch reports), then open its read side."""
    rpc = JsonRpc(rpc_url)
    ipfs = IpfsClient(ipfs_api, timeout=15.0) if ipfs_api else None
    path = index_path or default_index_path(rpc_url)
    indexer = Indexer(path, rpc, ipfs)
    try:
        indexer.sync()
        while indexer.fetch_reports(limit=100):
            pass
    finally:
        indexer.close()
    return Explorer(Settings(rpc_url, ipfs_api, indexer.chain_id, path), indexer.status, rpc, ipfs)


def _metric(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _num(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def status_tables(data: dict[str, Any]) -> list[Table]:
    chain, ipfs = data["chain"], data["ipfs"]
    overview = Table(title="fedchain status", show_header=False, expand=False)
    overview.add_column("what", style="bold")
    overview.add_column("value")
    overview.add_row("chain", f"{chain['name']} (id {chain['chain_id']}), {chain['client_version'] or '?'}")
    overview.add_row("RPC", chain["rpc_url"])
    overview.add_row("head block", _num(chain["head"]))
    base_fee = chain["base_fee"]
    overview.add_row("base fee", "—" if base_fee is None else f"{base_fee / 1e9:.4g} gwei")
    if ipfs.get("error"):
        overview.add_row("IPFS", f"[red]{ipfs['error']}[/]")
    else:
        overview.add_row("IPFS node", f"{ipfs.get('id')} ({ipfs.get('agent_version')})")
        overview.add_row("IPFS pins", _num(ipfs.get("pins")))
    tasks = Table(title="tasks")
    for col in ("task", "phase", "round", "devices", "latest accuracy", "created"):
        tasks.add_column(col, justify="left" if col in ("task", "phase") else "right")
    for t in data["tasks"]:
        tasks.add_row(
            t["address"],
            t["phase"],
            f"{t['current_round']}/{t['num_rounds']}",
            str(t["devices"]),
            _metric(t["latest_accuracy"]),
            _num(t["created_block"]),
        )
    return [overview, tasks]


def rounds_table(task: dict[str, Any]) -> Table:
    table = Table(
        title=f"task {task['address']}: {task['phase']}, round {task['current_round']}/{task['config']['num_rounds']}"
    )
    cols = ("round", "state", "updates", "rejected", "agreed", "accuracy", "loss", "gas", "seconds", "aggregate")
    for col in (*cols, "blocks"):
        table.add_column(
            col,
            justify="left" if col in ("state", "aggregate") else "right",
            no_wrap=col != "aggregate",
            overflow="fold",
        )
    for r in task["rounds"]:
        table.add_row(
            str(r["round"]),
            r["state"],
            f"{r['received']}/{r['required']}",
            "—" if r["rejected"] is None else str(r["rejected"]),
            _agreement(r),
            _metric(r["accuracy"]),
            _metric(r["loss"]),
            _num(r["gas"]),
            "—" if r["duration_s"] is None else str(r["duration_s"]),
            r["model_cid"] or "—",
            f"{r['opened_block']}–{r['closed_block'] if r['closed_block'] is not None else '…'}",
        )
    table.caption = (
        f"agreed: reveals agreeing with the final result of the commitments (threshold "
        f"{task['config'].get('aggregator_threshold') or '?'}); accuracy and loss: the aggregator's evaluation, "
        "from its reports on IPFS"
    )
    return table


def _agreement(r: dict[str, Any]) -> str:
    if r["state"] == "failed":
        return f"none → {r['retried_in']}"
    if not r.get("commits"):
        return "—"
    text = f"{r['agreed']}/{r['commits']}"
    return text + (f" ({r['faults']} faulted)" if r.get("faults") else "")


def terminal_console() -> Console:
    """A console for tables on stdout: the terminal's width, or wide enough when piped to a file."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=200)


def print_tables(console: Console, tables: list[Table]) -> None:
    for table in tables:
        console.print(table)
