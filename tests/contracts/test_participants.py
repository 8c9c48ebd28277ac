"""Participants: approval, join requests, removal/leaving, device records, joining and leaving mid-task."""

import pytest
from conftest import (
    DEFAULT_ADMIN_ROLE,
    Phase,
    commit_reveal,
    device_info,
    digest,
    reverts_with,
    round_state,
    submit_round,
)

# ---------------------------------------------------------------- approveDevices


def test_fixture_approved_three(task, devices):
    assert task.deviceCount() == 3
    for d in devices[:3]:
        assert device_info(task, d) == (True, 0, 0)
    assert device_info(task, devices[3]) == (False, 0, 0)


def test_approve_emits_per_new_device(task, admin, accounts):
    new = [accounts[6], accounts[7]]
    tx = task.approveDevices(new, {"from": admin})
    events = tx.events["DeviceApproved"]
    assert len(events) == 2
    assert [e["device"] for e in events] == new
    assert all(e["round"] == 0 for e in events)
    assert task.deviceCount() == 5


def test_approve_skips_already_approved_and_duplicates(task, admin, devices, accounts):
    batch = [devices[0], accounts[6], devices[1], accounts[6], accounts[7], devices[0]]
    tx = task.approveDevices(batch, {"from": admin})
    assert [e["device"] for e in tx.events["DeviceApproved"]] == [accounts[6], accounts[7]]
    assert task.deviceCount() == 5


def test_approve_only_known_devices_is_a_noop(task, admin, devices):
    tx = task.approveDevices(devices[:3], {"from": admin})
    assert "DeviceApproved" not in tx.events
    assert task.deviceCount() == 3


def test_approve_empty_list(task, admin):
    tx = task.approveDevices([], {"from": admin})
    assert "DeviceApproved" not in tx.events
    assert task.deviceCount() == 3


@pytest.mark.parametrize("caller", ["aggregator", "device", "outsider"])
def test_approve_only_admin(task, aggregator, devices, outsider, caller):
    sender = {"aggregator": aggregator, "device": devices[0], "outsider": outsider}[caller]
    with reverts_with("AccessControlUnauthorizedAccount", sender.address, DEFAULT_ADMIN_ROLE):
        task.approveDevices([devices[3]], {"from": sender})
    assert not device_info(task, devices[3])[0]


def test_approve_records_current_round(started, admin, devices):
    tx = started.approveDevices([devices[3]], {"from": admin})
    assert tx.events["DeviceApproved"]["round"] == 1
    assert device_info(started, devices[3]) == (True, 0, 1)


def test_approve_allowed_while_aggregating(aggregating, admin, devices):
    aggregating.approveDevices([devices[3]], {"from": admin})
    assert device_info(aggregating, devices[3]) == (True, 0, 1)


@pytest.mark.parametrize("end", ["finished", "cancelled"])
def test_approve_after_task_over_reverts(request, admin, devices, end):
    contract = request.getfixturevalue(end)
    phase = Phase.Finished if end == "finished" else Phase.Cancelled
    with reverts_with("TaskOver", phase):
        contract.approveDevices([devices[3]], {"from": admin})


def test_approve_after_cancel_before_start_reverts(task, admin, devices):
    task.cancel({"from": admin})
    with reverts_with("TaskOver", Phase.Cancelled):
        task.approveDevices([devices[3]], {"from": admin})


# ---------------------------------------------------------------- requestJoin


def test_request_join_emits(task, outsider):
    tx = task.requestJoin({"from": outsider})
    assert tx.events["DeviceJoinRequested"]["device"] == outsider
    # a request changes nothing on its own
    assert device_info(task, outsider) == (False, 0, 0)
    assert task.deviceCount() == 3


def test_request_join_can_be_repeated(task, outsider):
    task.requestJoin({"from": outsider})
    tx = task.requestJoin({"from": outsider})
    assert "DeviceJoinRequested" in tx.events


