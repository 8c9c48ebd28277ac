"""Creating a training task: publish its description and initial model on IPFS, deploy, approve, start."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedchain.chain.buffered import FEDBUFF_EXPONENT_MICRO, WEIGHTING_POLYNOMIAL, BufferedConfig, deploy_buffered_task
from fedchain.chain.task import (
    AGGREGATOR_ROLE,
    MAX_SAMPLES_PER_UPDATE,
    RELAYER_ROLE,
    TaskClient,
    TaskConfig,
    deploy_task,
    epsilon_to_micro,
)
from fedchain.chain.tx import TxResult
from fedchain.learning.aggregation.registry import StrategySpec
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.learning.staleness import check_buffer_size, check_buffered_strategy
from fedchain.learning.types import Weights
from fedchain.storage import IpfsClient, cid_to_digest

# Default cap on one update's sample count (its FedAvg weight, TaskConfig.maxSamplesPerUpdate): the largest bundled
# dataset (ecg, 2,000 records) is the largest partition a demo device can hold; 50 times that leaves room for
# larger real partitions while one device still cannot claim the weight of millions of samples.
DEFAULT_MAX_SAMPLES_PER_UPDATE = 100_000
# Faults (dissenting or withheld reveals) that suspend an aggregator: one can be bad luck (a crash between commit
# and reveal), three are a pattern.
DEFAULT_MAX_AGGREGATOR_FAULTS = 3


def default_min_updates(num_devices: int) -> int:
    """Updates a round needs once its deadline has passed: 60% of the devices, at least one."""
    return max(1, math.ceil(0.6 * num_devices))


def default_threshold(num_aggregators: int) -> int:
    """Agreeing reveals that finalise a round: a strict majority of the aggregators, so two results never both
    reach it (1 of 1, 2 of 3, 3 of 4 or 5)."""
    return num_aggregators // 2 + 1


@dataclass(frozen=True)
class TaskPlan:
    """What `create_task` deploys."""

    spec: TaskSpec = field(default_factory=default_task_spec)
    num_rounds: int = 10
    min_updates: int = 1
    max_updates: int = 1
    round_duration: int = 120
    # The aggregation strategy; None keeps the one in `spec` (FedAvg by default).
    strategy: StrategySpec | str | None = None
    devices: tuple[str, ...] = ()
    aggregators: tuple[str, ...] = ()
    # Accounts allowed to record relayed batches of signed updates (RELAYER_ROLE) besides the aggregators.
    relayers: tuple[str, ...] = ()
    # Whether every aggregator also gets RELAYER_ROLE (the default: aggregators collect and relay signed updates).
    aggregators_relay: bool = True
    # k of the k-of-n agreement among aggregators; None: a strict majority of `aggregators` (at least 1).
    aggregator_threshold: int | None = None
    # Seconds of the commit window, and again of the reveal window, once a round closes.
    aggregation_duration: int = 60
    # Devices submit setups, masked updates and unmask shares (secure aggregation) instead of plain updates.
    secure_aggregation: bool = False
    # Total differential-privacy epsilon the task may spend; 0 means no on-chain DP ledger.
    epsilon_budget: float = 0.0
    # Epsilon after one round, from the privacy accountant for this plan; required (> 0, <= budget) with a budget.
    first_round_epsilon: float = 0.0
    # Largest sample count one update may claim (1..MAX_SAMPLES_PER_UPDATE); the contract refuses more.
    max_samples_per_update: int = DEFAULT_MAX_SAMPLES_PER_UPDATE
    # Faults after which an aggregator is suspended (>= 1).
    max_aggregator_faults: int = DEFAULT_MAX_AGGREGATOR_FAULTS
    start: bool = True

    def task_spec(self) -> TaskSpec:
        """`spec` with `strategy` (if given) written into it: the description every participant reads."""
        if self.strategy is None:
            return self.spec
        return dataclasses.replace(self.spec, strategy=self.strategy)

    def relayer_accounts(self) -> tuple[str, ...]:
        """Who gets RELAYER_ROLE: the aggregators (unless `aggregators_relay` is False), then `relayers`, each once
        (none under secure aggregation, where the contract refuses batches)."""
        if self.secure_aggregation:
            return ()
        chosen = (*self.aggregators, *self.relayers) if self.aggregators_relay else self.relayers
        return tuple(dict.fromkeys(Web3.to_checksum_address(a) for a in chosen))

    def threshold(self) -> int:
        if self.aggregator_threshold is not None:
            return self.aggregator_threshold
        return default_threshold(max(1, len(self.aggregators)))

    def epsilon_micro(self) -> tuple[int, int]:
        """(epsilonBudgetMicro, firstRoundEpsilonMicro) for the contract: the budget rounded down, the first round's
        epsilon rounded up, so rounding never lets the task spend more than `epsilon_budget`. ValueError for a plan
        the contract would refuse."""
        budget = epsilon_to_micro(self.epsilon_budget, round_up=False)
        if budget == 0:
            if self.epsilon_budget > 0:
                raise ValueError(f"epsilon_budget {self.epsilon_budget!r} is below the contract's resolution (1e-6)")
            return 0, 0
        first = epsilon_to_micro(self.first_round_epsilon)
        if first == 0:
            raise ValueError("a DP budget needs first_round_epsilon (the accountant's epsilon after one round)")
        if first > budget:
            raise ValueError(
                f"one round already spends epsilon {self.first_round_epsilon} > budget {self.epsilon_budget}"
            )
        return budget, first


@dataclass(frozen=True)
class DeployedTask:
    address: str
    spec_cid: str
    initial_model_cid: str
    gas: dict[str, int]
    block_number: int
    # Seconds each step of the deployment took (publish, deploy, approve, grant, start): where start-up goes.
    seconds: dict[str, float] = field(default_factory=dict)


APPROVE_CHUNK = 250


def initial_model_weights(spec: TaskSpec) -> Weights:
    """The task's initial model: the spec's model seeded with the spec's seed."""
    from fedchain.learning.model import build_model, get_weights  # torch: only where the model is built

    return get_weights(build_model(spec.model, seed=spec.seed))


