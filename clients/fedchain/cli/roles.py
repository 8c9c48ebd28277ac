"""The participants of a task: `fedchain device` (one device), `fedchain pool` (many virtual devices in one process)
and `fedchain aggregator`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from fedchain.cli.common import (
    console,
    endpoints,
    exit_on_sigterm,
    launch_target,
    setup_logging,
    signing_account,
    touch,
)
from fedchain.cli.options import (
    DEVNET_STATE_FILE,
    AccountIndex,
    DataSeed,
    IpfsApi,
    KeyEnv,
    Keystore,
    LaunchFile,
    MaxRounds,
    Online,
    OptionalTask,
    ReadyFile,
    RpcUrl,
    Runtime,
    StateFile,
    StreamBuffer,
    StreamSpeed,
    TaskMode,
    Verbose,
)


def device(
    task: OptionalTask = None,
    partition: Annotated[str, typer.Option(help="This device's share of the demo dataset, I/N (0-based).")] = "0/1",
    non_iid: Annotated[float | None, typer.Option(help="Dirichlet α for a label-skewed partition.")] = None,
    data_seed: DataSeed = 0,
    online: Online = True,
    max_rounds: MaxRounds = None,
    attack: Annotated[
        str | None,
        typer.Option(
            help="Evaluation only: act as a Byzantine device (sign-flip, sign-flip-x10, scale, gaussian, constant, "
            "label-flip)."
        ),
    ] = None,
    drop_after_setup: Annotated[
        bool,
        typer.Option(
            "--drop-after-setup",
            help="Evaluation only: drop out of every secure-aggregation round right after publishing the setup.",
        ),
    ] = False,
    stream_buffer: StreamBuffer = 0,
    stream_speed: StreamSpeed = 1.0,
    sensor_fault_rate: Annotated[
        float, typer.Option(help="Evaluation only: fraction of streamed windows with NaN samples (refused).")
    ] = 0.0,
    sensor_faults: Annotated[
        str,
        typer.Option(
            help="Buffered, evaluation only: the kinds of faulty windows --sensor-fault-rate hands over, comma-"
            "separated: nan (NaN samples), short (wrong length), rate (wrong sampling rate)."
        ),
    ] = "nan",
    stream_min_new: Annotated[
        int, typer.Option(help="Buffered, streaming: new windows since the previous training before training again.")
    ] = 1,
    drift_at: Annotated[
        float | None,
        typer.Option(
            help="Buffered, streaming, evaluation only: move the watch (6-channel IMU tasks) once this fraction of "
            "the device's recordings has played; the later ones arrive in the new placement."
        ),
    ] = None,
    mode: TaskMode = "sync",
    runtime: Runtime = "auto",
    speed_factor: Annotated[
        float, typer.Option(help="Buffered, simulation: each local training takes this many times as long.")
    ] = 1.0,
    min_train_seconds: Annotated[
        float, typer.Option(help="Buffered, simulation: a local training takes at least this long (x speed).")
    ] = 0.0,
    sleep_after: Annotated[
        int | None,
        typer.Option(help="Buffered, simulation: after training this many updates, sleep before submitting."),
    ] = None,
    sleep_seconds: Annotated[float, typer.Option(help="Buffered, simulation: how long --sleep-after sleeps.")] = 0.0,
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
    ready_file: ReadyFile = None,
    launch_file: LaunchFile = None,
    verbose: Verbose = False,
) -> None:
    """Run one device: register, wait for rounds, train locally, upload the update, submit its digest.

    A private task (its description says so) has the device register an encryption key, then either mask its update
    for secure aggregation or seal it to the aggregators' keys."""
    from fedchain.device.runner import DeviceRunner, DeviceSettings, resolve_runtime
    from fedchain.learning.attacks import check_attack
    from fedchain.learning.data import parse_partition

    setup_logging(verbose)
    exit_on_sigterm()
    try:
        runtime = resolve_runtime(runtime)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--runtime") from None
    if runtime == "torch":  # the light runtime never imports torch
        import torch

        torch.set_num_threads(1)  # one process per device; many share the machine's cores
    try:
        index, parts = parse_partition(partition)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if attack is not None:
        try:
            check_attack(attack)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--attack") from None
    task, rpc_url, ipfs_api = launch_target(launch_file, task, rpc_url, ipfs_api)
    rpc, api = endpoints(state_file, rpc_url, ipfs_api)
    if mode == "buffered":
        stream = _stream_settings(
            stream_buffer, stream_speed, sensor_fault_rate, sensor_faults, stream_min_new, drift_at
        )
        _buffered_device(
            task,
            rpc,
            api,
            (index, parts, non_iid, data_seed),
            (speed_factor, min_train_seconds, sleep_after, sleep_seconds),
            signing_account(account, key_env, keystore, default_index=None),
            max_rounds,
            ready_file,
            stream,
            runtime,
        )
        return
    if stream_min_new != 1:  # a synchronous device trains when its round opens
        raise typer.BadParameter("--stream-min-new is an option of --mode buffered devices", param_hint="--mode")
    fault_kinds: tuple[str, ...] = ("nan",)
    if stream_buffer > 0:  # the same checks as a buffered device's stream
        stream = _stream_settings(stream_buffer, stream_speed, sensor_fault_rate, sensor_faults, 1, drift_at)
        fault_kinds = stream.fault_kinds
    elif sensor_faults != "nan" or drift_at is not None:
        raise typer.BadParameter("--sensor-faults and --drift-at need --stream-buffer", param_hint="--stream-buffer")
    settings = DeviceSettings(
        task,
        rpc,
        api,
        index,
        parts,
        non_iid,
        data_seed,
        online,
        attack=attack,
        drop_after_setup=drop_after_setup,
        stream_buffer=stream_buffer,
        stream_speed=stream_speed,
        sensor_fault_rate=sensor_fault_rate,
        sensor_fault_kinds=fault_kinds,
        drift_at=drift_at,
        runtime=runtime,
    )
    runner = DeviceRunner(settings, signing_account(account, key_env, keystore, default_index=None))
    try:
        runner.run(max_rounds=max_rounds, on_ready=lambda: touch(ready_file))
    except KeyboardInterrupt:
        logging.getLogger("fedchain.device").info("stopped")
    except (PermissionError, TimeoutError) as exc:  # removed from the task, or never approved
        console.print(f"[red]device stopped[/]: {exc}")
        raise typer.Exit(2) from None