def test_request_join_while_open(started, outsider):
    assert "DeviceJoinRequested" in started.requestJoin({"from": outsider}).events


def test_request_join_approved_reverts(task, devices):
    with reverts_with("DeviceAlreadyApproved", devices[0].address):
        task.requestJoin({"from": devices[0]})


@pytest.mark.parametrize("end", ["finished", "cancelled"])
def test_request_join_after_task_over_reverts(request, outsider, end):
    contract = request.getfixturevalue(end)
    phase = Phase.Finished if end == "finished" else Phase.Cancelled
    with reverts_with("TaskOver", phase):
        contract.requestJoin({"from": outsider})


def test_request_join_then_approve(task, admin, outsider):
    task.requestJoin({"from": outsider})
    task.approveDevices([outsider], {"from": admin})
    assert device_info(task, outsider)[0]
    with reverts_with("DeviceAlreadyApproved", outsider.address):
        task.requestJoin({"from": outsider})


# ---------------------------------------------------------------- removeDevice


def test_admin_removes_device(task, admin, devices):
    tx = task.removeDevice(devices[0], {"from": admin})
    event = tx.events["DeviceRemoved"]
    assert event["device"] == devices[0]
    assert event["by"] == admin
    assert task.deviceCount() == 2
    assert device_info(task, devices[0]) == (False, 0, 0)


def test_device_leaves(task, devices):
    tx = task.removeDevice(devices[1], {"from": devices[1]})
    event = tx.events["DeviceRemoved"]
    assert event["device"] == devices[1]
    assert event["by"] == devices[1]
    assert task.deviceCount() == 2
    assert not device_info(task, devices[1])[0]


@pytest.mark.parametrize("caller", ["outsider", "other_device", "aggregator"])
def test_remove_by_others_reverts(task, devices, outsider, aggregator, caller):
    sender = {"outsider": outsider, "other_device": devices[1], "aggregator": aggregator}[caller]
    with reverts_with("AccessControlUnauthorizedAccount", sender.address, DEFAULT_ADMIN_ROLE):
        task.removeDevice(devices[0], {"from": sender})
    assert device_info(task, devices[0])[0]


def test_remove_non_device_reverts(task, admin, devices):
    with reverts_with("NotApprovedDevice", devices[3].address):
        task.removeDevice(devices[3], {"from": admin})


def test_unapproved_account_leaving_reverts(task, outsider):
    with reverts_with("NotApprovedDevice", outsider.address):
        task.removeDevice(outsider, {"from": outsider})


def test_remove_twice_reverts(task, admin, devices):
    task.removeDevice(devices[0], {"from": admin})
    with reverts_with("NotApprovedDevice", devices[0].address):
        task.removeDevice(devices[0], {"from": admin})
    assert task.deviceCount() == 2


def test_removed_device_can_be_approved_again(started, admin, devices):
    started.removeDevice(devices[0], {"from": devices[0]})
    tx = started.approveDevices([devices[0]], {"from": admin})
    assert tx.events["DeviceApproved"]["round"] == 1
    assert started.deviceCount() == 3
    assert device_info(started, devices[0]) == (True, 0, 1)


def test_device_can_leave_after_task_over(finished, devices):
    """removeDevice has no phase check: leaving a finished task is allowed (and harmless)."""
    tx = finished.removeDevice(devices[0], {"from": devices[0]})
    assert "DeviceRemoved" in tx.events
    assert finished.deviceCount() == 2


# ---------------------------------------------------------------- deviceInfo


def test_device_info_tracks_last_round(started, devices, aggregator):
    submit_round(started, devices[:3], 1)
    assert device_info(started, devices[0]) == (True, 1, 0)
    commit_reveal(started, aggregator, 1)
    started.submitUpdate(2, digest("x"), 5, {"from": devices[1]})
    assert device_info(started, devices[0]) == (True, 1, 0)
    assert device_info(started, devices[1]) == (True, 2, 0)


