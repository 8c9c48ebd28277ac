"""Creating a training task: publish its description and initial model on IPFS, deploy, approve, start."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedchain.chain.task import TaskConfig, deploy_task
from fedchain.chain.tx import TxResult
from fedchain.learning.model import build_model, get_weights
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.storage import IpfsClient, cid_to_digest

STRATEGY_IDS = {"fedavg": 0}


def default_min_updates(num_devices: int) -> int:
    """Updates a round needs once its deadline has passed: 60% of the devices, at least one."""
    return max(1, math.ceil(0.6 * num_devices))


@dataclass(frozen=True)
class TaskPlan:
    """What `create_task` deploys."""

    spec: TaskSpec = field(default_factory=default_task_spec)
    num_rounds: int = 10
    min_updates: int = 1
    max_updates: int = 1
    round_duration: int = 120
    strategy: str = "fedavg"
    devices: tuple[str, ...] = ()
    aggregators: tuple[str, ...] = ()
    start: bool = True


@dataclass(frozen=True)
class DeployedTask:
    address: str
    spec_cid: str
    initial_model_cid: str
    gas: dict[str, int]
    block_number: int


def create_task(w3: Web3, admin: LocalAccount, ipfs: IpfsClient, plan: TaskPlan) -> DeployedTask:
    """Deploy a task per `plan`; approve its devices and aggregators; open round 1 if `plan.start`."""
    if plan.strategy not in STRATEGY_IDS:
        raise ValueError(f"unknown strategy {plan.strategy!r}: choose one of {sorted(STRATEGY_IDS)}")
    spec_cid = ipfs.add(plan.spec.to_json())
    model = build_model(plan.spec.model, seed=plan.spec.seed)
    initial_cid = ipfs.put_weights(get_weights(model), {"fedchain.kind": "global-model", "fedchain.round": "0"})
    config = TaskConfig(
        model_spec_digest=cid_to_digest(spec_cid),
        initial_model_digest=cid_to_digest(initial_cid),
        num_rounds=plan.num_rounds,
        min_updates=plan.min_updates,
        max_updates=plan.max_updates,
        round_duration=plan.round_duration,
        strategy_id=STRATEGY_IDS[plan.strategy],
    )
    task, deployed = deploy_task(w3, admin, config)
    gas: dict[str, int] = {"deploy": deployed.gas_used}
    results: list[tuple[str, TxResult]] = []
    if plan.devices:
        results.append(("approveDevices", task.approve_devices(list(plan.devices))))
    for aggregator in plan.aggregators:
        results.append(("grantRole", task.grant_aggregator(aggregator)))
    if plan.start:
        results.append(("start", task.start()))
    for name, result in results:
        gas[name] = result.gas_used
    return DeployedTask(
        address=task.address,
        spec_cid=spec_cid,
        initial_model_cid=initial_cid,
        gas=gas,
        block_number=deployed.block_number,
    )
