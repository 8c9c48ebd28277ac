"""`fedchain demo`: a whole federated run on a local devnet, one OS process per device plus the aggregator."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fedchain.aggregator import SUSPENDED_EXIT_CODE
from fedchain.launch import LaunchTarget, write_launch
from fedchain.learning.aggregation.registry import StrategySpec
from fedchain.learning.attacks import check_attack
from fedchain.learning.spec import PrivacySpec, TaskSpec, default_task_spec
from fedchain.privacy.accountant import epsilon_after, micro_to_epsilon, noise_multiplier_for_chain

# torch, web3 and the deployment code are imported where they are used: the demo starts its device and aggregator
# processes before paying for those imports (see run_demo).
if TYPE_CHECKING:
    from web3 import Web3

    from fedchain.chain import TaskClient
    from fedchain.devnet import Devnet, DevnetState
    from fedchain.storage import IpfsClient

# Events whose transactions count towards a round's gas.
ROUND_TX_EVENTS = (
    "UpdateSubmitted",
    "UpdateBatchSubmitted",
    "RoundExtended",
    "ResultCommitted",
    "RevealOpened",
    "ResultRevealed",
    "AggregateCommitted",
    "AggregationFailed",
)
ADMIN_INDEX = 0
AGGREGATOR_INDEX = 1
FIRST_DEVICE_INDEX = 2
# Above this many devices the demo runs them as virtual devices in pools rather than one process each.
VIRTUAL_THRESHOLD = 20
# Devices a pool process takes before the demo adds another (up to one pool per core).
POOL_DEVICES = 250
# A pool that crashes more often than this is a bug, not bad luck: the demo stops.
MAX_POOL_RESTARTS = 3
# Seconds to wait for every device process or pool to be ready before round 1 opens.
READY_TIMEOUT = 300.0


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 5
    rounds: int = 10
    chain: str = "ganache"
    non_iid: float | None = None
    online: bool = True
    workdir: Path = Path(".fedchain/demo")
    timeout: float = 900.0
    round_duration: int = 60
    spec: TaskSpec = field(default_factory=default_task_spec)
    explorer_port: int | None = None  # run `fedchain explorer` on this port for the whole demo
    strategy: StrategySpec = field(default_factory=StrategySpec)
    aggregators: int = 1
    threshold: int | None = None  # default: a strict majority of the aggregators
    lying_aggregators: int = 0  # evaluation: how many aggregators reveal corrupted models
    attackers: float = 0.0  # evaluation: fraction of devices that are Byzantine
    attack: str = "sign-flip-x10"
    aggregation_duration: int = 30
    secure_aggregation: bool = False
    seal_updates: bool = False
    dp_epsilon: float | None = None  # client-level DP with this ε budget (on chain) over the demo's rounds
    dp_clip_norm: float = 0.25
    dp_delta: float = 1e-5
    dropout: float = 0.0  # evaluation: fraction of devices that drop out of every round after their setup
    # Virtual devices (`fedchain pool`): many devices per process. None: automatic above VIRTUAL_THRESHOLD devices.
    virtual: bool | None = None
    pools: int | None = None  # pool processes (None: one per POOL_DEVICES devices, at most the machine's cores)
    # Virtual devices: "batch" (devices sign, each pool relays a round's updates in one transaction) or "direct"
    # (every device sends its own submitUpdate).
    submit: str = "batch"
    # The devnet keeps its chain on disk and restarts a crashed chain or IPFS service behind proxies that hold
    # requests meanwhile (see `Devnet(persist=...)`). Off by default: the proxies carry every request through this
    # process, and a demo's chain is thrown away at the end (IPFS is restarted either way).
    persist: bool = False

    def use_virtual(self) -> bool:
        if self.virtual is not None:
            return self.virtual
        return self.pools is not None or self.devices > VIRTUAL_THRESHOLD

    def relayer_indices(self) -> list[int]:
        """Devnet accounts of the pools' relayers (after the devices' and the aggregators'), when they relay."""
        if not self.use_virtual() or self.submit != "batch":
            return []
        first = FIRST_DEVICE_INDEX + self.devices + self.aggregators - 1
        return [first + p for p in range(self.pool_count())]

    def pool_count(self) -> int:
        if self.pools is not None:
            return self.pools
        return max(1, min(os.cpu_count() or 1, -(-self.devices // POOL_DEVICES), self.devices))

    def dropout_count(self) -> int:
        return round(self.dropout * self.devices)

    def privacy_spec(self) -> PrivacySpec:
        """The task's privacy settings; the noise multiplier is the smallest that spends at most dp_epsilon over
        the demo's rounds with every round admitted by the contract's budget rule."""
        noise = 0.0
        if self.dp_epsilon is not None:
            noise = noise_multiplier_for_chain(self.dp_epsilon, self.dp_delta, self.rounds)
        return PrivacySpec(
            secure_aggregation=self.secure_aggregation,
            seal_updates=self.seal_updates,
            dp_clip_norm=self.dp_clip_norm if self.dp_epsilon is not None else 0.0,
            dp_noise_multiplier=noise,
            dp_delta=self.dp_delta,
        )

    def attacker_count(self) -> int:
        return round(self.attackers * self.devices)

    def aggregator_indices(self) -> list[int]:
        """Devnet account 1, then accounts after the devices'."""
        return [AGGREGATOR_INDEX] + [FIRST_DEVICE_INDEX + self.devices + j for j in range(self.aggregators - 1)]

    def check(self) -> None:
        if self.devices < 1 or self.rounds < 1:
            raise ValueError("need at least one device and one round")
        if self.aggregators < 1:
            raise ValueError("need at least one aggregator")
        # None is the deployment's default, a strict majority: always in range. The contract requires n/2 < k <= n.
        if self.threshold is not None and not self.aggregators // 2 < self.threshold <= self.aggregators:
            raise ValueError(
                f"the threshold must be a strict majority of the {self.aggregators} aggregators "
                f"({self.aggregators // 2 + 1} to {self.aggregators}), got {self.threshold}"
            )
        if not 0 <= self.lying_aggregators <= self.aggregators:
            raise ValueError(f"lying aggregators must be between 0 and {self.aggregators}")
        if not 0.0 <= self.attackers < 1.0:
            raise ValueError(f"the attacker fraction must be in [0, 1), got {self.attackers}")
        check_attack(self.attack)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"the dropout fraction must be in [0, 1), got {self.dropout}")
        if self.dropout > 0 and not self.secure_aggregation:
            raise ValueError("--dropout simulates devices dropping out of secure aggregation: add --secure-aggregation")
        if self.dp_epsilon is not None and not self.secure_aggregation:
            raise ValueError(
                "--dp-epsilon splits the noise among the devices, which only protects them under secure aggregation: "
                "add --secure-aggregation"
            )
        if self.dp_epsilon is not None and not self.dp_epsilon > 0:
            raise ValueError(f"--dp-epsilon must be > 0, got {self.dp_epsilon}")
        if self.use_virtual():
            if self.attacker_count() or self.secure_aggregation or self.dropout:
                raise ValueError(
                    "virtual devices run honest, non-secure-aggregation tasks only: drop --attackers, "
                    "--secure-aggregation and --dropout, or pass --no-virtual"
                )
            if self.submit not in ("batch", "direct"):
                raise ValueError(f"--submit must be batch or direct, got {self.submit!r}")
            if not 1 <= self.pool_count() <= self.devices:
                raise ValueError(f"--pools must be between 1 and the number of devices, got {self.pools}")
        if self.attacker_count() + self.dropout_count() > self.devices:
            raise ValueError("more attacking and dropping devices than devices")
        spec = replace(self.spec, privacy=self.privacy_spec(), strategy=self.strategy)
        if spec.privacy.secure_aggregation:
            survivors = self.devices - self.dropout_count()
            if survivors < spec.privacy.threshold_for(self.devices):
                raise ValueError(
                    f"{survivors} surviving devices cannot reach the secure-aggregation threshold "
                    f"{spec.privacy.threshold_for(self.devices)} of {self.devices}"
                )
            if spec.privacy.differential_privacy and survivors < spec.privacy.min_survivors_for(self.devices):
                raise ValueError(
                    f"{survivors} surviving devices carry less than the DP noise needs "
                    f"({spec.privacy.min_survivors_for(self.devices)})"
                )


def robust_defaults(strategy: StrategySpec, devices: int, attackers: int) -> StrategySpec:
    """Fill in the Byzantine bound a practitioner would configure when it was not given: f = the number of
    attackers for Krum and Multi-Krum (Bulyan: the most its n >= 4f + 3 allows), beta = their share for the
    trimmed mean. Explicit parameters are kept."""
    params = dict(strategy.params)
    given = strategy.params
    if attackers > 0 and strategy.name in ("krum", "multi-krum") and given.get("f", 1) == 1:
        params["f"] = max(1, min(attackers, (devices - 3) // 2))
    if attackers > 0 and strategy.name == "bulyan" and given.get("f", 1) == 1:
        params["f"] = max(1, min(attackers, (devices - 3) // 4))
    if attackers > 0 and strategy.name == "trimmed-mean" and given.get("beta", 0.1) == 0.1:
        params["beta"] = min(0.49, attackers / devices)
    return StrategySpec(strategy.name, params)


@dataclass
class RoundRow:
    round: int
    opened_at: float
    submitted: int = 0
    accepted: int | None = None
    rejected: int | None = None
    accuracy: float | None = None
    loss: float | None = None
    gas: int = 0
    seconds: float | None = None
    max_train_seconds: float | None = None
    model_cid: str = ""
    failed: bool = False
    attackers_accepted: int | None = None


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
    _clear_handover(ready_dir, launch_file)
    try:
        # Devices, pools and aggregators start first: their imports and warm-up (most of a process's start-up)
        # overlap the devnet's start and the deployment; they connect once the launch file names the task.
        processes = _launch(options, launch_file, logs, ready_dir)
        from fedchain.devnet import Devnet, terminate

        # With `persist` the chain is kept on disk and both services are restarted if they die (behind proxies
        # that hold requests meanwhile): a crash of either never ends the run.
        net = Devnet(workdir, options.chain, num_accounts=num_accounts, persist=options.persist)
        # What the devnet imports while it starts (eth_account, eth_utils) is imported here first: two threads
        # importing the same packages at once can deadlock on their module locks.
        import eth_utils  # noqa: F401

        import fedchain.chain.accounts  # noqa: F401

        with ThreadPoolExecutor(1, thread_name_prefix="devnet") as background:
            # The chain and IPFS start in their own processes; this one imports torch and web3 meanwhile.
            starting = background.submit(net.start)
            from fedchain.chain import TaskClient, connect, devnet_account
            from fedchain.deploy import TaskPlan, create_task, default_min_updates, wait_for_encryption_keys
            from fedchain.storage import IpfsClient, digest_to_cid

            state = starting.result()
        state.save(workdir / "devnet.json")
        console.print(f"devnet: {options.chain} at {state.rpc_url}, IPFS at {state.ipfs_api} (logs in {workdir}/logs)")
        if options.explorer_port is not None:
            explorer, explorer_url = _start_explorer(options, state, workdir)
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
        deployed = create_task(w3, devnet_account(ADMIN_INDEX), ipfs, plan)
        console.print(
            f"task {deployed.address}: {options.rounds} rounds, {options.devices} devices "
            f"({options.attacker_count()} attacking: {options.attack if options.attacker_count() else '-'}), "
            f"strategy {strategy.name} {dict(strategy.params)}, {plan.threshold()} of {options.aggregators} "
            f"aggregators must agree ({options.lying_aggregators} lying)"
        )
        write_launch(launch_file, LaunchTarget(deployed.address, state.rpc_url, state.ipfs_api))
        admin_task = TaskClient.for_account(w3, deployed.address, devnet_account(ADMIN_INDEX))
        if privacy.secure_aggregation:
            wait_for_encryption_keys(admin_task, device_addresses, timeout=min(300.0, options.timeout))
        else:
            _wait_ready(ready_dir, len(processes), processes, min(READY_TIMEOUT, options.timeout))
        follow_from = w3.eth.block_number + 1
        startup_seconds = time.perf_counter() - started
        # Round 1's clock starts here: _follow sees its RoundOpened only after loading the test set.
        round1_opened_at = time.perf_counter()
        admin_task.start()
        console.print(f"every device is ready after {startup_seconds:.1f}s: round 1 is open")
        rows, faults = _follow(
            options, w3, ipfs, deployed.address, processes, console, live, follow_from, round1_opened_at
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
        gas = _gas_per_function(w3, task, deployed.block_number)
        gas["deploy"] = deployed.gas["deploy"]
        centralized = _centralized_accuracy(options)
        summary = _summary(options, deployed.address, rows, gas, final_cid, centralized, time.perf_counter() - started)
        summary["startup_seconds"] = round(startup_seconds, 3)
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
            summary["non_private_accuracy"] = _non_private_accuracy(options)
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
        from fedchain.devnet import terminate

        for proc in processes:
            terminate(proc)
        if explorer is not None:
            terminate(explorer)
        if net is not None:
            net.stop()


def _start_explorer(options: DemoOptions, state: DevnetState, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`fedchain explorer` against the demo's devnet, as its own process; returns it once it answers."""
    import httpx

    from fedchain.devnet import terminate

    port = options.explorer_port or 8000
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "fedchain.cli", "explorer", "--port", str(port)]
    cmd += ["--rpc-url", state.rpc_url, "--ipfs-api", state.ipfs_api, "--index", str(workdir / "explorer.sqlite")]
    with open(workdir / "logs" / "explorer.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the explorer exited with code {proc.returncode} (is port {port} in use? --explorer-port picks "
                f"another); see {workdir}/logs/explorer.log"
            )
        try:
            if httpx.get(url + "api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    terminate(proc)
    raise TimeoutError(f"the explorer did not answer at {url} within 60s; see {workdir}/logs/explorer.log")


def _clear_handover(ready_dir: Path, launch_file: Path) -> None:
    """Remove an earlier run's ready markers and launch file: this run's processes must not take them for theirs."""
    ready_dir.mkdir(parents=True, exist_ok=True)
    for marker in ready_dir.iterdir():
        marker.unlink()
    launch_file.unlink(missing_ok=True)


def _launch(options: DemoOptions, launch_file: Path, logs: Path, ready_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Aggregators first (`_follow` watches them), then one process per device or one pool per share of devices;
    each waits for `launch_file` (the task and endpoints) and writes a file into `ready_dir` once it is ready for
    round 1."""
    common = ["--launch-file", str(launch_file)]
    commands = []
    for j, index in enumerate(options.aggregator_indices()):
        cmd = [sys.executable, "-m", "fedchain.cli", "aggregator", *common, "--account", str(index)]
        cmd += ["--ready-file", str(ready_dir / f"aggregator-{j}")]
        if j >= options.aggregators - options.lying_aggregators:
            cmd.append("--lie")
        # Only the first evaluates: the others' reports would be the same, and evaluation costs the shared CPU.
        commands.append((f"aggregator-{j}" if options.aggregators > 1 else "aggregator", cmd))
    data = ["--online" if options.online else "--no-online"]
    if options.non_iid is not None:
        data += ["--non-iid", str(options.non_iid)]
    if options.use_virtual():
        pools = options.pool_count()
        for p in range(pools):
            first, end = p * options.devices // pools, (p + 1) * options.devices // pools
            cmd = [sys.executable, "-m", "fedchain.cli", "pool", *common, *data]
            cmd += ["--accounts", f"{FIRST_DEVICE_INDEX + first}:{FIRST_DEVICE_INDEX + end}"]
            cmd += ["--first-partition", str(first), "--num-partitions", str(options.devices)]
            cmd += ["--ready-file", str(ready_dir / f"pool-{p}")]
            relayers = options.relayer_indices()
            if relayers:
                cmd += ["--relayer-account", str(relayers[p])]
            commands.append((f"pool-{p}", cmd))
    for i in range(0 if options.use_virtual() else options.devices):
        cmd = [sys.executable, "-m", "fedchain.cli", "device", *common, *data]
        cmd += ["--account", str(FIRST_DEVICE_INDEX + i), "--partition", f"{i}/{options.devices}"]
        cmd += ["--ready-file", str(ready_dir / f"device-{i}")]
        if i < options.attacker_count():
            cmd += ["--attack", options.attack]
        if i >= options.devices - options.dropout_count():
            cmd += ["--drop-after-setup"]
        commands.append((f"device-{i}", cmd))
    return [_spawn(name, cmd, logs) for name, cmd in commands]


def _spawn(name: str, cmd: list[str], logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc.fedchain_name = name  # type: ignore[attr-defined]
    return proc


def _restart_crashed_pools(processes: list[subprocess.Popen[bytes]], logs: Path, console: Console) -> int:
    """A pool that died (killed, out of memory) is started again: its devices resume from chain state. Returns
    how many were restarted."""
    restarted = 0
    for i, proc in enumerate(processes):
        name = getattr(proc, "fedchain_name", "")
        if name.startswith("pool-") and proc.poll() is not None and proc.returncode != 0:
            lives = getattr(proc, "fedchain_lives", 1)
            if lives > MAX_POOL_RESTARTS:
                raise RuntimeError(f"{name} keeps failing (exit code {proc.returncode}, {lives} lives): see its log")
            console.print(f"[yellow]{name} exited with code {proc.returncode}: restarting it[/]")
            processes[i] = _spawn(name, list(map(str, proc.args)), logs)  # type: ignore[arg-type]
            processes[i].fedchain_lives = lives + 1  # type: ignore[attr-defined]
            restarted += 1
    return restarted


def _wait_ready(ready_dir: Path, count: int, processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Block until `count` ready files exist; a process that exits first, or the timeout, is an error."""
    deadline = time.monotonic() + timeout
    while len(list(ready_dir.iterdir())) < count:
        for proc in processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, proc.args[3:5]))} exited before round 1 (see its log)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(ready_dir.iterdir()))} of {count} processes were ready in {timeout}s")
        time.sleep(0.02)


def _follow(
    options: DemoOptions,
    w3: Web3,
    ipfs: IpfsClient,
    task_address: str,
    processes: list[subprocess.Popen[bytes]],
    console: Console,
    live: bool,
    from_block: int = 0,
    round1_opened_at: float | None = None,
) -> tuple[dict[int, RoundRow], dict[str, int]]:
    """Watch the task's events until it finishes, evaluating each finalised model independently.

    Returns the rows and the AggregatorFault events per aggregator."""
    from fedchain.chain import EventFollower, Phase, TaskClient
    from fedchain.chain.notify import EventNotifier
    from fedchain.learning.data import load_dataset
    from fedchain.learning.model import build_model

    task = TaskClient(w3, task_address)
    follower = EventFollower(w3, task_address, task.abi, from_block=from_block)
    notifier = EventNotifier(options_rpc_url(w3), [task.address], poll_interval=0.1)
    round_txs: dict[int, set[str]] = defaultdict(set)
    pool_restarts = 0
    _, test = load_dataset(options.spec.dataset)
    model = build_model(options.spec.model, seed=options.spec.seed)
    rows: dict[int, RoundRow] = {}
    faults: dict[str, int] = defaultdict(int)
    attackers = {a.lower() for a in _device_addresses(options)[: options.attacker_count()]}
    gas_by_tx: dict[str, int] = {}
    deadline = time.monotonic() + options.timeout
    finished = False
    view = Live(_table(rows, options), console=console, refresh_per_second=4, transient=False) if live else None
    if view is not None:
        view.start()
    try:
        while not finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo did not finish within {options.timeout:.0f}s; logs in {options.workdir}")
            for proc in processes[: options.aggregators]:
                # a suspended aggregator (a liar after maxAggregatorFaults faults) stops by design; the others agree
                if proc.poll() is not None and proc.returncode != SUSPENDED_EXIT_CODE:
                    raise RuntimeError(f"an aggregator exited early (code {proc.returncode}); see its log")
            pool_restarts += _restart_crashed_pools(processes, options.workdir / "logs", console)
            for event in follower.poll():
                now = time.perf_counter()
                r = event.args.get("round")
                if event.name == "RoundOpened":
                    opened = round1_opened_at if r == 1 and round1_opened_at is not None else now
                    rows[r] = RoundRow(round=r, opened_at=opened)
                elif event.name == "AggregatorFault":
                    faults[event.args["aggregator"]] += 1
                elif r in rows and event.name in ROUND_TX_EVENTS:
                    row = rows[r]
                    round_txs[r].add(event.tx_hash)  # gas is read once the run is over: receipts cost time
                    if event.name == "UpdateSubmitted":
                        row.submitted += 1
                    elif event.name == "UpdateBatchSubmitted":
                        row.submitted += int(event.args["entries"])
                    elif event.name == "AggregateCommitted":
                        row.seconds = now - row.opened_at
                        _record_aggregate(row, event.args, ipfs, model, test, attackers)
                    elif event.name == "AggregationFailed":
                        row.seconds = now - row.opened_at
                        row.failed = True
                elif event.name in ("TaskFinished", "TaskCancelled"):
                    finished = True
            if view is not None:
                view.update(_table(rows, options))
            if not finished:
                notifier.wait(1.0)
    finally:
        notifier.close()
        if view is not None:
            view.stop()
    for r, hashes in round_txs.items():
        rows[r].gas = sum(_receipt_gas(w3, hashes, gas_by_tx))
    if task.current_round().phase != Phase.FINISHED:
        raise RuntimeError("the task was cancelled")
    faults["pool_restarts"] = pool_restarts
    return rows, dict(faults)


def options_rpc_url(w3: Web3) -> str:
    """The HTTP endpoint a connection talks to (for the WebSocket beside it)."""
    return str(getattr(w3.provider, "endpoint_uri", "") or "")


def _receipt_gas(w3: Web3, hashes: set[str], cache: dict[str, int]) -> list[int]:
    missing = [h for h in hashes if h not in cache]
    for start in range(0, len(missing), 500):
        chunk = missing[start : start + 500]
        with w3.batch_requests() as batch:
            for h in chunk:
                batch.add(w3.eth.get_transaction_receipt(h))
            receipts = batch.execute()
        cache.update({h: int(rcpt["gasUsed"]) for h, rcpt in zip(chunk, receipts, strict=True)})
    return [cache[h] for h in hashes]


def _device_addresses(options: DemoOptions) -> list[str]:
    from fedchain.chain.accounts import devnet_addresses

    return devnet_addresses(FIRST_DEVICE_INDEX + options.devices)[FIRST_DEVICE_INDEX:]


def _record_aggregate(
    row: RoundRow, args: dict[str, Any], ipfs: IpfsClient, model: Any, test: Any, attackers: set[str]
) -> None:
    from fedchain.learning.model import set_weights
    from fedchain.learning.train import evaluate
    from fedchain.storage import digest_to_cid

    row.model_cid = digest_to_cid(bytes(args["modelDigest"]))
    row.accepted = int(args["acceptedUpdates"])
    report = json.loads(ipfs.cat(digest_to_cid(bytes(args["reportDigest"])), max_size=16 << 20))
    row.rejected = len(report.get("rejected", []))
    row.attackers_accepted = sum(1 for a in report.get("accepted", []) if a["device"].lower() in attackers)
    train_times = [a["train_seconds"] for a in report.get("accepted", []) if "train_seconds" in a]
    row.max_train_seconds = max(train_times) if train_times else None
    set_weights(model, ipfs.get_weights(row.model_cid))
    result = evaluate(model, test)
    row.accuracy, row.loss = result.accuracy, result.loss


def _table(rows: dict[int, RoundRow], options: DemoOptions) -> Table:
    table = Table(title=f"fedchain demo: {options.devices} devices on {options.chain}", expand=False)
    for col in ("round", "accuracy", "loss", "updates", "gas", "seconds"):
        table.add_column(col, justify="right")
    for r in sorted(rows):
        row = rows[r]
        updates = f"{row.accepted}/{row.submitted}" if row.accepted is not None else f"{row.submitted}…"
        if row.failed:
            updates = f"no agreement ({row.submitted})"
        table.add_row(
            f"{r}/{options.rounds}",
            f"{row.accuracy:.4f}" if row.accuracy is not None else "…",
            f"{row.loss:.4f}" if row.loss is not None else "…",
            updates,
            f"{row.gas:,}",
            f"{row.seconds:.2f}" if row.seconds is not None else "…",
        )
    return table


def _gas_per_function(w3: Web3, task: TaskClient, from_block: int) -> dict[str, int]:
    """Average gas of every function called on the task, from the receipts of its transactions."""
    from web3 import Web3

    used: dict[str, list[int]] = defaultdict(list)
    for number in range(from_block, w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["to"] is None or Web3.to_checksum_address(tx["to"]) != task.address:
                continue
            fn, _ = task.contract.decode_function_input(tx["input"])
            used[fn.fn_name].append(w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])
    return {name: round(statistics.fmean(values)) for name, values in sorted(used.items())}


def _non_private_accuracy(options: DemoOptions) -> float:
    """Final accuracy of plain FedAvg on the demo's devices, data split and rounds, simulated in this process."""
    from fedchain.learning.aggregation.bench import simulate
    from fedchain.learning.aggregation.fedavg import FedAvg

    return float(
        simulate(FedAvg(), "none", devices=options.devices, attackers=0, alpha=options.non_iid, rounds=options.rounds)
    )


def _centralized_accuracy(options: DemoOptions) -> float:
    """The same model trained on the union of the devices' data: the reference a federated run aims for."""
    from fedchain.learning.data import load_dataset
    from fedchain.learning.train import train_centralized

    train, test = load_dataset(options.spec.dataset)
    epochs = options.rounds * options.spec.train.local_epochs
    return train_centralized(options.spec, train, test, epochs=epochs).accuracy


def _summary(
    options: DemoOptions,
    task: str,
    rows: dict[int, RoundRow],
    gas: dict[str, int],
    final_cid: str,
    centralized: float,
    total_seconds: float,
) -> dict[str, Any]:
    ordered = [rows[r] for r in sorted(rows) if not rows[r].failed and rows[r].accepted is not None]
    accuracies = [row.accuracy for row in ordered]
    round_seconds = [round(row.seconds or 0.0, 3) for row in ordered]
    overhead = [
        round((row.seconds or 0.0) - (row.max_train_seconds or 0.0), 3) for row in ordered if row.seconds is not None
    ]
    return {
        "task": task,
        "rounds": options.rounds,
        "devices": options.devices,
        "chain": options.chain,
        "non_iid_alpha": options.non_iid,
        "online": options.online,
        "final_accuracy": accuracies[-1] if accuracies else None,
        "centralized_accuracy": centralized,
        "accuracy_per_round": accuracies,
        "loss_per_round": [row.loss for row in ordered],
        "updates_per_round": [row.accepted for row in ordered],
        "rejected_per_round": [row.rejected for row in ordered],
        "attackers_accepted_per_round": [row.attackers_accepted for row in ordered],
        "round_seconds": round_seconds,
        "train_seconds_per_round": [row.max_train_seconds for row in ordered],
        "overhead_seconds_per_round": overhead,
        "gas_per_round": [row.gas for row in ordered],
        "gas": gas,
        "final_model_cid": final_cid,
        "total_seconds": round(total_seconds, 2),
    }
