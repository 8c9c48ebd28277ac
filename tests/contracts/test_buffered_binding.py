"""fedchain.chain.buffered against the compiled BufferedTask on brownie's Anvil, through web3.py alone: deploy,
submit from two base versions, check the chain's inputs hash against the binding's own fold, aggregate k = n = 1
with the binding's commitment, decode a refusal, and compute the staleness weights every aggregator applies."""

import hashlib
import math

import pytest
from brownie import web3 as brownie_web3
from eth_account import Account
from web3 import Web3

from fedchain.chain.artifacts import load_artifact
from fedchain.chain.buffered import (
    AggPhase,
    BufferedConfig,
    BufferedTaskClient,
    BufferEntry,
    BufferStatus,
    buffer_inputs_hash,
    deploy_buffered_task,
    entry_weights,
    result_commitment,
    result_key,
    staleness_weight,
)
from fedchain.chain.errors import ContractRevert


def d(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@pytest.fixture(scope="module")
def w3():
    return Web3(Web3.HTTPProvider(brownie_web3.provider.endpoint_uri))


@pytest.fixture(scope="module")
def funded(accounts):
    """Local accounts with keys (the binding signs itself): admin, aggregator, three devices."""
    keys = [Account.create() for _ in range(5)]
    for key in keys:
        accounts[0].transfer(key.address, "10 ether")
    return keys


def test_binding_round_trip(w3, funded):
    admin, aggregator, *devices = funded
    config = BufferedConfig(d("spec"), d("model-0"), num_versions=3, buffer_size=2, max_staleness=1)
    task, _ = deploy_buffered_task(w3, admin, config)
    assert task.config() == config
    task.grant_aggregator(aggregator.address)
    task.approve_devices([x.address for x in devices])
    task.start()
    as_device = [BufferedTaskClient.for_account(w3, task.address, x) for x in devices]
    as_aggregator = BufferedTaskClient.for_account(w3, task.address, aggregator)

    for version, buffer in ((0, 1), (1, 2)):
        # one device on the current version, one a version behind where there is one
        as_device[0].submit_update(version, d(f"u{buffer}a"), 100)
        as_device[1 + version % 2].submit_update(max(0, version - 1), d(f"u{buffer}b"), 50)
        state = task.aggregation_state()
        assert state.buffer == buffer and state.phase == AggPhase.COMMITTING
        entries = task.buffer_entries(buffer)
        assert [e.staleness for e in entries] == [0, min(version, 1)]
        info = task.buffer_info(buffer)
        assert info.status == BufferStatus.AGGREGATING
        assert info.inputs_hash == buffer_inputs_hash(task.address, buffer, entries)
        salt = d(f"salt{buffer}")
        model, report = d(f"model-{buffer}"), d(f"report-{buffer}")
        as_aggregator.commit_result(
            buffer,
            result_commitment(
                task.address, buffer, 1, aggregator.address, info.inputs_hash, model, report, len(entries), salt
            ),
        )
        as_aggregator.reveal_result(buffer, info.inputs_hash, model, report, len(entries), salt)
        assert task.current_version() == version + 1 and task.version_digest(version + 1) == model
        assert task.final_result_key(buffer) == result_key(info.inputs_hash, model, len(entries))

    with pytest.raises(ContractRevert) as refused:
        as_device[0].submit_update(0, d("too old"), 10)
    assert refused.value.error == "TooStale" and refused.value.args_ == (0, 2, 1)


def test_staleness_weights():
    assert staleness_weight(0, 1, 500_000) == 1.0
    assert staleness_weight(3, 1, 500_000) == 0.5
    assert staleness_weight(8, 1, 500_000) == pytest.approx(1 / 3, rel=1e-15)
    assert staleness_weight(1, 1, 1_000_000) == 0.5
    assert staleness_weight(7, 0, 0) == 1.0
    assert math.isclose(staleness_weight(2, 1, 250_000), 3**-0.25, rel_tol=1e-15)
    with pytest.raises(ValueError):
        staleness_weight(1, 2, 0)
    fresh = BufferEntry("0x" + "11" * 20, d("a"), 100, 3, 0)
    stale = BufferEntry("0x" + "22" * 20, d("b"), 100, 0, 3)
    assert entry_weights([fresh, stale], 1, 500_000) == pytest.approx([2 / 3, 1 / 3], rel=1e-15)


def test_config_tuple_follows_the_abi_struct_order():
    """BufferedConfig.as_tuple feeds the constructor positionally: its order must be the struct's."""
    abi = load_artifact("BufferedTask").abi
    constructor = next(e for e in abi if e.get("type") == "constructor")
    names = [c["name"] for c in constructor["inputs"][0]["components"]]
    snake = ["".join("_" + ch.lower() if ch.isupper() else ch for ch in name) for name in names]
    assert snake == list(BufferedConfig.__dataclass_fields__)
