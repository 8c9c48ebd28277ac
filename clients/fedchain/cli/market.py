"""The compute market: `fedchain worker`, `fedchain coordinator` and `fedchain market-demo`."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from fedchain.cli.common import console, endpoints, exit_on_sigterm, setup_logging, signing_account
from fedchain.cli.options import (
    DEVNET_STATE_FILE,
    AccountIndex,
    Chain,
    IpfsApi,
    JsonSummary,
    KeyEnv,
    Keystore,
    MarketAddress,
    RpcUrl,
    StateFile,
    Timeout,
    Verbose,
    Workdir,
)


def worker(
    market: MarketAddress,
    job: Annotated[int | None, typer.Option("--job", help="Serve only this job (default: every job posted).")] = None,
    stake_wei: Annotated[
        int, typer.Option("--stake-wei", help="Stake to register with, in wei (default: the market's minimum).")
    ] = 0,
    cheat: Annotated[
        bool, typer.Option("--cheat", help="Evaluation only: submit perturbed results (the market slashes them).")
    ] = False,
    lazy: Annotated[
        bool,
        typer.Option("--lazy", help="Evaluation only: copy other replicas instead of computing (never paid)."),
    ] = False,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Compute several claimed units at once on this Ray cluster.")
    ] = None,
    ray_local: Annotated[
        int | None, typer.Option("--ray-local", help="Compute up to N claimed units at once on a local Ray.")
    ] = None,
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
    verbose: Verbose = False,
) -> None:
    """Lend this machine to the compute market: stake, claim units, compute them reproducibly, get paid."""
    # Before torch or numpy is imported: single-threaded, pinned kernels (see fedchain.protocol.worker_env).
    from fedchain.protocol.worker_env import apply_worker_env

    apply_worker_env()
    from fedchain.market.worker import MarketWorker, WorkerSettings

    setup_logging(verbose)
    exit_on_sigterm()
    rpc, api = endpoints(state_file, rpc_url, ipfs_api)
    if ray_address is not None and ray_local is not None:
        raise typer.BadParameter("give --ray-address or --ray-local, not both")
    if cheat and lazy:
        raise typer.BadParameter("give --cheat or --lazy, not both")
    settings = WorkerSettings(
        market,
        rpc,
        api,
        job_id=job,
        stake=stake_wei,
        cheat=cheat,
        lazy=lazy,
        ray_address=ray_address,
        ray_local=ray_local,
    )
    try:
        runner = MarketWorker(settings, signing_account(account, key_env, keystore, default_index=2))
    except RuntimeError as exc:  # the determinism canary failed
        console.print(f"[red]worker cannot compute units here[/]: {exc}")
        raise typer.Exit(2) from None
    try:
        runner.run()
    except KeyboardInterrupt:
        logging.getLogger("fedchain.market.worker").info("stopped")


def coordinator(
    market: MarketAddress,
    job: Annotated[int, typer.Option("--job", help="The job to coordinate.")],
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
    verbose: Verbose = False,
) -> None:
    """Coordinate a market job: merge each stage's accepted results and commit the stage's checkpoint."""
    from fedchain.protocol.worker_env import apply_worker_env

    apply_worker_env()
    from fedchain.chain import ContractRevert
    from fedchain.market.coordinator import CoordinatorSettings, MarketCoordinator

    setup_logging(verbose)
    exit_on_sigterm()
    rpc, api = endpoints(state_file, rpc_url, ipfs_api)
    try:
        runner = MarketCoordinator(
            CoordinatorSettings(market, rpc, api, job_id=job),
            signing_account(account, key_env, keystore, default_index=1),
        )
    except (PermissionError, ContractRevert) as exc:
        console.print(f"[red]cannot coordinate job {job}[/]: {exc}")
        raise typer.Exit(2) from None
    try:
        runner.run()
    except KeyboardInterrupt:
        logging.getLogger("fedchain.market.coordinator").info("stopped")


def market_demo(
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 4,
    cheaters: Annotated[int, typer.Option(help="Evaluation: how many of the workers cheat.")] = 1,
    lazy: Annotated[
        int, typer.Option(help="Evaluation: how many of the workers copy other replicas instead of computing.")
    ] = 0,
    claim_duration: Annotated[int, typer.Option(help="Seconds a claim, and a unit's reveal window, stay open.")] = 600,
    chain: Chain = "ganache",
    stages: Annotated[int, typer.Option(help="Stages of the job.")] = 3,
    units_per_stage: Annotated[int, typer.Option(help="Units per stage.")] = 4,
    steps_per_unit: Annotated[int, typer.Option(help="SGD steps per unit.")] = 100,
    as_json: JsonSummary = False,
    workdir: Workdir = None,
    timeout: Timeout = 900.0,
    ray_local: Annotated[
        int | None,
        typer.Option("--ray-local", help="Each worker computes up to N claimed units at once on a local Ray."),
    ] = None,
) -> None:
    """A training job on the compute market: staked workers compute replicated units (cheaters are slashed), a
    coordinator merges each stage; the final model is compared with the same plan trained in one process."""
    from fedchain.app.market_demo import MarketDemoOptions, run_market_demo

    exit_on_sigterm()
    options = MarketDemoOptions(
        workers=workers,
        cheaters=cheaters,
        lazy=lazy,
        claim_duration=claim_duration,
        chain=chain,
        num_stages=stages,
        units_per_stage=units_per_stage,
        steps_per_unit=steps_per_unit,
        workdir=workdir or Path(".fedchain") / f"market-demo-{int(time.time())}-{os.getpid()}",
        timeout=timeout,
        ray_local=ray_local,
    )
    try:
        options.check()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    summary = run_market_demo(options, console=console)
    if as_json:
        print(json.dumps(summary))