def create_task(
    w3: Web3, admin: LocalAccount, ipfs: IpfsClient, plan: TaskPlan, initial_weights: Weights | None = None
) -> DeployedTask:
    """Deploy a task per `plan`; approve its devices and aggregators; open round 1 if `plan.start`.

    `initial_weights` are `initial_model_weights(plan.spec)` computed elsewhere (the demo's helper process, so the
    demo's own process does not import torch); by default they are built here."""
    spec = plan.task_spec()  # ValueError for an unknown strategy or bad parameters, before anything is sent
    threshold = plan.threshold()
    if threshold < 1:
        raise ValueError(f"the aggregator threshold must be >= 1, got {threshold}")
    if plan.aggregators and threshold > len(plan.aggregators):
        raise ValueError(f"threshold {threshold} exceeds the {len(plan.aggregators)} aggregators: no round can finish")
    if plan.aggregators and 2 * threshold <= len(plan.aggregators):
        raise ValueError(
            f"threshold {threshold} is not a majority of the {len(plan.aggregators)} aggregators: the contract needs "
            "n / 2 < k <= n (a minority could finalise, and two results could both reach k)"
        )
    if not 1 <= plan.max_samples_per_update <= MAX_SAMPLES_PER_UPDATE:
        raise ValueError(f"max_samples_per_update must be in [1, {MAX_SAMPLES_PER_UPDATE}]")
    if plan.max_aggregator_faults < 1:
        raise ValueError("max_aggregator_faults must be >= 1")
    epsilon_budget_micro, first_round_epsilon_micro = plan.epsilon_micro()
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    spec_cid = ipfs.add(spec.to_json())
    weights = initial_weights if initial_weights is not None else initial_model_weights(spec)
    initial_cid = ipfs.put_weights(weights, {"fedchain.kind": "global-model", "fedchain.round": "0"})
    config = TaskConfig(
        model_spec_digest=cid_to_digest(spec_cid),
        initial_model_digest=cid_to_digest(initial_cid),
        num_rounds=plan.num_rounds,
        min_updates=plan.min_updates,
        max_updates=plan.max_updates,
        round_duration=plan.round_duration,
        strategy_id=spec.strategy_spec().id,
        aggregator_threshold=threshold,
        aggregation_duration=plan.aggregation_duration,
        secure_aggregation=plan.secure_aggregation,
        epsilon_budget_micro=epsilon_budget_micro,
        first_round_epsilon_micro=first_round_epsilon_micro,
        max_samples_per_update=plan.max_samples_per_update,
        max_aggregator_faults=plan.max_aggregator_faults,
    )
    seconds["publish"] = time.perf_counter() - clock
    task, deployed = deploy_task(w3, admin, config)
    seconds["deploy"] = time.perf_counter() - clock - seconds["publish"]
    gas: dict[str, int] = {"deploy": deployed.gas_used}
    results = grant_roles(task, plan.devices, plan.aggregators, plan.relayer_accounts())
    if plan.start:
        results.append(("start", task.start()))
    seconds["roles"] = time.perf_counter() - clock - seconds["publish"] - seconds["deploy"]
    for name, result in results:
        gas[name] = gas.get(name, 0) + result.gas_used
    return DeployedTask(
        address=task.address,
        spec_cid=spec_cid,
        initial_model_cid=initial_cid,
        gas=gas,
        block_number=deployed.block_number,
        seconds=seconds,
    )


