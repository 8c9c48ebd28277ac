"""Access control: who may call what, role management, and the revert-matching helper itself."""

import brownie
import pytest
from conftest import (
    AGGREGATOR_ROLE,
    DEFAULT_ADMIN_ROLE,
    Phase,
    aggregation_state,
    commit,
    digest,
    encode_error,
    make_result,
    reveal,
    reverts_with,
    round_state,
)

# every restricted entry point, with arguments that would otherwise succeed in the `aggregating` fixture's state
RESTRICTED = {
    "approveDevices": (DEFAULT_ADMIN_ROLE, lambda t, a: t.approveDevices([a["devices"][3]], {"from": a["sender"]})),
    "removeDevice": (DEFAULT_ADMIN_ROLE, lambda t, a: t.removeDevice(a["devices"][0], {"from": a["sender"]})),
    "cancel": (DEFAULT_ADMIN_ROLE, lambda t, a: t.cancel({"from": a["sender"]})),
    "grantRole": (DEFAULT_ADMIN_ROLE, lambda t, a: t.grantRole(AGGREGATOR_ROLE, a["sender"], {"from": a["sender"]})),
    "revokeRole": (DEFAULT_ADMIN_ROLE, lambda t, a: t.revokeRole(AGGREGATOR_ROLE, a["agg"], {"from": a["sender"]})),
    "commitResult": (AGGREGATOR_ROLE, lambda t, a: t.commitResult(1, digest("c"), {"from": a["sender"]})),
    "revealResult": (
        AGGREGATOR_ROLE,
        lambda t, a: t.revealResult(
            1, round_state(t)["inputsHash"], digest("m"), digest("r"), 3, 0, digest("s"), {"from": a["sender"]}
        ),
    ),
}


@pytest.mark.parametrize("function", sorted(RESTRICTED))
@pytest.mark.parametrize("who", ["device", "outsider", "other"])
def test_restricted_functions_reject_others(aggregating, admin, aggregator, devices, outsider, function, who):
    role, call = RESTRICTED[function]
    # "other": the holder of the other role (the aggregator for admin functions, the admin for the aggregator ones)
    sender = {"device": devices[1], "outsider": outsider, "other": admin if role == AGGREGATOR_ROLE else aggregator}[
        who
    ]
    before = round_state(aggregating)
    with reverts_with("AccessControlUnauthorizedAccount", sender.address, role):
        call(aggregating, {"sender": sender, "devices": devices, "agg": aggregator})
    assert round_state(aggregating) == before


def test_start_rejects_non_admin(task, aggregator):
    with reverts_with("AccessControlUnauthorizedAccount", aggregator.address, DEFAULT_ADMIN_ROLE):
        task.start({"from": aggregator})


def test_open_functions(started, outsider, devices, chain):
    """requestJoin, removeDevice on oneself, closeRound, closeAggregationWindow and the views need no role."""
    assert "DeviceJoinRequested" in started.requestJoin({"from": outsider}).events
    assert "DeviceRemoved" in started.removeDevice(devices[2], {"from": devices[2]}).events
    chain.sleep(started.roundDuration())
    assert "RoundExtended" in started.closeRound(1, {"from": outsider}).events
    started.currentRound({"from": outsider})
    started.deviceInfo(outsider, {"from": outsider})
    started.initialInputsHash(1, {"from": outsider})
    started.aggregationState({"from": outsider})
    started.aggregatorInfo(outsider, {"from": outsider})
    started.resultCommitment(1, outsider, b"\x01" * 20, digest("m"), digest("r"), 1, 0, digest("s"), {"from": outsider})


def test_anyone_can_close_an_aggregation_window(aggregating, outsider, chain):
    chain.sleep(aggregating.aggregationDuration())
    tx = aggregating.closeAggregationWindow(1, {"from": outsider})
    assert "AggregationFailed" in tx.events  # nobody committed


