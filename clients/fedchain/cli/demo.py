"""`fedchain demo`: a devnet, a task, its devices and aggregators, each round shown as it happens."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from fedchain.cli.common import console, exit_on_sigterm, parse_strategy
from fedchain.cli.options import (
    Chain,
    DatasetName,
    DpClipNorm,
    JsonSummary,
    Rounds,
    StrategyName,
    StrategyParams,
    StreamBuffer,
    StreamSpeed,
    Threshold,
    Timeout,
    Workdir,
)


def demo(
    devices: Annotated[
        int | None,
        typer.Option(help="Number of device processes (default 5, or 10 with --attackers or --secure-aggregation)."),
    ] = None,
    rounds: Rounds = 10,
    dataset: DatasetName = "breast_cancer",
    stream_buffer: StreamBuffer = 0,
    stream_speed: StreamSpeed = 1.0,
    chain: Chain = "ganache",
    non_iid: Annotated[float | None, typer.Option(help="Dirichlet α for label-skewed device data.")] = None,
    online: Annotated[bool, typer.Option(help="Device data arrives as a stream.")] = True,
    strategy: StrategyName = "fedavg",
    strategy_param: StrategyParams = None,
    aggregators: Annotated[int, typer.Option(help="Aggregator processes (k-of-n agreement by commit-reveal).")] = 1,
    threshold: Threshold = None,
    lying_aggregators: Annotated[
        int, typer.Option(help="Evaluation: how many of the aggregators reveal corrupted models.")
    ] = 0,
    attackers: Annotated[float, typer.Option(help="Evaluation: fraction of Byzantine devices, e.g. 0.3.")] = 0.0,
    attack: Annotated[
        str, typer.Option(help="What attackers do: sign-flip, sign-flip-x10, scale, gaussian, constant, label-flip.")
    ] = "sign-flip-x10",
    as_json: JsonSummary = False,
    workdir: Workdir = None,
    timeout: Timeout = 900.0,
    explorer: Annotated[
        bool, typer.Option("--explorer", help="Serve the round explorer during the demo and keep it up after.")
    ] = False,
    explorer_port: Annotated[int, typer.Option(help="Port of the explorer on 127.0.0.1.")] = 8000,
    secure_aggregation: Annotated[
        bool,
        typer.Option("--secure-aggregation", help="Devices upload masked updates; aggregators learn only the sum."),
    ] = False,
    seal_updates: Annotated[
        bool,
        typer.Option("--seal-updates", help="Encrypt each update to the aggregators' keys (no secure aggregation)."),
    ] = False,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            help="Client-level differential privacy with this ε budget on chain (needs --secure-aggregation)."
        ),
    ] = None,
    dp_clip_norm: DpClipNorm = 0.25,
    dropout: Annotated[
        float, typer.Option(help="Evaluation: fraction of devices dropping out of every round after their setup.")
    ] = 0.0,
    submit: Annotated[
        str,
        typer.Option(
            help="Virtual devices: batch (devices sign, each pool relays a round's updates in one transaction) or "
            "direct (every device sends its own submitUpdate)."
        ),
    ] = "batch",
    persist: Annotated[
        bool,
        typer.Option(
            help="Keep the demo's chain on disk and restart a crashed chain or IPFS service behind proxies that hold "
            "requests meanwhile (as `fedchain devnet` does); slower. IPFS is restarted either way."
        ),
    ] = False,
    virtual: Annotated[
        bool | None,
        typer.Option(
            "--virtual/--no-virtual",
            help="Run devices as virtual devices in pool processes (default: above 20 devices) or one process each.",
        ),
    ] = None,
    pools: Annotated[
        int | None, typer.Option(help="Pool processes for virtual devices (default: one per 250 devices, <= cores).")
    ] = None,
    fork: Annotated[
        bool,
        typer.Option(
            help="Fork the device, pool and aggregator processes from one that imported torch and web3 once "
            "(faster start-up); --no-fork starts each as a new Python."
        ),
    ] = True,
) -> None:
    """Start a devnet, deploy a task, run one process per device and per aggregator, and show each round.

    With --attackers, Byzantine devices join; with --aggregators 3 --lying-aggregators 1, a dishonest aggregator
    takes part in the agreement and is recorded on chain as faulty.
    """
    from fedchain.app.demo import DemoOptions, run_demo
    from fedchain.learning.catalog import task_spec_for

    exit_on_sigterm()

    def keep_exploring(summary: dict) -> None:
        if as_json:
            print(json.dumps(summary), flush=True)
        console.print(
            f"[bold]explorer still up at {summary['explorer_url']}[/]: open task {summary['task']}, follow a round "
            "from a device's transaction to the aggregate model. Ctrl-C stops the explorer and the devnet."
        )
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass

    try:
        spec = task_spec_for(dataset)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dataset") from None
    options = DemoOptions(
        devices=devices if devices is not None else (10 if attackers > 0 or secure_aggregation else 5),
        rounds=rounds,
        spec=spec,
        stream_buffer=stream_buffer,
        stream_speed=stream_speed,
        strategy=parse_strategy(strategy, strategy_param),
        aggregators=aggregators,
        threshold=threshold,
        lying_aggregators=lying_aggregators,
        attackers=attackers,
        attack=attack,
        chain=chain,
        non_iid=non_iid,
        online=online,
        workdir=workdir or Path(".fedchain") / f"demo-{int(time.time())}-{os.getpid()}",
        timeout=timeout,
        explorer_port=explorer_port if explorer else None,
        secure_aggregation=secure_aggregation,
        seal_updates=seal_updates,
        dp_epsilon=dp_epsilon,
        dp_clip_norm=dp_clip_norm,
        dropout=dropout,
        virtual=virtual,
        pools=pools,
        submit=submit,
        persist=persist,
        fork=fork,
    )
    try:
        options.check()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    summary = run_demo(
        options, console=console, live=not as_json or sys.stderr.isatty(), after=keep_exploring if explorer else None
    )
    if as_json and not explorer:
        print(json.dumps(summary))