def grant_roles(
    task: TaskClient, devices: Sequence[str], aggregators: Sequence[str], relayers: Sequence[str]
) -> list[tuple[str, TxResult]]:
    """Approve `devices` (in chunks: one approval writes a slot per device, ~25k gas, and a block holds 30M gas on
    the devnets) and grant the aggregator and relayer roles, as the task's admin: all signed here and sent at once
    (`transact_many`), the gas of each kind of call estimated once (the first, largest, chunk; the first grant)."""
    functions = task.contract.functions
    calls: list[tuple[str, Any]] = [
        (
            "approveDevices",
            functions.approveDevices([Web3.to_checksum_address(d) for d in devices[i : i + APPROVE_CHUNK]]),
        )
        for i in range(0, len(devices), APPROVE_CHUNK)
    ]
    calls += [("grantRole", functions.grantRole(AGGREGATOR_ROLE, Web3.to_checksum_address(a))) for a in aggregators]
    calls += [("grantRelayer", functions.grantRole(RELAYER_ROLE, Web3.to_checksum_address(r))) for r in relayers]
    sender = task.sender
    assert sender is not None, "the task's admin sends the approvals"
    limits: dict[str, int] = {}
    for name, fn in calls:
        kind = "grant" if name.startswith("grant") else name
        if kind not in limits:
            limits[kind] = sender.estimate(fn)
    sent = sender.transact_many([(fn, limits["grant" if name.startswith("grant") else name]) for name, fn in calls])
    return [(name, result) for (name, _), result in zip(calls, sent, strict=True)]


def wait_for_encryption_keys(task: TaskClient, accounts: Sequence[str], timeout: float = 300.0) -> None:
    """Block until every account in `accounts` has registered an encryption key on the task (TimeoutError after
    `timeout` seconds, naming the missing ones). A secure-aggregation round takes as participants the devices with
    a key when it opens, so a task is started only once its devices' keys are in."""
    deadline = time.monotonic() + timeout
    missing = list(accounts)
    while True:
        missing = [a for a in missing if task.encryption_key(a) == b"\x00" * 32]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(missing)} device(s) registered no encryption key within {timeout:.0f}s: {missing}"
            )
        time.sleep(0.5)


