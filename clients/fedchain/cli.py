"""The `fedchain` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from fedchain.explorer.queries import Explorer

app = typer.Typer(
    help="fedchain: federated learning for medical IoT devices, coordinated by Ethereum contracts, weights on IPFS.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

StateFile = Annotated[Path, typer.Option("--state-file", help="Devnet state file written by `fedchain devnet`.")]
RpcUrl = Annotated[str | None, typer.Option("--rpc-url", help="Ethereum JSON-RPC URL (default: the devnet's).")]
IpfsApi = Annotated[str | None, typer.Option("--ipfs-api", help="Kubo RPC API URL (default: the devnet's).")]
AccountIndex = Annotated[int | None, typer.Option("--account", help="Devnet account index (well-known test keys).")]
ReadyFile = Annotated[
    Path | None, typer.Option("--ready-file", help="Create this file once ready for round 1 (for supervisors).")
]
LaunchFile = Annotated[
    Path | None,
    typer.Option(
        "--launch-file",
        help="Start now, connect later: wait for this JSON file ({task, rpc_url, ipfs_api}, written by a supervisor "
        "such as `fedchain demo`) and take --task and the endpoints from it. Imports and warm-up overlap the "
        "devnet's start and the task's deployment.",
    ),
]
OptionalTask = Annotated[str | None, typer.Option(help="Task contract address (or give --launch-file).")]
# How long a process started with --launch-file waits for its supervisor to deploy the task.
LAUNCH_TIMEOUT = 600.0
KeyEnv = Annotated[
    str | None, typer.Option("--key-env", help="Environment variable holding a hex private key (testnets).")
]
Keystore = Annotated[Path | None, typer.Option("--keystore", help="JSON keystore file (password from env or prompt).")]
StrategyName = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="Aggregation strategy: fedavg, fedavgm, fedadam, fedyogi, fedprox, median, trimmed-mean, krum, "
        "multi-krum, bulyan.",
    ),
]
StrategyParams = Annotated[
    list[str] | None,
    typer.Option(
        "--strategy-param", help="A strategy parameter as NAME=VALUE (repeatable), e.g. f=2, beta=0.3, clip_norm=1."
    ),
]


def _strategy(name: str, params: list[str] | None):
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


def _default_state_file() -> Path:
    from fedchain.devnet import DEFAULT_STATE_FILE

    return DEFAULT_STATE_FILE


def _setup_logging(verbose: bool) -> None:
    # force: some libraries (Opacus) configure the root logger when imported, which would silence ours.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("httpx", "httpcore", "urllib3", "web3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _endpoints(state_file: Path, rpc_url: str | None, ipfs_api: str | None) -> tuple[str, str]:
    if rpc_url and ipfs_api:
        return rpc_url, ipfs_api
    from fedchain.devnet import DevnetState

    try:
        state = DevnetState.load(state_file)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    return rpc_url or state.rpc_url, ipfs_api or state.ipfs_api


def _account(index: int | None, key_env: str | None, keystore: Path | None, default_index: int | None):
    from fedchain.chain.accounts import resolve_account

    if index is None and key_env is None and keystore is None:
        index = default_index
    try:
        return resolve_account(index, key_env=key_env, keystore=keystore)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _launch_target(
    launch_file: Path | None, task: str | None, rpc_url: str | None, ipfs_api: str | None
) -> tuple[str, str | None, str | None]:
    """The task and endpoints: from the options, or from `launch_file` once a supervisor has written it."""
    if launch_file is None:
        if task is None:
            raise typer.BadParameter("give the task contract address (or --launch-file)", param_hint="--task")
        return task, rpc_url, ipfs_api
    from fedchain.launch import wait_for_launch

    try:
        target = wait_for_launch(launch_file, timeout=LAUNCH_TIMEOUT)
    except (TimeoutError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--launch-file") from None
    return target.task, target.rpc_url or rpc_url, target.ipfs_api or ipfs_api


def _touch(path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _exit_on_sigterm() -> None:
    # Turn SIGTERM into KeyboardInterrupt so `finally` blocks run and children are stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))


@app.command()
def ipfs(
    repo: Annotated[Path, typer.Option(help="Kubo repository folder.")] = Path(".fedchain/ipfs-repo"),
    port: Annotated[int, typer.Option(help="Port of the Kubo RPC API on 127.0.0.1 (0: any free port).")] = 5001,
    ready_file: Annotated[Path | None, typer.Option(help="Write the API URL here once listening.")] = None,
) -> None:
    """Run the embedded Kubo node and serve the Kubo RPC subset on 127.0.0.1."""
    from fedchain.storage.node import serve

    serve(repo, port=port, ready_file=ready_file)


@app.command()
def devnet(
    chain: Annotated[str, typer.Option(help="ganache or anvil.")] = "ganache",
    rpc_port: Annotated[int, typer.Option(help="Chain RPC port on 127.0.0.1.")] = 8545,
    ipfs_port: Annotated[int, typer.Option(help="Kubo RPC port on 127.0.0.1.")] = 5001,
    accounts: Annotated[int, typer.Option(help="Funded accounts.")] = 30,
    state_file: StateFile = Path(".fedchain/devnet.json"),
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
    from fedchain.devnet import Devnet

    _setup_logging(False)
    _exit_on_sigterm()
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


@app.command()
def deploy(
    rounds: Annotated[int, typer.Option(help="Number of rounds.")] = 10,
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
    threshold: Annotated[
        int | None, typer.Option(help="Agreeing aggregators that finalise a round (default: a strict majority).")
    ] = None,
    aggregation_duration: Annotated[int, typer.Option(help="Seconds of the commit and of the reveal window.")] = 60,
    max_samples_per_update: Annotated[
        int, typer.Option(help="Largest sample count (FedAvg weight) one update may claim; the contract refuses more.")
    ] = 100_000,  # fedchain.deploy.DEFAULT_MAX_SAMPLES_PER_UPDATE (not imported: the CLI loads torch lazily)
    max_aggregator_faults: Annotated[
        int, typer.Option(help="Dissenting or withheld reveals after which an aggregator is suspended.")
    ] = 3,  # fedchain.deploy.DEFAULT_MAX_AGGREGATOR_FAULTS
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
    dp_clip_norm: Annotated[float, typer.Option(help="Differential privacy: each device's update norm bound.")] = 0.25,
    dp_delta: Annotated[float, typer.Option(help="Differential privacy: the accountant's δ.")] = 1e-5,
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = Path(".fedchain/devnet.json"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Deploy a training task (description and initial model on IPFS), approve participants, open round 1."""
    from fedchain.chain import connect
    from fedchain.chain.accounts import devnet_addresses
    from fedchain.deploy import TaskPlan, create_task, default_min_updates
    from fedchain.storage import IpfsClient

    rpc, api = _endpoints(state_file, rpc_url, ipfs_api)
    admin = _account(account, key_env, keystore, default_index=0)
    on_devnet = key_env is None and keystore is None
    device_list = list(device_address or [])
    aggregator_list = list(aggregator_address or [])
    if on_devnet and not device_list:
        device_list = devnet_addresses(2 + devices)[2:]
    if on_devnet and not aggregator_list:
        aggregator_list = [devnet_addresses(2)[1]]
    n = len(device_list) or devices
    try:
        spec, first_epsilon = _private_spec(
            rounds, secure_aggregation, seal_updates, dp_epsilon, dp_clip_norm, dp_delta
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    plan = TaskPlan(
        spec=spec,
        secure_aggregation=secure_aggregation,
        epsilon_budget=dp_epsilon or 0.0,
        first_round_epsilon=first_epsilon,
        strategy=_strategy(strategy, strategy_param),
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


def _private_spec(
    rounds: int, secure: bool, seal: bool, epsilon: float | None, clip: float, delta: float
) -> tuple[Any, float]:
    """The default task description with the requested privacy, and the accountant's ε after one round."""
    from dataclasses import replace

    from fedchain.learning.spec import PrivacySpec, default_task_spec
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
    return replace(default_task_spec(), privacy=privacy), first


@app.command()
def start(
    task: Annotated[str, typer.Option(help="Task contract address.")],
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
    state_file: StateFile = Path(".fedchain/devnet.json"),
) -> None:
    """Open round 1 of a task deployed with --no-start or --secure-aggregation (the admin's call)."""
    from fedchain.chain import EventFollower, TaskClient, connect
    from fedchain.deploy import wait_for_encryption_keys

    rpc, _ = _endpoints(state_file, rpc_url, ipfs_api)
    client = TaskClient.for_account(connect(rpc, wait=10), task, _account(account, key_env, keystore, default_index=0))
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


@app.command()
def device(
    task: OptionalTask = None,
    partition: Annotated[str, typer.Option(help="This device's share of the demo dataset, I/N (0-based).")] = "0/1",
    non_iid: Annotated[float | None, typer.Option(help="Dirichlet α for a label-skewed partition.")] = None,
    data_seed: Annotated[int, typer.Option(help="Seed of the data partition.")] = 0,
    online: Annotated[bool, typer.Option(help="Data arrives as a stream, a share per round.")] = True,
    max_rounds: Annotated[int | None, typer.Option(help="Leave after training this many rounds.")] = None,
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
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = Path(".fedchain/devnet.json"),
    ready_file: ReadyFile = None,
    launch_file: LaunchFile = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Run one device: register, wait for rounds, train locally, upload the update, submit its digest.

    A private task (its description says so) has the device register an encryption key, then either mask its update
    for secure aggregation or seal it to the aggregators' keys."""
    import torch

    from fedchain.device.runner import DeviceRunner, DeviceSettings
    from fedchain.learning.attacks import check_attack
    from fedchain.learning.data import parse_partition

    _setup_logging(verbose)
    _exit_on_sigterm()
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
    task, rpc_url, ipfs_api = _launch_target(launch_file, task, rpc_url, ipfs_api)
    rpc, api = _endpoints(state_file, rpc_url, ipfs_api)
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
    )
    runner = DeviceRunner(settings, _account(account, key_env, keystore, default_index=None))
    try:
        runner.run(max_rounds=max_rounds, on_ready=lambda: _touch(ready_file))
    except KeyboardInterrupt:
        logging.getLogger("fedchain.device").info("stopped")
    except (PermissionError, TimeoutError) as exc:  # removed from the task, or never approved
        console.print(f"[red]device stopped[/]: {exc}")
        raise typer.Exit(2) from None


@app.command()
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
    data_seed: Annotated[int, typer.Option(help="Seed of the data partition.")] = 0,
    online: Annotated[bool, typer.Option(help="Data arrives as a stream, a share per round.")] = True,
    max_rounds: Annotated[int | None, typer.Option(help="Leave after training this many rounds.")] = None,
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
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = Path(".fedchain/devnet.json"),
    ready_file: ReadyFile = None,
    launch_file: LaunchFile = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Run many virtual devices in this process: each its own key, nonce, partition and model, sharing one chain
    connection, one event subscription and one IPFS client. Same training as `fedchain device` per device."""
    from dataclasses import replace

    import torch

    from fedchain.chain.accounts import devnet_accounts
    from fedchain.device.pool import DevicePool
    from fedchain.device.runner import DeviceSettings

    _setup_logging(verbose)
    _exit_on_sigterm()
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
    task, rpc_url, ipfs_api = _launch_target(launch_file, task, rpc_url, ipfs_api)
    rpc, api = _endpoints(state_file, rpc_url, ipfs_api)
    settings = DeviceSettings(task, rpc, api, first_partition, num_partitions, non_iid, data_seed, online)
    members = [(acct, first_partition + j) for j, acct in enumerate(devnet_accounts(range(start, end)))]
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
                on_ready=lambda: _touch(ready_file),
            )
            return
        relayer = devnet_accounts([relayer_account])[0] if relayer_account is not None else None
        pool_ = DevicePool(settings, members, relayer=relayer, omit_from_batch=omit_from_batch)
        pool_.run(max_rounds=max_rounds, on_ready=lambda: _touch(ready_file))
    except KeyboardInterrupt:
        logging.getLogger("fedchain.device.pool").info("stopped")
    except (PermissionError, TimeoutError, ValueError) as exc:
        console.print(f"[red]pool stopped[/]: {exc}")
        raise typer.Exit(2) from None


@app.command()
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
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = Path(".fedchain/devnet.json"),
    ready_file: ReadyFile = None,
    launch_file: LaunchFile = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Run the aggregator: react to round events, aggregate verified updates, commit the new global model."""
    import torch

    from fedchain.aggregator.hooks import CRASH_ENV, evaluation_hooks
    from fedchain.aggregator.worker import AggregatorSettings, AggregatorWorker

    _setup_logging(verbose)
    _exit_on_sigterm()
    torch.set_num_threads(1)
    task, rpc_url, ipfs_api = _launch_target(launch_file, task, rpc_url, ipfs_api)
    rpc, api = _endpoints(state_file, rpc_url, ipfs_api)
    try:
        worker = AggregatorWorker(
            AggregatorSettings(task, rpc, api, evaluate=evaluate, max_update_distance=max_update_distance),
            _account(account, key_env, keystore, default_index=1),
            hooks=evaluation_hooks(lie=lie, crash=os.environ.get(CRASH_ENV, "")),
        )
    except (PermissionError, ValueError) as exc:  # no AGGREGATOR_ROLE, or a strategy this build lacks
        console.print(f"[red]aggregator cannot serve this task[/]: {exc}")
        raise typer.Exit(2) from None
    _touch(ready_file)
    try:
        worker.run()
    except KeyboardInterrupt:
        logging.getLogger("fedchain.aggregator").info("stopped")
    except PermissionError as exc:  # suspended for its faults: a clear message, not a traceback
        from fedchain.aggregator import SUSPENDED_EXIT_CODE

        console.print(f"[red]aggregator stopped[/]: {exc}")
        raise typer.Exit(SUSPENDED_EXIT_CODE) from None


@app.command()
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
    state_file: StateFile = Path(".fedchain/devnet.json"),
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Serve the round explorer (pages and JSON API) on 127.0.0.1, indexing the chain as it grows."""
    from fedchain.chain.errors import ChainError
    from fedchain.explorer.app import ExplorerConfig, check_loopback_host, serve
    from fedchain.explorer.rpc import RpcError

    _setup_logging(verbose)
    _exit_on_sigterm()
    try:
        check_loopback_host(host)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    rpc, api = _endpoints(state_file, rpc_url, ipfs_api)
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


def _synced(state_file: Path, rpc_url: str | None, ipfs_api: str | None, index: Path | None) -> Explorer:
    from fedchain.explorer.rpc import RpcError
    from fedchain.explorer.terminal import synced_explorer

    rpc, api = _endpoints(state_file, rpc_url, ipfs_api)
    try:
        return synced_explorer(rpc, api, index)
    except RpcError as exc:
        console.print(f"[red]cannot index the chain[/]: {exc}")
        raise typer.Exit(2) from None


def _task_data(explorer: Explorer, task: str) -> dict:
    from fedchain.explorer.queries import BadInput, NotFound

    try:
        return explorer.task(task)
    except (NotFound, BadInput) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


IndexFile = Annotated[Path | None, typer.Option("--index", help="Explorer index file (default: per RPC URL).")]


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the overview as JSON on stdout.")] = False,
    index: IndexFile = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = Path(".fedchain/devnet.json"),
) -> None:
    """The chain, the IPFS node and every task, as tables (from the explorer's index, brought up to date)."""
    from fedchain.explorer.terminal import print_tables, status_tables, terminal_console

    data = _synced(state_file, rpc_url, ipfs_api, index).overview()
    if as_json:
        print(json.dumps(data))
        return
    print_tables(terminal_console(), status_tables(data))


@app.command()
def rounds(
    task: Annotated[str, typer.Option(help="Task contract address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the rounds as JSON on stdout.")] = False,
    index: IndexFile = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = Path(".fedchain/devnet.json"),
) -> None:
    """A task's rounds: state, updates, accuracy and loss (aggregator-evaluated), gas, duration, aggregate CID."""
    from fedchain.explorer.terminal import rounds_table, terminal_console

    data = _task_data(_synced(state_file, rpc_url, ipfs_api, index), task)
    if as_json:
        print(json.dumps(data["rounds"]))
        return
    terminal_console().print(rounds_table(data))


@app.command()
def report(
    task: Annotated[str, typer.Option(help="Task contract address.")],
    out: Annotated[Path, typer.Option(help="Output file: .png, .svg, .pdf or .html.")] = Path("report.png"),
    index: IndexFile = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = Path(".fedchain/devnet.json"),
) -> None:
    """Accuracy, loss and gas per round of a task as a picture (or a self-contained HTML page)."""
    from fedchain.explorer.report import write_report

    data = _task_data(_synced(state_file, rpc_url, ipfs_api, index), task)
    try:
        write_report(data, out)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"wrote {out} ({len(data['rounds'])} rounds)")


@app.command()
def demo(
    devices: Annotated[
        int | None,
        typer.Option(help="Number of device processes (default 5, or 10 with --attackers or --secure-aggregation)."),
    ] = None,
    rounds: Annotated[int, typer.Option(help="Number of rounds.")] = 10,
    chain: Annotated[str, typer.Option(help="ganache or anvil.")] = "ganache",
    non_iid: Annotated[float | None, typer.Option(help="Dirichlet α for label-skewed device data.")] = None,
    online: Annotated[bool, typer.Option(help="Device data arrives as a stream.")] = True,
    strategy: StrategyName = "fedavg",
    strategy_param: StrategyParams = None,
    aggregators: Annotated[int, typer.Option(help="Aggregator processes (k-of-n agreement by commit-reveal).")] = 1,
    threshold: Annotated[
        int | None, typer.Option(help="Agreeing aggregators that finalise a round (default: a strict majority).")
    ] = None,
    lying_aggregators: Annotated[
        int, typer.Option(help="Evaluation: how many of the aggregators reveal corrupted models.")
    ] = 0,
    attackers: Annotated[float, typer.Option(help="Evaluation: fraction of Byzantine devices, e.g. 0.3.")] = 0.0,
    attack: Annotated[
        str, typer.Option(help="What attackers do: sign-flip, sign-flip-x10, scale, gaussian, constant, label-flip.")
    ] = "sign-flip-x10",
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: a JSON summary.")] = False,
    workdir: Annotated[Path | None, typer.Option(help="Where logs and the IPFS repo go.")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 900.0,
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
    dp_clip_norm: Annotated[float, typer.Option(help="Differential privacy: each device's update norm bound.")] = 0.25,
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
) -> None:
    """Start a devnet, deploy a task, run one process per device and per aggregator, and show each round.

    With --attackers, Byzantine devices join; with --aggregators 3 --lying-aggregators 1, a dishonest aggregator
    takes part in the agreement and is recorded on chain as faulty.
    """
    from fedchain.demo import DemoOptions, run_demo

    _exit_on_sigterm()

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

    options = DemoOptions(
        devices=devices if devices is not None else (10 if attackers > 0 or secure_aggregation else 5),
        rounds=rounds,
        strategy=_strategy(strategy, strategy_param),
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


MarketAddress = Annotated[str, typer.Option("--market", help="ComputeMarket contract address.")]


@app.command()
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
    state_file: StateFile = Path(".fedchain/devnet.json"),
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Lend this machine to the compute market: stake, claim units, compute them reproducibly, get paid."""
    # Before torch or numpy is imported: single-threaded, pinned kernels (see fedchain.learning.units).
    from fedchain.market.env import apply_worker_env

    apply_worker_env()
    from fedchain.market.worker import MarketWorker, WorkerSettings

    _setup_logging(verbose)
    _exit_on_sigterm()
    rpc, api = _endpoints(state_file, rpc_url, ipfs_api)
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
        runner = MarketWorker(settings, _account(account, key_env, keystore, default_index=2))
    except RuntimeError as exc:  # the determinism canary failed
        console.print(f"[red]worker cannot compute units here[/]: {exc}")
        raise typer.Exit(2) from None
    try:
        runner.run()
    except KeyboardInterrupt:
        logging.getLogger("fedchain.market.worker").info("stopped")


@app.command()
def coordinator(
    market: MarketAddress,
    job: Annotated[int, typer.Option("--job", help="The job to coordinate.")],
    account: AccountIndex = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    rpc_url: RpcUrl = None,
    ipfs_api: IpfsApi = None,
    state_file: StateFile = Path(".fedchain/devnet.json"),
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Coordinate a market job: merge each stage's accepted results and commit the stage's checkpoint."""
    from fedchain.market.env import apply_worker_env

    apply_worker_env()
    from fedchain.chain import ContractRevert
    from fedchain.market.coordinator import CoordinatorSettings, MarketCoordinator

    _setup_logging(verbose)
    _exit_on_sigterm()
    rpc, api = _endpoints(state_file, rpc_url, ipfs_api)
    try:
        runner = MarketCoordinator(
            CoordinatorSettings(market, rpc, api, job_id=job), _account(account, key_env, keystore, default_index=1)
        )
    except (PermissionError, ContractRevert) as exc:
        console.print(f"[red]cannot coordinate job {job}[/]: {exc}")
        raise typer.Exit(2) from None
    try:
        runner.run()
    except KeyboardInterrupt:
        logging.getLogger("fedchain.market.coordinator").info("stopped")


@app.command("market-demo")
def market_demo(
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 4,
    cheaters: Annotated[int, typer.Option(help="Evaluation: how many of the workers cheat.")] = 1,
    lazy: Annotated[
        int, typer.Option(help="Evaluation: how many of the workers copy other replicas instead of computing.")
    ] = 0,
    claim_duration: Annotated[int, typer.Option(help="Seconds a claim, and a unit's reveal window, stay open.")] = 600,
    chain: Annotated[str, typer.Option(help="ganache or anvil.")] = "ganache",
    stages: Annotated[int, typer.Option(help="Stages of the job.")] = 3,
    units_per_stage: Annotated[int, typer.Option(help="Units per stage.")] = 4,
    steps_per_unit: Annotated[int, typer.Option(help="SGD steps per unit.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: a JSON summary.")] = False,
    workdir: Annotated[Path | None, typer.Option(help="Where logs and the IPFS repo go.")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 900.0,
    ray_local: Annotated[
        int | None,
        typer.Option("--ray-local", help="Each worker computes up to N claimed units at once on a local Ray."),
    ] = None,
) -> None:
    """A training job on the compute market: staked workers compute replicated units (cheaters are slashed), a
    coordinator merges each stage; the final model is compared with the same plan trained in one process."""
    from fedchain.market.demo import MarketDemoOptions, run_market_demo

    _exit_on_sigterm()
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


bench_app = typer.Typer(help="Benchmarks that write reports/*.json (see `make bench`).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@bench_app.command("attacks", context_settings=PASSTHROUGH)
def bench_attacks(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout.")] = False,
) -> None:
    """Accuracy of each strategy under each attack at 0/10/20/30% attacking devices (non-IID): writes
    reports/attacks.json and reports/attacks.md. Extra options (--seeds, --rounds, --devices, --quick, --out-dir)
    go to `python -m fedchain.learning.attack_bench`."""
    from fedchain.learning.attack_bench import main as attack_main

    attack_main([*ctx.args, *(["--json"] if as_json else [])])


@bench_app.command("aggregation", context_settings=PASSTHROUGH)
def bench_aggregation(ctx: typer.Context) -> None:
    """Seconds per robust strategy on 100 updates of 1M parameters, and FedAvg's peak memory against the number
    of updates: writes reports/aggregation.json."""
    from fedchain.learning.aggregation.speed_bench import main as aggregation_main

    aggregation_main(list(ctx.args))


@bench_app.command("privacy", context_settings=PASSTHROUGH)
def bench_privacy(ctx: typer.Context) -> None:
    """Secure aggregation's time and bytes against plain uploads at 10/50/100 devices, accuracy against ε (∞, 8, 4,
    1) and the personalisation table: writes reports/privacy.json (--quick for a short run)."""
    from fedchain.learning.privacy_bench import main as privacy_main

    privacy_main(list(ctx.args))


@bench_app.command("market", context_settings=PASSTHROUGH)
def bench_market(ctx: typer.Context) -> None:
    """Compute market with 2 and 4 honest workers against the same plan trained in one process: job seconds,
    speed-up, gas per unit, final model match. Writes reports/market.json (--quick for a tiny plan)."""
    from fedchain.market.bench import main as market_main

    market_main(list(ctx.args))


@bench_app.command("rounds", context_settings=PASSTHROUGH)
def bench_rounds(ctx: typer.Context) -> None:
    """Gas per function and seconds per round for 5/10/20 devices on Ganache and Anvil: reports/bench.json."""
    from fedchain.bench import main as rounds_main

    rounds_main(list(ctx.args))


@bench_app.command("flower", context_settings=PASSTHROUGH)
def bench_flower(ctx: typer.Context) -> None:
    """The demo's task in Flower's simulation and in `fedchain demo` at 10, 100 and 1,000 devices: startup, round
    1, later rounds (median, p90), peak memory, ratios, bit-identical accuracies -> reports/flower.json. Options
    (--devices 10,100,1000, --rounds 3, --chain, --flower-python, --skip-fedchain, --out) go to
    `python -m fedchain.bench_flower`; Flower runs from `make flower-venv`."""
    from fedchain.bench_flower import main as flower_main

    raise typer.Exit(flower_main(list(ctx.args)))


@bench_app.command("throughput", context_settings=PASSTHROUGH)
def bench_throughput(ctx: typer.Context) -> None:
    """Device updates per second on Anvil: pre-signed (the node's ceiling), devices signing and sending their own
    in batches (as a pool does), one by one (as a device process does); gas per update direct vs relayed in one
    batch -> reports/throughput.json. Options (--devices 200, --repeats 3, --out) go to
    `python -m fedchain.bench_throughput`."""
    from fedchain.bench_throughput import main as throughput_main

    raise typer.Exit(throughput_main(list(ctx.args)))


@bench_app.command("device", context_settings=PASSTHROUGH)
def bench_device(ctx: typer.Context) -> None:
    """One device process up to ready for the demo's task (imports, dataset, model, warm-up) and its first two
    local rounds, in fresh interpreters: seconds to ready, USS/PSS/RSS/private-dirty memory, round 1 against round 2,
    modules a device should not import; median of 5 runs -> reports/device.json. Options (--runs, --out, --no-cold,
    --no-floor, --json) go to `python -m fedchain.device_footprint`."""
    from fedchain.device_footprint import main as device_main

    raise typer.Exit(device_main(list(ctx.args)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