def _buffered_device(
    task: str,
    rpc: str,
    api: str,
    data: tuple[int, int, float | None, int],
    timing: tuple[float, float, int | None, float],
    account: Any,
    max_updates: int | None,
    ready_file: Path | None,
    stream: Any = None,
    runtime: str = "auto",
) -> None:
    """`fedchain device --mode buffered`: the asynchronous loop of fedchain.device.buffered."""
    from fedchain.device.buffered import BufferedDeviceRunner, BufferedDeviceSettings

    index, parts, non_iid, data_seed = data
    speed, min_seconds, sleep_after, sleep_seconds = timing
    if speed < 1:
        raise typer.BadParameter("--speed-factor must be >= 1", param_hint="--speed-factor")
    settings = BufferedDeviceSettings(
        task, rpc, api, index, parts, non_iid, data_seed,
        speed_factor=speed, min_train_seconds=min_seconds, sleep_after=sleep_after, sleep_seconds=sleep_seconds,
        stream=stream, runtime=runtime,
    )  # fmt: skip
    try:
        runner = BufferedDeviceRunner(settings, account)
    except ValueError as exc:  # e.g. streaming a task that is not a wearable's, drift on a 1-channel ECG
        raise typer.BadParameter(str(exc), param_hint="--stream-buffer") from None
    touch(ready_file)
    try:
        runner.run(max_updates=max_updates)
    except KeyboardInterrupt:
        logging.getLogger("fedchain.device").info("stopped")
    except PermissionError as exc:
        console.print(f"[red]device stopped[/]: {exc}")
        raise typer.Exit(2) from None


