"""Terminal views of the chain from the explorer's index: `fedchain status`, `fedchain rounds`, `fedchain report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedchain.cli.common import console, endpoints
from fedchain.cli.options import DEVNET_STATE_FILE, AsJson, IndexFile, IpfsApi, RpcUrl, StateFile, TaskAddress

if TYPE_CHECKING:
    from fedchain.explorer.queries import Explorer


def synced(state_file: Path, rpc_url: str | None, ipfs_api: str | None, index: Path | None) -> Explorer:
    from fedchain.explorer.rpc import RpcError
    from fedchain.explorer.terminal import synced_explorer

    rpc, api = endpoints(state_file, rpc_url, ipfs_api)
    try:
        return synced_explorer(rpc, api, index)
    except RpcError as exc:
        console.print(f"[red]cannot index the chain[/]: {exc}")
        raise typer.Exit(2) from None


def task_data(explorer: Explorer, task: str) -> dict:
    from fedchain.explorer.queries import BadInput, NotFound

    try:
        return explorer.task(task)
    except (NotFound, BadInput) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


def status(
    as_json: AsJson = False,
    index: IndexFile = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
) -> None:
    """The chain, the IPFS node and every task, as tables (from the explorer's index, brought up to date)."""
    from fedchain.explorer.terminal import print_tables, status_tables, terminal_console

    data = synced(state_file, rpc_url, ipfs_api, index).overview()
    if as_json:
        print(json.dumps(data))
        return
    print_tables(terminal_console(), status_tables(data))


def rounds(
    task: TaskAddress,
    as_json: AsJson = False,
    index: IndexFile = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
) -> None:
    """A task's rounds: state, updates, accuracy and loss (aggregator-evaluated), gas, duration, aggregate CID."""
    from fedchain.explorer.terminal import rounds_table, terminal_console

    data = task_data(synced(state_file, rpc_url, ipfs_api, index), task)
    if as_json:
        print(json.dumps(data["rounds"]))
        return
    terminal_console().print(rounds_table(data))


def report(
    task: TaskAddress,
    out: Annotated[Path, typer.Option(help="Output file: .png, .svg, .pdf or .html.")] = Path("report.png"),
    index: IndexFile = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
) -> None:
    """Accuracy, loss and gas per round of a task as a picture (or a self-contained HTML page)."""
    from fedchain.explorer.report import write_report

    data = task_data(synced(state_file, rpc_url, ipfs_api, index), task)
    try:
        write_report(data, out)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"wrote {out} ({len(data['rounds'])} rounds)")
