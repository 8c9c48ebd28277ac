"""`brownie run scripts/deploy.py`: deploy a FederatedTask with brownie's network and first account.

Thin on purpose: the task description and initial model come from the fedchain package, and IPFS is the devnet's
(or $FEDCHAIN_IPFS_API). Use `fedchain deploy` for the full set of options.
"""

import os

from brownie import FederatedTask, accounts, network

from fedchain.app.deploy import default_min_updates
from fedchain.app.devnet import DevnetState
from fedchain.chain.task import AGGREGATOR_ROLE
from fedchain.learning.model import build_model, get_weights
from fedchain.learning.spec import default_task_spec
from fedchain.storage import IpfsClient, cid_to_digest


def main(
    rounds: int = 10, devices: int = 5, round_duration: int = 120, aggregation_duration: int = 60
) -> FederatedTask:
    api = os.environ.get("FEDCHAIN_IPFS_API") or DevnetState.load().ipfs_api
    admin = accounts[0]
    spec = default_task_spec()
    with IpfsClient(api) as ipfs:
        spec_cid = ipfs.add(spec.to_json())
        model_cid = ipfs.put_weights(get_weights(build_model(spec.model, seed=spec.seed)))
    config = (
        cid_to_digest(spec_cid),
        cid_to_digest(model_cid),
        rounds,
        default_min_updates(devices),
        devices,
        round_duration,
        spec.strategy_spec().id,
        1,  # aggregatorThreshold: the one aggregator below
        aggregation_duration,
    )
    task = FederatedTask.deploy(config, admin, {"from": admin})
    device_accounts = [a.address for a in accounts[2 : 2 + devices]]
    task.approveDevices(device_accounts, {"from": admin})
    task.grantRole(AGGREGATOR_ROLE, accounts[1], {"from": admin})
    task.start({"from": admin})
    print(f"network {network.show_active()}: task {task.address}, {len(device_accounts)} devices approved")
    print(f"model description {spec_cid}, initial model {model_cid}")
    return task