@dataclass(frozen=True)
class BufferedPlan:
    """What `create_buffered_task` deploys: an asynchronous buffered task (FedBuff, contracts/BufferedTask.sol)."""

    spec: TaskSpec = field(default_factory=default_task_spec)
    num_versions: int = 10
    buffer_size: int = 3  # K: updates per aggregated buffer
    max_staleness: int = 3  # versions an update's base may lag behind the latest when it is submitted
    strategy: StrategySpec | str | None = None
    devices: tuple[str, ...] = ()
    aggregators: tuple[str, ...] = ()
    aggregator_threshold: int | None = None
    aggregation_duration: int = 60
    max_aggregation_attempts: int = 2
    # FedBuff's polynomial staleness weighting (1 + s)^(-a), a in millionths; or constant weights.
    weighting_id: int = WEIGHTING_POLYNOMIAL
    weighting_param_micro: int = FEDBUFF_EXPONENT_MICRO
    # Seconds after which a buffer holding at least min_buffer_size updates may be closed early (0: never).
    buffer_duration: int = 0
    min_buffer_size: int = 0
    max_samples_per_update: int = DEFAULT_MAX_SAMPLES_PER_UPDATE
    max_aggregator_faults: int = DEFAULT_MAX_AGGREGATOR_FAULTS
    start: bool = True

    def task_spec(self) -> TaskSpec:
        if self.strategy is None:
            return self.spec
        return dataclasses.replace(self.spec, strategy=self.strategy)

    def threshold(self) -> int:
        if self.aggregator_threshold is not None:
            return self.aggregator_threshold
        return default_threshold(max(1, len(self.aggregators)))


def create_buffered_task(w3: Web3, admin: LocalAccount, ipfs: IpfsClient, plan: BufferedPlan) -> DeployedTask:
    """Deploy a BufferedTask per `plan`; approve its devices and aggregators; start it (buffer 1 fills on version 0)
    if `plan.start`. ValueError, before anything is sent, for what buffered tasks cannot do."""
    spec = plan.task_spec()
    privacy = spec.privacy
    check_buffered_strategy(spec.strategy_spec(), privacy.secure_aggregation, privacy.seal_updates)
    # The smallest buffer that may be aggregated: K, or the minimum with which an overdue buffer closes early.
    check_buffer_size(spec.strategy_spec(), max(1, plan.min_buffer_size) if plan.buffer_duration else plan.buffer_size)
    threshold = plan.threshold()
    if plan.aggregators and not len(plan.aggregators) / 2 < threshold <= len(plan.aggregators):
        raise ValueError(f"threshold {threshold} must be a strict majority of the {len(plan.aggregators)} aggregators")
    spec_cid = ipfs.add(spec.to_json())
    initial_cid = ipfs.put_weights(
        initial_model_weights(spec), {"fedchain.kind": "global-model", "fedchain.version": "0"}
    )
    config = BufferedConfig(
        model_spec_digest=cid_to_digest(spec_cid),
        initial_model_digest=cid_to_digest(initial_cid),
        num_versions=plan.num_versions,
        buffer_size=plan.buffer_size,
        max_staleness=plan.max_staleness,
        max_samples_per_update=plan.max_samples_per_update,
        strategy_id=spec.strategy_spec().id,
        weighting_id=plan.weighting_id,
        weighting_param_micro=plan.weighting_param_micro,
        aggregator_threshold=threshold,
        aggregation_duration=plan.aggregation_duration,
        max_aggregation_attempts=plan.max_aggregation_attempts,
        max_aggregator_faults=plan.max_aggregator_faults,
        buffer_duration=plan.buffer_duration,
        min_buffer_size=plan.min_buffer_size,
    )
    task, deployed = deploy_buffered_task(w3, admin, config)  # the contract refuses a bad config (InvalidConfig)
    gas: dict[str, int] = {"deploy": deployed.gas_used}
    results: list[tuple[str, TxResult]] = []
    for start in range(0, len(plan.devices), APPROVE_CHUNK):
        results.append(("approveDevices", task.approve_devices(list(plan.devices[start : start + APPROVE_CHUNK]))))
    for aggregator in plan.aggregators:
        results.append(("grantRole", task.grant_aggregator(aggregator)))
    if plan.start:
        results.append(("start", task.start()))
    for name, result in results:
        gas[name] = gas.get(name, 0) + result.gas_used
    return DeployedTask(task.address, spec_cid, initial_cid, gas, deployed.block_number)
