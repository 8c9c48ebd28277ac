"""What the `fedchain` commands share besides their options: the console, logging, endpoints, the signing account,
the launch file, ready files, SIGTERM handling and the --strategy parser.

Every import of the library happens inside a function: the CLI starts without torch, web3 or numpy.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from fedchain.learning.aggregation.registry import StrategySpec

console = Console(stderr=True)
# How long a process started with --launch-file waits for its supervisor to deploy the task.
LAUNCH_TIMEOUT = 600.0


def parse_strategy(name: str, params: list[str] | None) -> StrategySpec:
    """A StrategySpec from --strategy and --strategy-param; BadParameter with the reason otherwise."""
    from fedchain.learning.aggregation.registry import StrategySpec

    parsed: dict[str, object] = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--strategy-param")
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise typer.BadParameter(f"{key}: {value!r} is not a number", param_hint="--strategy-param") from None
    try:
        return StrategySpec(name, parsed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy") from None


def setup_logging(verbose: bool) -> None:
    # force: some libraries (Opacus) configure the root logger when imported, which would silence ours.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("httpx", "httpcore", "urllib3", "web3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def endpoints(state_file: Path, rpc_url: str | None, ipfs_api: str | None) -> tuple[str, str]:
    """The chain's JSON-RPC URL and the Kubo RPC API: as given, else from the devnet's state file."""
    if rpc_url and ipfs_api:
        return rpc_url, ipfs_api
    from fedchain.app.devnet import DevnetState

    try:
        state = DevnetState.load(state_file)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    return rpc_url or state.rpc_url, ipfs_api or state.ipfs_api


def signing_account(
    index: int | None, key_env: str | None, keystore: Path | None, default_index: int | None
) -> LocalAccount:
    """The account from --account, --key-env or --keystore; the devnet account `default_index` when none is given."""
    from fedchain.chain.accounts import resolve_account

    if index is None and key_env is None and keystore is None:
        index = default_index
    try:
        return resolve_account(index, key_env=key_env, keystore=keystore)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def launch_target(
    launch_file: Path | None, task: str | None, rpc_url: str | None, ipfs_api: str | None
) -> tuple[str, str | None, str | None]:
    """The task and endpoints: from the options, or from `launch_file` once a supervisor has written it."""
    if launch_file is None:
        if task is None:
            raise typer.BadParameter("give the task contract address (or --launch-file)", param_hint="--task")
        return task, rpc_url, ipfs_api
    from fedchain.app.launch import wait_for_launch

    try:
        target = wait_for_launch(launch_file, timeout=LAUNCH_TIMEOUT)
    except (TimeoutError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--launch-file") from None
    return target.task, target.rpc_url or rpc_url, target.ipfs_api or ipfs_api


def touch(path: Path | None) -> None:
    """Create `path` (a ready file), if one was asked for."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def exit_on_sigterm() -> None:
    # Turn SIGTERM into KeyboardInterrupt so `finally` blocks run and children are stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
