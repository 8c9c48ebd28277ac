"""The services: `fedchain ipfs` (the embedded Kubo node), `fedchain devnet` (a local chain and IPFS, kept and
restarted) and `fedchain explorer` (the round explorer's pages and JSON API)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from fedchain.cli.common import console, endpoints, exit_on_sigterm, setup_logging
from fedchain.cli.options import DEVNET_STATE_FILE, Chain, IpfsApi, RpcUrl, StateFile, Verbose


def ipfs(
    repo: Annotated[Path, typer.Option(help="Kubo repository folder.")] = Path(".fedchain/ipfs-repo"),
    port: Annotated[int, typer.Option(help="Port of the Kubo RPC API on 127.0.0.1 (0: any free port).")] = 5001,
    ready_file: Annotated[Path | None, typer.Option(help="Write the API URL here once listening.")] = None,
) -> None:
    """Run the embedded Kubo node and serve the Kubo RPC subset on 127.0.0.1."""
    from fedchain.storage.node import serve

    serve(repo, port=port, ready_file=ready_file)


def devnet(
    chain: Chain = "ganache",
    rpc_port: Annotated[int, typer.Option(help="Chain RPC port on 127.0.0.1.")] = 8545,
    ipfs_port: Annotated[int, typer.Option(help="Kubo RPC port on 127.0.0.1.")] = 5001,
    accounts: Annotated[int, typer.Option(help="Funded accounts.")] = 30,
    state_file: StateFile = DEVNET_STATE_FILE,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the chain, the IPFS repo and the logs are kept (default: devnet-CHAIN beside the state "
            "file). Started again on the same folder, the devnet resumes the same chain, even after a crash."
        ),
    ] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the kept chain and IPFS repo: start over.")] = False,
) -> None:
    """Start a local chain (Ganache or Anvil) and the IPFS service, kept on disk and restarted if they die; write
    the state file; run until Ctrl-C."""
    from fedchain.app.devnet import Devnet

    setup_logging(False)
    exit_on_sigterm()
    workdir = data_dir or state_file.parent / f"devnet-{chain}"
    net = Devnet(workdir, chain, rpc_port, ipfs_port, accounts, persist=True, fresh=fresh, state_file=state_file)
    stopped_cleanly = False
    try:
        state = net.start()
        state.save(state_file)
        console.print(
            f"[green]devnet up[/]: {chain} at {state.rpc_url} (chain id {state.chain_id}), IPFS at {state.ipfs_api}"
        )
        console.print(
            f"state file: {state_file}; {len(state.accounts)} funded accounts; chain kept in {net.chain_dir}; "
            "Ctrl-C stops it"
        )
        reported: set[str] = set()
        while True:
            # A service that keeps dying is given up on; the other one (above all the chain) keeps running.
            for name, why in net.gave_up.items():
                if name not in reported:
                    console.print(f"[red]devnet {name} is down for good[/]: {why}")
                    reported.add(name)
            time.sleep(1)
    except KeyboardInterrupt:
        stopped_cleanly = True
    finally:
        net.stop()
        if stopped_cleanly:  # after a crash the file still says where the (resumable) devnet was
            state_file.unlink(missing_ok=True)
        console.print(f"devnet stopped; its chain is kept in {net.chain_dir} (--fresh starts over)")


def explorer(
    port: Annotated[int, typer.Option(help="Port on the host.")] = 8000,
    host: Annotated[str, typer.Option(help="Loopback address to bind (127.0.0.1 or ::1).")] = "127.0.0.1",
    index: Annotated[
        Path | None, typer.Option(help="Index file (SQLite); default .fedchain/explorer/index-<rpc>.sqlite.")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="full (every block), light (task logs only) or auto (full on devnets).")
    ] = "auto",
    from_block: Annotated[
        int | None, typer.Option(help="First block to index (default 0; on public chains the last 5000).")
    ] = None,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Also watch this task (public chains, created earlier).")
    ] = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
    verbose: Verbose = False,
) -> None:
    """Serve the round explorer (pages and JSON API) on 127.0.0.1, indexing the chain as it grows."""
    from fedchain.chain.errors import ChainError
    from fedchain.explorer.app import ExplorerConfig, check_loopback_host, serve
    from fedchain.explorer.rpc import RpcError

    setup_logging(verbose)
    exit_on_sigterm()
    try:
        check_loopback_host(host)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    rpc, api = endpoints(state_file, rpc_url, ipfs_api)
    config = ExplorerConfig(rpc, api, index_path=index, mode=mode, from_block=from_block, watch_tasks=list(task or []))
    shown = f"[{host}]" if ":" in host else host
    console.print(f"explorer: http://{shown}:{port}/ (chain {rpc}, IPFS {api}); Ctrl-C stops it")
    try:
        serve(config, host=host, port=port)
    except KeyboardInterrupt:
        pass
    except (RpcError, ChainError, ValueError) as exc:
        console.print(f"[red]explorer cannot start[/]: {exc}")
        raise typer.Exit(2) from None
