"""`fedchain demo`: a whole federated run on a local devnet, one OS process per device plus the aggregator.

`run_demo` composes the rest: options.py (what runs), processes.py (starting and watching the processes),
rounds.py (following the rounds, the summary).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.console import Console

from fedchain.app.demo.options import ADMIN_INDEX, FIRST_DEVICE_INDEX, READY_TIMEOUT, DemoOptions, robust_defaults
from fedchain.app.demo.processes import clear_handover, launch_processes, start_explorer, wait_ready
from fedchain.app.demo.rounds import (
    centralized_accuracy,
    follow_rounds,
    gas_per_function,
    non_private_accuracy,
    summarise,
)
from fedchain.app.launch import LaunchTarget, write_launch
from fedchain.privacy.accountant import epsilon_after
from fedchain.protocol.epsilon import micro_to_epsilon

# torch, web3 and the deployment code are imported where they are used: the demo starts its device and aggregator
# processes before paying for those imports (see run_demo).
if TYPE_CHECKING:
    from fedchain.app.demo.forked import Helper
    from fedchain.app.devnet import Devnet
    from fedchain.learning.types import Weights


def run_demo(
    options: DemoOptions,
    console: Console | None = None,
    live: bool = True,
    after: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the demo and return its summary (what `--json` prints).

    `after(summary)` runs before the devnet (and the explorer, if any) stop: `fedchain demo --explorer` waits there
    for Ctrl-C so the run can be explored.
    """
    options.check()
    console = console or Console(stderr=True)
    started = time.perf_counter()
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    num_accounts = FIRST_DEVICE_INDEX + options.devices + options.aggregators + 1 + len(options.relayer_indices())
    net: Devnet | None = None
    processes: list[subprocess.Popen[bytes]] = []
    explorer: subprocess.Popen[bytes] | None = None
    explorer_url: str | None = None
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ready_dir = workdir / "ready"
    launch_file = workdir / "launch.json"
    clear_handover(ready_dir, launch_file)
    phases: dict[str, float] = {}
    background = ThreadPoolExecutor(3, thread_name_prefix="demo-start")
    helper: Helper | None = None
    launching: Future[list[subprocess.Popen[bytes]]] | None = None
    weighing: Future[Weights] | None = None
    try:
        # Devices, pools and aggregators start first: their imports and warm-up (most of a process's start-up)
        # overlap the devnet's start and the deployment; they connect once the launch file names the task.
        if options.fork:
            from fedchain.app.demo.forked import Helper, cached_initial_weights

            helper = Helper()
            cached = cached_initial_weights(options.model_cache, options.spec) if options.model_cache else None
            # Forks wait for the fork server's imports: threads ask for them (the helper first: the deployment
            # needs its initial model, unless a previous demo kept it) while this one starts the devnet.
            weighing = background.submit(_initial_weights, helper, options, cached)
            launching = background.submit(launch_processes, options, launch_file, logs, ready_dir)
        else:
            processes = launch_processes(options, launch_file, logs, ready_dir)
        from fedchain.app.devnet import Devnet, terminate

        # With `persist` the chain is kept on disk and both services are restarted if they die (behind proxies
        # that hold requests meanwhile): a crash of either never ends the run.
        net = Devnet(workdir, options.chain, num_accounts=num_accounts, persist=options.persist)
        # What the devnet imports while it starts (eth_account, eth_utils) is imported here first: two threads
        # importing the same packages at once can deadlock on their module locks.
        import eth_utils  # noqa: F401

        import fedchain.chain.accounts  # noqa: F401

        # The chain and IPFS start in their own processes; this one imports web3 meanwhile.
        starting = background.submit(net.start)
        from fedchain.app.deploy import TaskPlan, create_task, default_min_updates, wait_for_encryption_keys
        from fedchain.chain import TaskClient, connect, devnet_account
        from fedchain.storage import IpfsClient, digest_to_cid

        phases["imports"] = time.perf_counter() - started
        state = starting.result()
        phases["devnet_up"] = time.perf_counter() - started
        state.save(workdir / "devnet.json")
        console.print(f"devnet: {options.chain} at {state.rpc_url}, IPFS at {state.ipfs_api} (logs in {workdir}/logs)")
        if options.explorer_port is not None:
            explorer, explorer_url = start_explorer(options, state, workdir)
            console.print(f"[bold]explorer: {explorer_url}[/] (follow the rounds live in a browser)")
        w3 = connect(state.rpc_url)
        ipfs = IpfsClient(state.ipfs_api)
        device_addresses = state.accounts[FIRST_DEVICE_INDEX : FIRST_DEVICE_INDEX + options.devices]
        aggregator_addresses = [state.accounts[i] for i in options.aggregator_indices()]
        strategy = robust_defaults(options.strategy, options.devices, options.attacker_count())
        privacy = options.privacy_spec()
        first_round_epsilon = (
            epsilon_after(1, privacy.dp_noise_multiplier, 1.0, privacy.dp_delta)
            if privacy.differential_privacy
            else 0.0
        )
        plan = TaskPlan(
            spec=replace(options.spec, privacy=privacy),
            secure_aggregation=privacy.secure_aggregation,
            epsilon_budget=options.dp_epsilon or 0.0,
            first_round_epsilon=first_round_epsilon,
            strategy=strategy,
            aggregator_threshold=options.threshold,
            aggregation_duration=options.aggregation_duration,
            num_rounds=options.rounds,
            min_updates=min(default_min_updates(options.devices), options.devices - options.dropout_count()),
            # The simulated dropouts never submit: close each round when the others have (not at its deadline).
            max_updates=options.devices - options.dropout_count(),
            round_duration=options.round_duration,
            devices=tuple(device_addresses),
            aggregators=tuple(aggregator_addresses),
            relayers=tuple(state.accounts[i] for i in options.relayer_indices()),
            # Round 1 opens once every device (or pool) is ready, so it measures a round, not process start-up;
            # secure aggregation also waits for every device's key (its participants are the devices with a key).
            start=False,
        )
        phases["deploy_begin"] = time.perf_counter() - started
        initial = weighing.result() if weighing is not None else None
        phases["initial_model"] = time.perf_counter() - started
        deployed = create_task(w3, devnet_account(ADMIN_INDEX), ipfs, plan, initial_weights=initial)
        phases["deployed"] = time.perf_counter() - started
        for name, seconds in deployed.seconds.items():
            phases[f"deploy.{name}"] = seconds
        console.print(
            f"task {deployed.address}: {options.rounds} rounds, {options.devices} devices "
            f"({options.attacker_count()} attacking: {options.attack if options.attacker_count() else '-'}), "
            f"strategy {strategy.name} {dict(strategy.params)}, {plan.threshold()} of {options.aggregators} "
            f"aggregators must agree ({options.lying_aggregators} lying)"
        )
        write_launch(launch_file, LaunchTarget(deployed.address, state.rpc_url, state.ipfs_api))
        admin_task = TaskClient.for_account(w3, deployed.address, devnet_account(ADMIN_INDEX))
        if launching is not None and privacy.secure_aggregation:
            processes = launching.result()
        if privacy.secure_aggregation:
            wait_for_encryption_keys(admin_task, device_addresses, timeout=min(300.0, options.timeout))
        else:
            if launching is not None:
                processes = launching.result()
                phases["forked"] = time.perf_counter() - started
            wait_ready(ready_dir, len(processes), processes, min(READY_TIMEOUT, options.timeout))
        phases["ready"] = time.perf_counter() - started
        follow_from = w3.eth.block_number + 1
        startup_seconds = time.perf_counter() - started
        # Round 1's clock starts here: follow_rounds sees its RoundOpened only after loading the test set.
        round1_opened_at = time.perf_counter()
        admin_task.start()
        console.print(f"every device is ready after {startup_seconds:.1f}s: round 1 is open")
        rows, faults = follow_rounds(
            options,
            w3,
            ipfs,
            deployed.address,
            processes,
            console,
            live,
            follow_from,
            round1_opened_at,
            evaluate=partial(helper.evaluate, options.spec) if helper is not None else None,
        )
        pool_restarts = faults.pop("pool_restarts", 0)
        for proc in processes:  # they exit on TaskFinished; give them a moment
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                terminate(proc)
        task = TaskClient(w3, deployed.address)
        final_cid = digest_to_cid(task.global_model_digest())
        ipfs.cat(final_cid)  # verified against its CID by the client: the model on IPFS is the one on chain
        gas = gas_per_function(w3, task, deployed.block_number)
        gas["deploy"] = deployed.gas["deploy"]
        centralized = centralized_accuracy(options)
        summary = summarise(options, deployed.address, rows, gas, final_cid, centralized, time.perf_counter() - started)
        summary["startup_seconds"] = round(startup_seconds, 3)
        summary["startup_phases"] = {k: round(v, 3) for k, v in phases.items()}
        summary["virtual"] = options.use_virtual()
        summary["pools"] = options.pool_count() if options.use_virtual() else 0
        summary["processes"] = len(processes)
        summary["pool_restarts"] = pool_restarts
        summary["submit"] = options.submit if options.use_virtual() else "direct"
        summary["strategy"] = strategy.to_dict()
        summary["aggregator_threshold"] = plan.threshold()
        summary["aggregators"] = [
            {
                "address": address,
                "lying": j >= options.aggregators - options.lying_aggregators,
                "faults": task.aggregator_info(address).faults,
                "fault_events": faults.get(address, 0),
                "suspended": task.aggregator_info(address).suspended,
            }
            for j, address in enumerate(aggregator_addresses)
        ]
        summary["attack"] = options.attack if options.attacker_count() else None
        summary["attackers"] = list(device_addresses[: options.attacker_count()])
        summary["failed_rounds"] = task.failed_rounds()
        summary["privacy"] = privacy.to_dict()
        summary["epsilon"] = micro_to_epsilon(task.epsilon_spent_micro()) if privacy.differential_privacy else None
        summary["epsilon_budget"] = options.dp_epsilon
        summary["dropped_devices"] = list(device_addresses[options.devices - options.dropout_count() :])
        if privacy.secure_aggregation or privacy.differential_privacy:
            # Plain FedAvg on the same devices, split and rounds, simulated in process with each device's whole
            # partition (no streaming): a non-private reference at least as good as the demo's own rounds.
            summary["non_private_accuracy"] = non_private_accuracy(options)
        if explorer_url is not None:
            summary["explorer_url"] = explorer_url
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        console.print(
            f"final accuracy {summary['final_accuracy']:.4f} (centralized reference {centralized:.4f}); "
            f"final model {final_cid}"
        )
        if after is not None:
            after(summary)
        return summary
    finally:
        from fedchain.app.devnet import terminate

        if launching is not None and not processes:  # failed before taking them: they still must stop
            try:
                processes = launching.result(timeout=120)
            except Exception:  # nothing was started, or the fork server is gone with them
                processes = []
        background.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            terminate(proc)
        if explorer is not None:
            terminate(explorer)
        if net is not None:
            net.stop()
        if helper is not None:
            helper.close()


def _initial_weights(helper: Helper, options: DemoOptions, cached: Weights | None) -> Weights:
    """The task's initial model: kept by a previous demo, or built by the helper (and kept for the next)."""
    from fedchain.app.demo.forked import cache_initial_weights

    if cached is not None:
        return cached
    weights = helper.initial_weights(options.spec).result()
    if options.model_cache is not None:
        # A cache that cannot be written only costs the next demo this wait.
        with contextlib.suppress(OSError):
            cache_initial_weights(options.model_cache, options.spec, weights)
    return weights
