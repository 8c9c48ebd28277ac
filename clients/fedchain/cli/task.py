"""A task's admin: `fedchain deploy` (description and initial model on IPFS, participants, round 1) and
`fedchain start` (round 1 of a task deployed without it)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from fedchain.cli.common import console, endpoints, parse_strategy, signing_account
from fedchain.cli.options import (
    DEVNET_STATE_FILE,
    AccountIndex,
    AsJson,
    DatasetName,
    DpClipNorm,
    IpfsApi,
    KeyEnv,
    Keystore,
    Rounds,
    RpcUrl,
    StateFile,
    StrategyName,
    StrategyParams,
    TaskAddress,
    Threshold,
)


def deploy(
    rounds: Rounds = 10,
    dataset: DatasetName = "breast_cancer",
    mode: Annotated[
        str,
        typer.Option(
            help="sync: rounds that wait for their devices (FederatedTask); buffered: asynchronous buffered versions "
            "(BufferedTask, FedBuff), --rounds versions of --buffer-size updates each.",
        ),
    ] = "sync",
    buffer_size: Annotated[int, typer.Option(help="Buffered: updates (K) aggregated into each version.")] = 3,
    max_staleness: Annotated[
        int, typer.Option(help="Buffered: versions an update's base may lag behind the latest when submitted.")
    ] = 3,
    staleness_weighting: Annotated[
        str, typer.Option(help="Buffered: polynomial (FedBuff's 1/sqrt(1+s)) or constant.")
    ] = "polynomial",
    buffer_duration: Annotated[
        int, typer.Option(help="Buffered: seconds after which a buffer with --min-buffer-size updates may close.")
    ] = 0,
    min_buffer_size: Annotated[int, typer.Option(help="Buffered: updates an early-closed buffer needs.")] = 0,
    devices: Annotated[int, typer.Option(help="Approve devnet accounts 2..2+N-1 as devices.")] = 5,
    min_updates: Annotated[int | None, typer.Option(help="Updates needed once the deadline passes.")] = None,
    max_updates: Annotated[
        int | None, typer.Option(help="Updates that close a round at once (default: devices).")
    ] = None,
    round_duration: Annotated[
        int, typer.Option(help="Round deadline in seconds (secure aggregation: its first half is the setup window).")
    ] = 120,
    device_address: Annotated[list[str] | None, typer.Option("--device-address", help="Approve these devices.")] = None,
    aggregator_address: Annotated[
        list[str] | None, typer.Option("--aggregator-address", help="Grant AGGREGATOR_ROLE to these accounts.")
    ] = None,
    relayer_address: Annotated[
        list[str] | None,
        typer.Option(
            "--relayer-address",
            help="Also grant RELAYER_ROLE (relayed batches of signed updates) to these accounts; aggregators have it.",
        ),
    ] = None,
    strategy: StrategyName = "fedavg",
    strategy_param: StrategyParams = None,
    threshold: Threshold = None,
    aggregation_duration: Annotated[int, typer.Option(help="Seconds of the commit and of the reveal window.")] = 60,
    max_samples_per_update: Annotated[
        int, typer.Option(help="Largest sample count (FedAvg weight) one update may claim; the contract refuses more.")
    ] = 100_000,  # fedchain.app.deploy.DEFAULT_MAX_SAMPLES_PER_UPDATE (not imported: the CLI loads torch lazily)
    max_aggregator_faults: Annotated[
        int, typer.Option(help="Dissenting or withheld reveals after which an aggregator is suspended.")
    ] = 3,  # fedchain.app.deploy.DEFAULT_MAX_AGGREGATOR_FAULTS
    no_start: Annotated[bool, typer.Option("--no-start", help="Deploy without opening round 1.")] = False,
    secure_aggregation: Annotated[
        bool,
        typer.Option(
            "--secure-aggregation",
            help="Devices upload masked updates (SecAgg). Round 1 opens with `fedchain start --wait-for-keys`.",
        ),
    ] = False,
    seal_updates: Annotated[
        bool, typer.Option("--seal-updates", help="Devices encrypt each update to the aggregators' keys.")
    ] = False,
    dp_epsilon: Annotated[
        float | None, typer.Option(help="Client-level DP: the ε budget on chain (needs --secure-aggregation).")
    ] = None,
    dp_clip_norm: DpClipNorm = 0.25,
    dp_delta: Annotated[float, typer.Option(help="Differential privacy: the accountant's δ.")] = 1e-5,
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
    as_json: AsJson = False,
) -> None:
    """Deploy a training task (description and initial model on IPFS), approve participants, open round 1."""
    from fedchain.app.deploy import TaskPlan, create_task, default_min_updates
    from fedchain.chain import connect
    from fedchain.chain.accounts import devnet_addresses
    from fedchain.storage import IpfsClient

    rpc, api = endpoints(state_file, rpc_url, ipfs_api)
    admin = signing_account(account, key_env, keystore, default_index=0)
    on_devnet = key_env is None and keystore is None
    device_list = list(device_address or [])
    aggregator_list = list(aggregator_address or [])
    if on_devnet and not device_list:
        device_list = devnet_addresses(2 + devices)[2:]
    if on_devnet and not aggregator_list:
        aggregator_list = [devnet_addresses(2)[1]]
    n = len(device_list) or devices
    if mode not in ("sync", "buffered"):
        raise typer.BadParameter("--mode must be sync or buffered", param_hint="--mode")
    if mode == "buffered":
        _deploy_buffered(
            rpc,
            api,
            admin,
            as_json,
            rounds=rounds,
            buffer_size=buffer_size,
            max_staleness=max_staleness,
            weighting=staleness_weighting,
            buffer_duration=buffer_duration,
            min_buffer_size=min_buffer_size,
            strategy=parse_strategy(strategy, strategy_param),
            threshold=threshold,
            aggregation_duration=aggregation_duration,
            max_samples_per_update=max_samples_per_update,
            max_aggregator_faults=max_aggregator_faults,
            devices=device_list,
            aggregators=aggregator_list,
            start=not no_start,
            private=secure_aggregation or seal_updates,
            dataset=dataset,
        )
        return
    try:
        spec, first_epsilon = private_spec(
            rounds, secure_aggregation, seal_updates, dp_epsilon, dp_clip_norm, dp_delta, dataset=dataset
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    plan = TaskPlan(
        spec=spec,
        secure_aggregation=secure_aggregation,
        epsilon_budget=dp_epsilon or 0.0,
        first_round_epsilon=first_epsilon,
        strategy=parse_strategy(strategy, strategy_param),
        aggregator_threshold=threshold,
        aggregation_duration=aggregation_duration,
        max_samples_per_update=max_samples_per_update,
        max_aggregator_faults=max_aggregator_faults,
        num_rounds=rounds,
        min_updates=min_updates or default_min_updates(n),
        max_updates=max_updates or n,
        round_duration=round_duration,
        devices=tuple(device_list),
        aggregators=tuple(aggregator_list),
        relayers=tuple(relayer_address or ()),
        # A secure-aggregation round's participants are the devices with a key when it opens: start later.
        start=not no_start and not secure_aggregation,
    )
    with IpfsClient(api) as client:
        try:
            deployed = create_task(connect(rpc, wait=10), admin, client, plan)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    result = {
        "task": deployed.address,
        "admin": admin.address,
        "spec_cid": deployed.spec_cid,
        "initial_model_cid": deployed.initial_model_cid,
        "devices": device_list,
        "aggregators": aggregator_list,
        "aggregator_threshold": plan.threshold(),
        "max_samples_per_update": plan.max_samples_per_update,
        "max_aggregator_faults": plan.max_aggregator_faults,
        "relayers": list(plan.relayer_accounts()),
        "strategy": plan.task_spec().strategy_spec().to_dict(),
        "gas": deployed.gas,
    }
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"task deployed at [bold]{deployed.address}[/] (admin {admin.address})")
        console.print(f"model description {deployed.spec_cid}, initial model {deployed.initial_model_cid}")
        console.print(f"{len(device_list)} devices approved, aggregators: {', '.join(aggregator_list) or 'none'}")
        if secure_aggregation:
            console.print(
                "secure aggregation: start the devices, then open round 1 with "
                f"`fedchain start --task {deployed.address} --wait-for-keys`"
            )


def _deploy_buffered(rpc: str, api: str, admin: Any, as_json: bool, **options: Any) -> None:
    """`fedchain deploy --mode buffered`: an asynchronous buffered task (fedchain.app.deploy.create_buffered_task)."""
    from fedchain.app.deploy import BufferedPlan, create_buffered_task
    from fedchain.chain import connect
    from fedchain.chain.buffered import WEIGHTING_CONSTANT, WEIGHTING_POLYNOMIAL
    from fedchain.learning.catalog import task_spec_for
    from fedchain.learning.spec import PrivacySpec

    weightings = {"polynomial": WEIGHTING_POLYNOMIAL, "constant": WEIGHTING_CONSTANT}
    if options["weighting"] not in weightings:
        raise typer.BadParameter("must be polynomial or constant", param_hint="--staleness-weighting")
    spec = task_spec_for(options["dataset"])
    if options["private"]:  # refused by create_buffered_task with the reason
        from dataclasses import replace

        spec = replace(spec, privacy=PrivacySpec(secure_aggregation=True))
    plan = BufferedPlan(
        spec=spec,
        num_versions=options["rounds"],
        buffer_size=options["buffer_size"],
        max_staleness=options["max_staleness"],
        strategy=options["strategy"],
        devices=tuple(options["devices"]),
        aggregators=tuple(options["aggregators"]),
        aggregator_threshold=options["threshold"],
        aggregation_duration=options["aggregation_duration"],
        weighting_id=weightings[options["weighting"]],
        buffer_duration=options["buffer_duration"],
        min_buffer_size=options["min_buffer_size"],
        max_samples_per_update=options["max_samples_per_update"],
        max_aggregator_faults=options["max_aggregator_faults"],
        start=options["start"],
    )
    from fedchain.storage import IpfsClient

    with IpfsClient(api) as client:
        try:
            deployed = create_buffered_task(connect(rpc, wait=10), admin, client, plan)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    result = {
        "task": deployed.address,
        "mode": "buffered",
        "admin": admin.address,
        "spec_cid": deployed.spec_cid,
        "initial_model_cid": deployed.initial_model_cid,
        "devices": list(plan.devices),
        "aggregators": list(plan.aggregators),
        "aggregator_threshold": plan.threshold(),
        "num_versions": plan.num_versions,
        "buffer_size": plan.buffer_size,
        "max_staleness": plan.max_staleness,
        "staleness_weighting": options["weighting"],
        "strategy": plan.task_spec().strategy_spec().to_dict(),
        "gas": deployed.gas,
    }
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"buffered task deployed at [bold]{deployed.address}[/] (admin {admin.address})")
        console.print(
            f"{plan.num_versions} versions of {plan.buffer_size} updates, staleness bound {plan.max_staleness}, "
            f"{len(plan.devices)} devices, aggregators: {', '.join(plan.aggregators) or 'none'}"
        )


def private_spec(
    rounds: int,
    secure: bool,
    seal: bool,
    epsilon: float | None,
    clip: float,
    delta: float,
    dataset: str = "breast_cancer",
) -> tuple[Any, float]:
    """The dataset's task description (the default task for breast_cancer) with the requested privacy, and the
    accountant's ε after one round."""
    from dataclasses import replace

    from fedchain.learning.catalog import task_spec_for
    from fedchain.learning.spec import PrivacySpec
    from fedchain.privacy.accountant import epsilon_after, noise_multiplier_for_chain

    if epsilon is not None and not secure:
        raise ValueError("--dp-epsilon splits the noise among devices, which needs --secure-aggregation")
    noise = noise_multiplier_for_chain(epsilon, delta, rounds) if epsilon is not None else 0.0
    privacy = PrivacySpec(
        secure_aggregation=secure,
        seal_updates=seal,
        dp_clip_norm=clip if epsilon is not None else 0.0,
        dp_noise_multiplier=noise,
        dp_delta=delta,
    )
    first = epsilon_after(1, noise, 1.0, delta) if epsilon is not None else 0.0
    return replace(task_spec_for(dataset), privacy=privacy), first


def start(
    task: TaskAddress,
    wait_for_keys: Annotated[
        bool,
        typer.Option("--wait-for-keys", help="First wait until every approved device has registered its key."),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the keys.")] = 300.0,
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
) -> None:
    """Open round 1 of a task deployed with --no-start or --secure-aggregation (the admin's call)."""
    from fedchain.app.deploy import wait_for_encryption_keys
    from fedchain.chain import EventFollower, TaskClient, connect

    rpc, _ = endpoints(state_file, rpc_url, ipfs_api)
    client = TaskClient.for_account(
        connect(rpc, wait=10), task, signing_account(account, key_env, keystore, default_index=0)
    )
    if wait_for_keys:
        approved = {
            e.args["device"] for e in EventFollower(client.w3, client.address, client.abi).history("DeviceApproved")
        }
        devices = [d for d in sorted(approved) if client.device_info(d).approved]
        try:
            wait_for_encryption_keys(client, devices, timeout=timeout)
        except TimeoutError as exc:
            console.print(f"[red]not started[/]: {exc}")
            raise typer.Exit(2) from None
    tx = client.start()
    console.print(f"task {client.address}: round 1 is open (gas {tx.gas_used})")
