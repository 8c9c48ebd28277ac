"""The chain bindings against a real Ganache: reverts come back as named custom errors, nothing half-done."""

from __future__ import annotations

import hashlib

import pytest

from fedchain.app.devnet import Devnet
from fedchain.chain import ContractRevert, Phase, TaskClient, TaskConfig, connect, deploy_task, devnet_account
from fedchain.chain.inputs import inputs_hash
from fedchain.chain.task import result_commitment

pytestmark = pytest.mark.e2e


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@pytest.fixture
def task(ganache: Devnet) -> TaskClient:
    assert ganache.state is not None
    w3 = connect(ganache.state.rpc_url)
    client, _ = deploy_task(w3, devnet_account(0), TaskConfig(digest("spec"), digest("m0"), 2, 1, 2, 60))
    client.approve_devices([devnet_account(2).address, devnet_account(3).address])
    client.grant_aggregator(devnet_account(1).address)
    client.start()
    return client


def as_account(task: TaskClient, index: int) -> TaskClient:
    return TaskClient.for_account(task.w3, task.address, devnet_account(index))


def test_unregistered_sender_is_refused_by_name(task: TaskClient) -> None:
    with pytest.raises(ContractRevert) as err:
        as_account(task, 9).submit_update(1, digest("u"), 10)
    assert err.value.error == "NotApprovedDevice"
    assert task.current_round().updates == 0


def test_replayed_submission_is_refused(task: TaskClient) -> None:
    device = as_account(task, 2)
    device.submit_update(1, digest("u"), 10)
    with pytest.raises(ContractRevert) as err:
        device.submit_update(1, digest("u"), 10)
    assert err.value.error == "AlreadySubmitted"
    assert task.current_round().updates == 1


def test_stale_round_and_forged_inputs_are_refused(task: TaskClient) -> None:
    with pytest.raises(ContractRevert) as err:
        as_account(task, 2).submit_update(2, digest("u"), 10)
    assert err.value.error == "WrongRound"
    subs = []
    for i in (2, 3):
        as_account(task, i).submit_update(1, digest(f"u{i}"), 10 + i)
        subs.append((devnet_account(i).address, digest(f"u{i}"), 10 + i))
    state = task.current_round()
    assert state.phase == Phase.AGGREGATING
    assert state.inputs_hash == inputs_hash(task.address, 1, subs)
    aggregator = as_account(task, 1)
    me = devnet_account(1).address
    salt = b"\x07" * 32
    forged = result_commitment(task.address, 1, me, b"\x01" * 20, digest("m1"), digest("r1"), 2, salt)
    aggregator.commit_result(1, forged)
    assert task.current_round().phase == Phase.REVEALING  # the only aggregator committed: reveals open at once
    with pytest.raises(ContractRevert) as err:
        aggregator.reveal_result(1, b"\x01" * 20, digest("m1"), digest("r1"), 2, salt)
    assert err.value.error == "InputsMismatch"
    with pytest.raises(ContractRevert) as err:  # a reveal that is not what was committed
        aggregator.reveal_result(1, state.inputs_hash, digest("m1"), digest("r1"), 2, salt)
    assert err.value.error == "CommitmentMismatch"
    assert task.current_round().round == 1


def test_commit_then_reveal_finalises_and_refuses_replays(task: TaskClient) -> None:
    for i in (2, 3):
        as_account(task, i).submit_update(1, digest(f"u{i}"), 10 + i)
    state = task.current_round()
    aggregator = as_account(task, 1)
    me = devnet_account(1).address
    salt = b"\x09" * 32
    commitment = result_commitment(task.address, 1, me, state.inputs_hash, digest("m1"), digest("r1"), 2, salt)
    assert (
        commitment
        == task.contract.functions.resultCommitment(
            1, me, state.inputs_hash, digest("m1"), digest("r1"), 2, 0, salt
        ).call()
    )
    aggregator.commit_result(1, commitment)
    with pytest.raises(ContractRevert) as err:
        aggregator.commit_result(1, commitment)
    assert err.value.error == "WrongPhase"
    aggregator.reveal_result(1, state.inputs_hash, digest("m1"), digest("r1"), 2, salt)
    assert task.round_model_digest(1) == digest("m1")
    assert task.current_round().round == 2
    with pytest.raises(ContractRevert) as err:
        aggregator.reveal_result(1, state.inputs_hash, digest("m1"), digest("r1"), 2, salt)
    assert err.value.error == "AlreadyRevealed"
    assert task.aggregator_info(me).faults == 0


def test_batched_device_infos_equal_one_by_one(task: TaskClient) -> None:
    as_account(task, 2).submit_update(1, digest("u"), 10)
    addresses = [devnet_account(i).address for i in (2, 3, 9)]  # submitted, approved, unknown
    infos = task.device_infos(addresses)
    assert infos == [task.device_info(a) for a in addresses]
    assert [i.approved for i in infos] == [True, True, False] and infos[0].last_round == 1
    assert task.device_infos([]) == []