def test_device_info_keeps_last_round_after_removal(started, admin, devices):
    started.submitUpdate(1, digest("x"), 5, {"from": devices[0]})
    started.removeDevice(devices[0], {"from": admin})
    assert device_info(started, devices[0]) == (False, 1, 0)


# ---------------------------------------------------------------- joining and leaving while training goes on


def test_join_mid_task_submits_in_current_round(started, admin, devices, aggregator):
    submit_round(started, devices[:3], 1)
    commit_reveal(started, aggregator, 1)
    # round 2 is open: a new device joins and contributes to it at once
    started.approveDevices([devices[3]], {"from": admin})
    assert device_info(started, devices[3]) == (True, 0, 2)
    tx = started.submitUpdate(2, digest("late"), 42, {"from": devices[3]})
    assert tx.events["UpdateSubmitted"]["device"] == devices[3]
    assert round_state(started)["updates"] == 1


def test_join_during_round_one_counts_toward_max(started, admin, devices):
    started.approveDevices([devices[3]], {"from": admin})
    submit_round(started, [devices[3], devices[0]], 1)
    tx = started.submitUpdate(1, digest("third"), 1, {"from": devices[1]})
    assert "RoundReadyForAggregation" in tx.events
    assert round_state(started)["updates"] == 3


def test_join_while_aggregating_submits_next_round(aggregating, admin, devices, aggregator):
    aggregating.approveDevices([devices[3]], {"from": admin})
    with reverts_with("WrongPhase", Phase.Open, Phase.Aggregating):
        aggregating.submitUpdate(1, digest("late"), 1, {"from": devices[3]})
    commit_reveal(aggregating, aggregator, 1)
    aggregating.submitUpdate(2, digest("next"), 1, {"from": devices[3]})
    assert device_info(aggregating, devices[3]) == (True, 2, 1)


@pytest.mark.parametrize("by", ["admin", "self"])
def test_removed_device_cannot_submit(started, admin, devices, by):
    sender = admin if by == "admin" else devices[0]
    started.removeDevice(devices[0], {"from": sender})
    with reverts_with("NotApprovedDevice", devices[0].address):
        started.submitUpdate(1, digest("x"), 1, {"from": devices[0]})


def test_leave_after_submitting_keeps_the_update(started, devices):
    tx = started.submitUpdate(1, digest("x"), 7, {"from": devices[0]})
    started.removeDevice(devices[0], {"from": devices[0]})
    state = round_state(started)
    assert state["updates"] == 1
    assert state["totalSamples"] == 7
    assert state["inputsHash"] != bytes(started.initialInputsHash(1))
    assert tx.events["UpdateSubmitted"]["device"] == devices[0]


def test_leave_and_rejoin_cannot_submit_twice_in_a_round(started, admin, devices):
    started.submitUpdate(1, digest("x"), 7, {"from": devices[0]})
    started.removeDevice(devices[0], {"from": devices[0]})
    started.approveDevices([devices[0]], {"from": admin})
    with reverts_with("AlreadySubmitted", devices[0].address, 1):
        started.submitUpdate(1, digest("y"), 7, {"from": devices[0]})


def test_remaining_devices_finish_round_after_one_leaves(started, devices, aggregator, chain):
    started.removeDevice(devices[2], {"from": devices[2]})
    submit_round(started, devices[:2], 1)
    # only two devices left and maxUpdates is 3: the deadline then closes the round (minUpdates is 2)
    assert round_state(started)["phase"] == Phase.Open
    chain.sleep(started.roundDuration())
    started.closeRound(1, {"from": devices[0]})
    assert round_state(started)["phase"] == Phase.Aggregating
    commit_reveal(started, aggregator, 1)
    assert round_state(started)["round"] == 2


def test_approving_the_zero_address_is_refused(task, admin):
    with reverts_with("ZeroAddress"):
        task.approveDevices(["0x0000000000000000000000000000000000000000"], {"from": admin})