def test_granted_aggregator_can_commit_and_revoked_cannot(aggregating, admin, aggregator, accounts):
    newcomer = accounts[8]
    # revoke first: while running, n = 2 would break n / 2 < k = 1
    aggregating.revokeRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    tx = aggregating.grantRole(AGGREGATOR_ROLE, newcomer, {"from": admin})
    assert tx.events["RoleGranted"]["account"] == newcomer
    assert not aggregating.hasRole(AGGREGATOR_ROLE, aggregator)
    assert aggregating.aggregatorCount() == 1
    result = make_result(aggregating, 1)
    with reverts_with("AccessControlUnauthorizedAccount", aggregator.address, AGGREGATOR_ROLE):
        commit(aggregating, aggregator, result)
    assert "RevealOpened" in commit(aggregating, newcomer, result).events
    assert "AggregateCommitted" in reveal(aggregating, newcomer, result).events
    assert round_state(aggregating)["round"] == 2


def test_revoked_after_commit_cannot_reveal(aggregating, admin, aggregator, accounts):
    """A commitment does not outlive the role: the revoked aggregator's reveal is refused."""
    result = make_result(aggregating, 1)
    commit(aggregating, aggregator, result)
    assert round_state(aggregating)["phase"] == Phase.Revealing
    aggregating.revokeRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    aggregating.grantRole(AGGREGATOR_ROLE, accounts[8], {"from": admin})
    # the round keeps the n it opened with
    assert aggregation_state(aggregating) == (1, 0, 1, 1)
    with reverts_with("AccessControlUnauthorizedAccount", aggregator.address, AGGREGATOR_ROLE):
        reveal(aggregating, aggregator, result)


def test_aggregator_renounces(aggregating, aggregator):
    aggregating.renounceRole(AGGREGATOR_ROLE, aggregator, {"from": aggregator})
    assert aggregating.aggregatorCount() == 0
    with reverts_with("AccessControlUnauthorizedAccount", aggregator.address, AGGREGATOR_ROLE):
        commit(aggregating, aggregator, make_result(aggregating, 1))


def test_renounce_for_someone_else_reverts(task, aggregator, outsider):
    with reverts_with("AccessControlBadConfirmation"):
        task.renounceRole(AGGREGATOR_ROLE, aggregator, {"from": outsider})
    assert task.hasRole(AGGREGATOR_ROLE, aggregator)


def test_admin_handover(task, admin, accounts, devices):
    successor = accounts[8]
    task.grantRole(DEFAULT_ADMIN_ROLE, successor, {"from": admin})
    task.renounceRole(DEFAULT_ADMIN_ROLE, admin, {"from": admin})
    with reverts_with("AccessControlUnauthorizedAccount", admin.address, DEFAULT_ADMIN_ROLE):
        task.approveDevices([devices[3]], {"from": admin})
    task.approveDevices([devices[3]], {"from": successor})
    task.start({"from": successor})
    assert round_state(task)["phase"] == Phase.Open


def test_admin_is_not_implicitly_a_device_or_aggregator(started, admin):
    with reverts_with("NotApprovedDevice", admin.address):
        started.submitUpdate(1, digest("x"), 1, {"from": admin})
    assert not started.hasRole(AGGREGATOR_ROLE, admin)


# ---------------------------------------------------------------- the revert helper


def test_encode_error_layout():
    data = encode_error("WrongRound", 1, 2)
    assert data[:10] == "0x" + brownie.web3.keccak(text="WrongRound(uint32,uint32)").hex().removeprefix("0x")[:8]
    assert len(data) == 2 + 2 * (4 + 32 + 32)
    assert encode_error("ZeroSamples") == "0x" + brownie.web3.keccak(text="ZeroSamples()").hex().removeprefix("0x")[:8]


def test_reverts_with_rejects_other_arguments_and_errors(started, devices):
    """The helper fails on a wrong argument, a wrong error, or no revert at all."""
    with pytest.raises(AssertionError), reverts_with("WrongRound", 1, 3):
        started.submitUpdate(2, digest("x"), 1, {"from": devices[0]})
    with pytest.raises(AssertionError), reverts_with("WrongPhase", 1, 2):
        started.submitUpdate(2, digest("x"), 1, {"from": devices[0]})
    with pytest.raises(AssertionError), reverts_with("NotApprovedDevice", devices[1].address):
        started.submitUpdate(1, digest("x"), 1, {"from": devices[3]})
    with pytest.raises(AssertionError), reverts_with("ZeroSamples"):
        started.submitUpdate(1, digest("x"), 1, {"from": devices[0]})
    with reverts_with("WrongRound", 1, 2):
        started.submitUpdate(2, digest("x"), 1, {"from": devices[0]})