def _stream_settings(
    capacity: int, speed: float, fault_rate: float, faults: str, min_new: int, drift_at: float | None
) -> Any:
    """A buffered device's sensor stream (fedchain.device.sensor.StreamSettings), or None without --stream-buffer."""
    from fedchain.device.sensor import FAULT_KINDS, StreamSettings

    kinds = tuple(k.strip() for k in faults.split(",") if k.strip())
    if not kinds or set(kinds) - set(FAULT_KINDS):
        raise typer.BadParameter(f"comma-separated kinds among {', '.join(FAULT_KINDS)}", param_hint="--sensor-faults")
    if min_new < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--stream-min-new")
    if drift_at is not None and not 0.0 <= drift_at < 1.0:
        raise typer.BadParameter("must be in [0, 1)", param_hint="--drift-at")
    if capacity <= 0:
        if fault_rate or drift_at is not None:
            raise typer.BadParameter("needs --stream-buffer N (> 0)", param_hint="--sensor-fault-rate/--drift-at")
        return None
    return StreamSettings(capacity, speed, fault_rate, kinds, min_new, drift_at)


def pool(
    accounts: Annotated[
        str,
        typer.Option(help="Devnet account indices of the pool's devices, START:END (END excluded), e.g. 2:502."),
    ],
    task: OptionalTask = None,
    first_partition: Annotated[
        int, typer.Option(help="Partition index of the pool's first device; the others follow in order.")
    ] = 0,
    num_partitions: Annotated[int, typer.Option(help="Partitions of the dataset (devices in the whole task).")] = 1,
    non_iid: Annotated[float | None, typer.Option(help="Dirichlet α for label-skewed partitions.")] = None,
    data_seed: DataSeed = 0,
    online: Online = True,
    max_rounds: MaxRounds = None,
    relayer_account: Annotated[
        int | None,
        typer.Option(
            help="Devnet account holding RELAYER_ROLE: devices sign their updates (EIP-712) and each round's go on "
            "chain as one batch. Without it every device sends its own submitUpdate."
        ),
    ] = None,
    omit_from_batch: Annotated[
        int, typer.Option(help="Evaluation only: the relayer leaves this many signed updates out of each batch.")
    ] = 0,
    ray_address: Annotated[
        str | None, typer.Option(help="Run the devices as pool actors on the Ray cluster at this address.")
    ] = None,
    ray_local: Annotated[
        int | None, typer.Option(help="Run the devices as pool actors on a local Ray (loopback) with N CPUs.")
    ] = None,
    pools: Annotated[
        int, typer.Option(help="With Ray: pool actors (relayers: --relayer-account and the accounts after it).")
    ] = 1,
    mode: TaskMode = "sync",
    runtime: Runtime = "auto",
    fleet: Annotated[
        str | None,
        typer.Option(
            help="Simulation: device speeds over the whole fleet (--num-partitions devices), e.g. "
            "train=1,slow=0.3x5,sleep=0.1x10,seed=0; a device's updates take its speed's duration (fedchain/device/"
            "schedule.py)."
        ),
    ] = None,
    per_round: Annotated[
        int | None,
        typer.Option(help="Sync with --fleet: devices sampled per round out of the fleet (default: all)."),
    ] = None,
    data_shares: Annotated[
        int | None,
        typer.Option(
            help="With --fleet or --mode buffered: the dataset is cut into this many partitions and device i holds "
            "partition i % N (default: one per device, --num-partitions)."
        ),
    ] = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
    ready_file: ReadyFile = None,
    launch_file: LaunchFile = None,
    verbose: Verbose = False,
) -> None:
    """Run many virtual devices in this process: each its own key, nonce, partition and model, sharing one chain
    connection, one event subscription and one IPFS client. Same training as `fedchain device` per device, on the
    same runtimes (--runtime light: numpy only, no torch imported)."""
    from dataclasses import replace

    from fedchain.chain.accounts import devnet_accounts
    from fedchain.device.pool import DevicePool
    from fedchain.device.runner import DeviceSettings, resolve_runtime

    setup_logging(verbose)
    exit_on_sigterm()
    try:
        runtime = resolve_runtime(runtime)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--runtime") from None
    if runtime == "torch":  # the light runtime never imports torch
        import torch

        torch.set_num_threads(1)  # pools run one per core
    try:
        start, end = (int(x) for x in accounts.split(":"))
    except ValueError:
        raise typer.BadParameter("--accounts must look like START:END, e.g. 2:502", param_hint="--accounts") from None
    if not 0 <= start < end:
        raise typer.BadParameter("--accounts START:END needs 0 <= START < END", param_hint="--accounts")
    if not 0 <= first_partition <= num_partitions - (end - start):
        raise typer.BadParameter(
            f"{end - start} devices from partition {first_partition} do not fit in {num_partitions} partitions",
            param_hint="--first-partition",
        )
    # The devices' keys before the task: under `fedchain demo` this overlaps the devnet's start and the deployment.
    accounts_ = devnet_accounts(range(start, end))
    task, rpc_url, ipfs_api = launch_target(launch_file, task, rpc_url, ipfs_api)
    rpc, api = endpoints(state_file, rpc_url, ipfs_api)
    settings = DeviceSettings(
        task, rpc, api, first_partition, num_partitions, non_iid, data_seed, online, runtime=runtime
    )
    members = [(acct, first_partition + j) for j, acct in enumerate(accounts_)]
    if mode == "buffered" or fleet is not None:
        if data_shares is not None and not 1 <= data_shares <= num_partitions:
            raise typer.BadParameter("must be in 1..--num-partitions", param_hint="--data-shares")
        shares = data_shares or num_partitions
        timed_settings = replace(settings, num_partitions=shares)
        _timed_pool(timed_settings, members, num_partitions, mode, (fleet, per_round), max_rounds, ready_file)
        return
    try:
        if ray_address is not None or ray_local is not None:
            from fedchain.device.ray_pool import run_on_ray, split_accounts

            relayers = [relayer_account + p for p in range(pools)] if relayer_account is not None else None
            shares = split_accounts(start, end, pools, relayers)
            shares = [replace(s, first_partition=first_partition + s.first_partition) for s in shares]
            run_on_ray(
                settings,
                shares,
                address=ray_address,
                local_cpus=ray_local,
                max_rounds=max_rounds,
                on_ready=lambda: touch(ready_file),
            )
            return
        relayer = devnet_accounts([relayer_account])[0] if relayer_account is not None else None
        pool_ = DevicePool(settings, members, relayer=relayer, omit_from_batch=omit_from_batch)
        pool_.run(max_rounds=max_rounds, on_ready=lambda: touch(ready_file))
    except KeyboardInterrupt:
        logging.getLogger("fedchain.device.pool").info("stopped")
    except (PermissionError, TimeoutError, ValueError) as exc:
        console.print(f"[red]pool stopped[/]: {exc}")
        raise typer.Exit(2) from None


def _timed_pool(
    settings: Any,
    members: list[tuple[Any, int]],
    num: int,
    mode: str,
    sampling: tuple[str | None, int | None],
    max_rounds: int | None,
    ready_file: Path | None,
) -> None:
    """`fedchain pool --mode buffered` (fedchain.device.buffered_pool) or `fedchain pool --fleet ...` (sampled
    synchronous rounds, fedchain.device.sampled_pool): virtual devices with simulated speeds, `num` in the fleet,
    device i holding data partition i % settings.num_partitions."""
    from fedchain.device.schedule import DeviceTiming, Fleet

    fleet_arg, per_round = sampling
    try:
        fleet = Fleet.parse(fleet_arg) if fleet_arg is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fleet") from None
    timings = fleet.timings(num) if fleet is not None else [DeviceTiming()] * num
    timed = [(account, index, timings[index]) for account, index in members]
    try:
        if mode == "buffered":
            from fedchain.device.buffered import BufferedDeviceSettings
            from fedchain.device.buffered_pool import BufferedDevicePool

            shares = settings.num_partitions
            buffered = BufferedDeviceSettings(
                settings.task_address, settings.rpc_url, settings.ipfs_api, 0, shares, settings.non_iid_alpha,
                settings.data_seed, runtime=settings.runtime,
            )  # fmt: skip
            by_share = [(account, index % shares, timing) for account, index, timing in timed]
            BufferedDevicePool(buffered, by_share).run(max_updates=max_rounds, on_ready=lambda: touch(ready_file))
        else:
            from fedchain.device.sampled_pool import SampledDevicePool

            seed = fleet.seed if fleet is not None else 0
            pool_ = SampledDevicePool(settings, timed, num, per_round or num, sample_seed=seed)
            pool_.run(max_rounds=max_rounds, on_ready=lambda: touch(ready_file))
    except KeyboardInterrupt:
        logging.getLogger("fedchain.device.pool").info("stopped")
    except (PermissionError, TimeoutError, ValueError) as exc:
        console.print(f"[red]pool stopped[/]: {exc}")
        raise typer.Exit(2) from None


def aggregator(
    task: OptionalTask = None,
    evaluate: Annotated[bool, typer.Option(help="Evaluate each aggregate on the task's held-out set.")] = True,
    lie: Annotated[
        bool, typer.Option("--lie", help="Evaluation only: a dishonest aggregator that reveals corrupted models.")
    ] = False,
    max_update_distance: Annotated[
        float,
        typer.Option(
            help="Leave out an update farther (L2) from the round's global model than this many times the model's "
            "norm (at least 1); 0 turns the bound off. Every aggregator of a task must use the same value.",
        ),
    ] = 5.0,  # fedchain.learning.aggregation.bound.DEFAULT_MAX_RELATIVE_DISTANCE (not imported: it loads torch)
    mode: TaskMode = "sync",
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = DEVNET_STATE_FILE,
    ready_file: ReadyFile = None,
    launch_file: LaunchFile = None,
    verbose: Verbose = False,
) -> None:
    """Run the aggregator: react to round events, aggregate verified updates, commit the new global model."""
    import torch

    from fedchain.aggregator.hooks import CRASH_ENV, evaluation_hooks
    from fedchain.aggregator.worker import AggregatorSettings, AggregatorWorker

    setup_logging(verbose)
    exit_on_sigterm()
    torch.set_num_threads(1)
    task, rpc_url, ipfs_api = launch_target(launch_file, task, rpc_url, ipfs_api)
    rpc, api = endpoints(state_file, rpc_url, ipfs_api)
    if mode == "buffered":
        _buffered_aggregator(
            AggregatorSettings(task, rpc, api, evaluate=evaluate, max_update_distance=max_update_distance),
            signing_account(account, key_env, keystore, default_index=1),
            ready_file,
        )
        return
    try:
        worker = AggregatorWorker(
            AggregatorSettings(task, rpc, api, evaluate=evaluate, max_update_distance=max_update_distance),
            signing_account(account, key_env, keystore, default_index=1),
            hooks=evaluation_hooks(lie=lie, crash=os.environ.get(CRASH_ENV, "")),
        )
    except (PermissionError, ValueError) as exc:  # no AGGREGATOR_ROLE, or a strategy this build lacks
        console.print(f"[red]aggregator cannot serve this task[/]: {exc}")
        raise typer.Exit(2) from None
    touch(ready_file)
    try:
        worker.run()
    except KeyboardInterrupt:
        logging.getLogger("fedchain.aggregator").info("stopped")
    except PermissionError as exc:  # suspended for its faults: a clear message, not a traceback
        from fedchain.aggregator import SUSPENDED_EXIT_CODE

        console.print(f"[red]aggregator stopped[/]: {exc}")
        raise typer.Exit(SUSPENDED_EXIT_CODE) from None


def _buffered_aggregator(settings: Any, account: Any, ready_file: Path | None) -> None:
    """`fedchain aggregator --mode buffered`: fedchain.aggregator.buffered."""
    from fedchain.aggregator.buffered import BufferedAggregator

    try:
        worker = BufferedAggregator(settings, account)
    except (PermissionError, ValueError) as exc:
        console.print(f"[red]aggregator cannot serve this task[/]: {exc}")
        raise typer.Exit(2) from None
    touch(ready_file)
    try:
        worker.run()
    except KeyboardInterrupt:
        logging.getLogger("fedchain.aggregator").info("stopped")
    except PermissionError as exc:
        from fedchain.aggregator import SUSPENDED_EXIT_CODE

        console.print(f"[red]aggregator stopped[/]: {exc}")
        raise typer.Exit(SUSPENDED_EXIT_CODE) from None
