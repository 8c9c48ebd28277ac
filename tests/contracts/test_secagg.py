"""Key directory (setEncryptionKey) and secure-aggregation round messages: setups, masked updates, unmask shares.

A secure round opens with a setup window (the first half of the round: setups only); its end freezes the setup set,
and masked updates are accepted only after it. The review's attacks (one device freezing the set at once, H2; a new
setup invalidating pending masked updates, L3) are performed here and shown to fail.
"""

import pytest
from brownie import chain as brownie_chain
from conftest import (
    AGGREGATION_DURATION,
    AGGREGATOR_ROLE,
    ROUND_DURATION,
    ZERO_BYTES32,
    Phase,
    commit,
    commit_reveal,
    deploy_task,
    device_info,
    digest,
    expected_inputs_hash,
    make_result,
    reverts_with,
    round_state,
    set_next_block_timestamp,
)

from fedchain.chain.task import setup_deadline_of

# The setup window is the first half of the round (rounded up): it ends roundDuration / 2 before the round deadline.
SETUP_WINDOW = ROUND_DURATION - ROUND_DURATION // 2


def key_of(account) -> bytes:
    """A stand-in X25519 public key: 32 non-zero bytes per account."""
    return digest(f"x25519-{account.address}")


def register_keys(task, accounts):
    return [task.setEncryptionKey(key_of(a), {"from": a}) for a in accounts]


def setup(task, device, round_index=1, label="setup"):
    return task.submitSetup(round_index, digest(f"{label}-{round_index}-{device.address}"), {"from": device})


def masked(task, device, round_index=1, setups=None, samples=100, label="masked"):
    """submitMaskedUpdate against the round's current setup count (or an explicit one)."""
    count = task.setupCount(round_index) if setups is None else setups
    return task.submitMaskedUpdate(
        round_index, digest(f"{label}-{round_index}-{device.address}"), samples, count, {"from": device}
    )


def unmask(task, device, round_index=1):
    return task.submitUnmaskShares(round_index, digest(f"unmask-{round_index}-{device.address}"), {"from": device})


def setup_deadline(task) -> int:
    """The open round's setup deadline, checked against its definition (round deadline - roundDuration / 2) and
    against the devices' mirror of it (fedchain.chain.task.setup_deadline_of)."""
    deadline = int(task.setupDeadline())
    assert deadline == round_state(task)["deadline"] - ROUND_DURATION // 2
    assert deadline == setup_deadline_of(round_state(task)["deadline"], int(task.roundDuration()))
    return deadline


def close_setup_window(task):
    """Let the open round's setup window pass: the next transaction's block is at the setup deadline or later."""
    remaining = setup_deadline(task) - brownie_chain.time()
    if remaining > 0:
        brownie_chain.sleep(remaining)


@pytest.fixture
def registering(federated_task, admin, aggregator, devices):
    """A secure-aggregation task (n = k = 1, three approved devices, maxUpdates 3), not started."""
    return deploy_task(federated_task, admin, [aggregator], devices[:3], start=False, secureAggregation=True)


@pytest.fixture
def secagg(registering, admin, devices):
    """The secure-aggregation task started, with keys registered by its three devices."""
    register_keys(registering, devices[:3])
    registering.start({"from": admin})
    return registering


@pytest.fixture
def sa_aggregating(secagg, devices):
    """Round 1 of `secagg` closed by three masked updates (all three set up first): the commit window is open."""
    for d in devices[:3]:
        setup(secagg, d)
    close_setup_window(secagg)
    for d in devices[:3]:
        masked(secagg, d)
    assert round_state(secagg)["phase"] == Phase.Aggregating
    return secagg


# ---------------------------------------------------------------- key directory


def test_devices_and_aggregators_publish_keys(started, devices, aggregator):
    """Any task (secure aggregation or not) has the directory; the key and the event are per account."""
    assert bytes(started.encryptionKey(devices[0])) == ZERO_BYTES32
    for account in (devices[0], aggregator):
        tx = started.setEncryptionKey(key_of(account), {"from": account})
        assert list(tx.events.keys()) == ["EncryptionKeySet"]
        event = tx.events["EncryptionKeySet"]
        assert event["account"] == account
        assert bytes(event["key"]) == key_of(account)
        assert bytes(started.encryptionKey(account)) == key_of(account)
    assert bytes(started.encryptionKey(devices[1])) == ZERO_BYTES32


def test_only_participants_publish_keys(task, admin, devices, outsider):
    """Outsiders, devices not (or no longer) approved and the admin without the aggregator role are refused."""
    for account in (outsider, devices[3], admin):
        with reverts_with("NotParticipant", account.address):
            task.setEncryptionKey(key_of(account), {"from": account})
    task.setEncryptionKey(key_of(devices[2]), {"from": devices[2]})
    task.removeDevice(devices[2], {"from": devices[2]})
    with reverts_with("NotParticipant", devices[2].address):
        task.setEncryptionKey(digest("new"), {"from": devices[2]})
    # the old key stays readable
    assert bytes(task.encryptionKey(devices[2])) == key_of(devices[2])


def test_revoked_aggregator_cannot_publish(task, admin, aggregator):
    task.revokeRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    with reverts_with("NotParticipant", aggregator.address):
        task.setEncryptionKey(key_of(aggregator), {"from": aggregator})


def test_zero_key_is_refused(task, devices, aggregator):
    for account in (devices[0], aggregator):
        with reverts_with("ZeroKey"):
            task.setEncryptionKey(ZERO_BYTES32, {"from": account})


def test_no_keys_once_the_task_is_over(cancelled, devices, aggregator):
    for account in (devices[0], aggregator):
        with reverts_with("TaskOver", Phase.Cancelled):
            cancelled.setEncryptionKey(key_of(account), {"from": account})


def test_rotation_while_registering_and_before_a_setup(registering, admin, devices):
    """Registering: keys may be replaced at will; in a round, until the device submits its setup."""
    d = devices[0]
    registering.setEncryptionKey(digest("k1"), {"from": d})
    tx = registering.setEncryptionKey(digest("k2"), {"from": d})
    assert bytes(tx.events["EncryptionKeySet"]["key"]) == digest("k2")
    registering.start({"from": admin})
    registering.setEncryptionKey(digest("k3"), {"from": d})
    assert bytes(registering.encryptionKey(d)) == digest("k3")


def test_device_key_locked_while_its_setup_round_runs(secagg, devices, aggregator):
    """After its setup a device cannot rotate until the round is final (open, commit window, reveal window)."""
    d = devices[0]
    setup(secagg, d)
    with reverts_with("KeyLocked", d.address, 1):
        secagg.setEncryptionKey(digest("rotated"), {"from": d})
    # a device without a setup this round may still rotate, and so may an aggregator
    secagg.setEncryptionKey(digest("other"), {"from": devices[1]})
    secagg.setEncryptionKey(digest("agg"), {"from": aggregator})
    for other in devices[1:3]:
        setup(secagg, other)
    close_setup_window(secagg)
    for device in devices[:3]:
        masked(secagg, device)
    assert round_state(secagg)["phase"] == Phase.Aggregating
    with reverts_with("KeyLocked", d.address, 1):
        secagg.setEncryptionKey(digest("rotated"), {"from": d})
    result = make_result(secagg, 1)
    commit(secagg, aggregator, result)
    assert round_state(secagg)["phase"] == Phase.Revealing
    with reverts_with("KeyLocked", d.address, 1):
        secagg.setEncryptionKey(digest("rotated"), {"from": d})
    secagg.setEncryptionKey(digest("agg-2"), {"from": aggregator})
    # round 1 final, round 2 open: the device may rotate again (before its round-2 setup)
    secagg.revealResult(1, result.inputs_hash, result.model, result.report, 3, 0, result.salt, {"from": aggregator})
    assert round_state(secagg)["round"] == 2
    secagg.setEncryptionKey(digest("rotated"), {"from": d})
    assert bytes(secagg.encryptionKey(d)) == digest("rotated")


def test_key_registered_as_aggregator_counts_once_approved(registering, admin, aggregator, accounts):
    """An aggregator that registered its key and is later approved as a device can submit setups with that key."""
    account = accounts[8]
    # it replaces the fixture's aggregator (n = k = 1: start() needs n / 2 < k <= n)
    registering.revokeRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    registering.grantRole(AGGREGATOR_ROLE, account, {"from": admin})
    registering.setEncryptionKey(key_of(account), {"from": account})
    registering.approveDevices([account], {"from": admin})
    registering.start({"from": admin})
    tx = setup(registering, account)
    assert tx.events["SetupSubmitted"]["index"] == 0


# ---------------------------------------------------------------- setups


def test_setups_are_indexed_and_counted(secagg, devices):
    for i, d in enumerate(devices[:3]):
        tx = setup(secagg, d)
        assert list(tx.events.keys()) == ["SetupSubmitted"]
        event = tx.events["SetupSubmitted"]
        assert event["round"] == 1
        assert event["device"] == d
        assert bytes(event["setupDigest"]) == digest(f"setup-1-{d.address}")
        assert event["index"] == i
        assert secagg.setupCount(1) == i + 1
        assert bytes(secagg.setupOf(1, d)) == digest(f"setup-1-{d.address}")
    assert secagg.setupCount(2) == 0
    assert bytes(secagg.setupOf(2, devices[0])) == ZERO_BYTES32
    # a setup is not an update
    assert round_state(secagg)["updates"] == 0
    assert device_info(secagg, devices[0]) == (True, 0, 0)


def test_setup_needs_a_key(registering, admin, devices):
    registering.start({"from": admin})
    with reverts_with("NoEncryptionKey", devices[0].address):
        setup(registering, devices[0])
    registering.setEncryptionKey(key_of(devices[0]), {"from": devices[0]})
    setup(registering, devices[0])


def test_setup_reverts(secagg, devices):
    d = devices[0]
    with reverts_with("WrongRound", 1, 2):
        setup(secagg, d, round_index=2)
    with reverts_with("EmptyDigest"):
        secagg.submitSetup(1, ZERO_BYTES32, {"from": d})
    with reverts_with("NotApprovedDevice", devices[3].address):
        setup(secagg, devices[3])
    setup(secagg, d)
    with reverts_with("SetupAlreadySubmitted", d.address, 1):
        setup(secagg, d, label="again")
    assert secagg.setupCount(1) == 1


def test_setup_outside_the_open_round(registering, admin, devices, aggregator):
    register_keys(registering, devices[:3])
    with reverts_with("WrongPhase", Phase.Open, Phase.Registering):
        setup(registering, devices[0], round_index=0)
    registering.start({"from": admin})
    for d in devices[:3]:
        setup(registering, d)
    close_setup_window(registering)
    for d in devices[:3]:
        masked(registering, d)
    with reverts_with("WrongPhase", Phase.Open, Phase.Aggregating):
        setup(registering, devices[0], label="late")


def test_setup_window_is_the_first_half_of_the_round(secagg, devices):
    """Setups are accepted up to the second before the setup deadline; masked updates from the deadline on."""
    a, b = devices[:2]
    state = round_state(secagg)
    opened = state["deadline"] - ROUND_DURATION
    end = setup_deadline(secagg)
    assert end == opened + SETUP_WINDOW
    setup(secagg, a)
    set_next_block_timestamp(end - 1)
    with reverts_with("SetupWindowOpen", 1, end):
        masked(secagg, a, setups=1)
    set_next_block_timestamp(end - 1)
    assert setup(secagg, b).events["SetupSubmitted"]["index"] == 1
    set_next_block_timestamp(end)
    with reverts_with("SetupWindowClosed", 1, end):
        setup(secagg, devices[2])
    set_next_block_timestamp(end)
    assert "UpdateSubmitted" in masked(secagg, a, setups=2).events
    # the window does not move: the round deadline stays roundDuration after the opening
    assert round_state(secagg)["deadline"] == opened + ROUND_DURATION


def test_h2_one_device_cannot_freeze_the_setup_set(secagg, devices):
    """Review finding H2: a device sets up and at once submits a masked update against setupCount = 1 to freeze
    the set to itself. Refused: masked updates wait for the setup window's end, every other device still sets up,
    and the round fills with all three masked updates against the full set."""
    attacker, b, c = devices[:3]
    setup(secagg, attacker)
    end = setup_deadline(secagg)
    with reverts_with("SetupWindowOpen", 1, end):
        masked(secagg, attacker, setups=1)
    for d in (b, c):
        setup(secagg, d)  # was: SetupFrozen
    assert secagg.setupCount(1) == 3
    close_setup_window(secagg)
    with reverts_with("SetupCountMismatch", 3, 1):
        masked(secagg, attacker, setups=1)  # a mask against its own setup alone is still refused
    txs = [masked(secagg, d, setups=3) for d in (attacker, b, c)]
    assert txs[0].events["SetupSetFrozen"]["setups"] == 3
    assert "RoundReadyForAggregation" in txs[-1].events
    assert round_state(secagg)["phase"] == Phase.Aggregating and round_state(secagg)["updates"] == 3


def test_l3_late_setup_is_refused_and_masked_updates_against_the_frozen_set_succeed(secagg, devices):
    """Review finding L3: a setup arriving while others mask made their masked updates revert (SetupCountMismatch).
    Now no setup can arrive once masked updates are accepted: the late one is refused with SetupWindowClosed and
    every masked update made against the frozen set succeeds."""
    a, b, late = devices[:3]
    setup(secagg, a)
    setup(secagg, b)
    close_setup_window(secagg)
    end = setup_deadline(secagg)
    tx = masked(secagg, a, setups=2)
    assert list(tx.events.keys()) == ["SetupSetFrozen", "UpdateSubmitted"]
    assert tx.events["SetupSetFrozen"]["round"] == 1 and tx.events["SetupSetFrozen"]["setups"] == 2
    with reverts_with("SetupWindowClosed", 1, end):
        setup(secagg, late)
    # the late device is not in the set: it cannot submit this round
    with reverts_with("NoSetup", late.address, 1):
        masked(secagg, late, setups=2)
    # later masked updates against the same frozen set succeed and do not announce it again
    tx = masked(secagg, b, setups=2)
    assert list(tx.events.keys()) == ["UpdateSubmitted"]
    assert secagg.setupCount(1) == 2 and round_state(secagg)["updates"] == 2


def test_setup_count_must_match_the_frozen_set(secagg, devices):
    a, b = devices[:2]
    setup(secagg, a)
    setup(secagg, b)
    close_setup_window(secagg)
    for stale in (0, 1, 3):
        with reverts_with("SetupCountMismatch", 2, stale):
            masked(secagg, a, setups=stale)
    masked(secagg, a, setups=2)


def test_masked_update_rules_of_submit_update(secagg, devices):
    """Phase, round, digest, samples, approval and duplicates are checked as in submitUpdate."""
    a = devices[0]
    setup(secagg, a)
    close_setup_window(secagg)
    with reverts_with("WrongRound", 1, 2):
        secagg.submitMaskedUpdate(2, digest("m"), 10, 1, {"from": a})
    with reverts_with("EmptyDigest"):
        secagg.submitMaskedUpdate(1, ZERO_BYTES32, 10, 1, {"from": a})
    with reverts_with("ZeroSamples"):
        secagg.submitMaskedUpdate(1, digest("m"), 0, 1, {"from": a})
    with reverts_with("TooManySamples", 2**32, 2**32 - 1):
        secagg.submitMaskedUpdate(1, digest("m"), 2**32, 1, {"from": a})
    with reverts_with("NotApprovedDevice", devices[3].address):
        secagg.submitMaskedUpdate(1, digest("m"), 10, 1, {"from": devices[3]})
    masked(secagg, a)
    with reverts_with("AlreadySubmitted", a.address, 1):
        masked(secagg, a, label="again")
    assert device_info(secagg, a) == (True, 1, 0)


def test_masked_updates_fill_the_round_and_aggregate(secagg, devices, aggregator):
    """Masked updates join the inputs hash exactly like plain ones; maxUpdates closes the round; it finalises."""
    for d in devices[:3]:
        setup(secagg, d)
    close_setup_window(secagg)
    submissions = []
    for i, d in enumerate(devices[:3]):
        tx = masked(secagg, d, samples=10 + i)
        event = tx.events["UpdateSubmitted"]
        assert event["device"] == d and event["numSamples"] == 10 + i
        submissions.append((d.address, digest(f"masked-1-{d.address}"), 10 + i))
    assert "RoundReadyForAggregation" in tx.events
    state = round_state(secagg)
    assert state["phase"] == Phase.Aggregating
    assert state["updates"] == 3 and state["totalSamples"] == 33
    assert state["inputsHash"] == expected_inputs_hash(secagg.address, 1, submissions)
    tx = commit_reveal(secagg, aggregator, 1)
    assert "AggregateCommitted" in tx.events
    assert round_state(secagg)["round"] == 2


def test_rounds_have_their_own_setups(secagg, devices, aggregator):
    for d in devices[:3]:
        setup(secagg, d)
    close_setup_window(secagg)
    for d in devices[:3]:
        masked(secagg, d)
    commit_reveal(secagg, aggregator, 1)
    assert round_state(secagg)["round"] == 2
    # round 2 opens with its own setup window
    with reverts_with("SetupWindowOpen", 2, setup_deadline(secagg)):
        masked(secagg, devices[0], round_index=2, setups=0)
    tx = setup(secagg, devices[1], round_index=2)
    assert tx.events["SetupSubmitted"]["index"] == 0
    assert secagg.setupCount(2) == 1 and secagg.setupCount(1) == 3
    close_setup_window(secagg)
    # a round-1 setup is no round-2 setup
    with reverts_with("NoSetup", devices[0].address, 2):
        masked(secagg, devices[0], round_index=2, setups=1)


def test_closed_by_deadline_with_masked_updates(secagg, devices, chain):
    """closeRound works as for plain tasks: minUpdates (2) masked updates go to aggregation at the deadline."""
    for d in devices[:3]:
        setup(secagg, d)
    close_setup_window(secagg)
    masked(secagg, devices[0])
    masked(secagg, devices[1])
    chain.sleep(ROUND_DURATION)
    tx = secagg.closeRound(1, {"from": devices[2]})
    assert "RoundReadyForAggregation" in tx.events
    assert round_state(secagg)["updates"] == 2


@pytest.mark.parametrize("updates", [0, 1])
def test_secure_round_short_of_min_updates_fails_at_its_deadline(secagg, devices, chain, updates):
    """Review finding H2, the tail: a secure round short of minUpdates (2) is not extended (its frozen set admits
    nobody new). It fails, and the next round opens with the unchanged model and a fresh setup window."""
    for d in devices[:3]:
        setup(secagg, d)
    close_setup_window(secagg)
    for d in devices[:updates]:
        masked(secagg, d)
    chain.sleep(ROUND_DURATION)
    tx = secagg.closeRound(1, {"from": devices[2]})
    assert list(tx.events.keys()) == ["AggregationFailed", "RoundOpened"]
    failed = tx.events["AggregationFailed"]
    assert (failed["round"], failed["commits"], failed["reveals"]) == (1, 0, 0)
    assert secagg.failedRounds() == 1 and bytes(secagg.roundModelDigest(1)) == ZERO_BYTES32
    state = round_state(secagg)
    assert state["round"] == 2 and state["phase"] == Phase.Open and state["updates"] == 0
    assert state["globalModel"] == bytes(secagg.initialModelDigest())
    assert state["deadline"] == tx.timestamp + ROUND_DURATION
    # round 2: fresh setups in a fresh window, then masked updates after it
    assert secagg.setupCount(2) == 0 and setup_deadline(secagg) == tx.timestamp + SETUP_WINDOW
    for d in devices[:3]:
        setup(secagg, d, round_index=2)
    close_setup_window(secagg)
    for d in devices[:3]:
        masked(secagg, d, round_index=2)
    assert round_state(secagg)["phase"] == Phase.Aggregating


def test_secure_round_failing_at_its_deadline_charges_the_ledger(federated_task, admin, aggregator, devices, chain):
    """Its masked updates were noised and uploaded: like any failed round it spends one increment; the budget may
    end the task there (budget 1.5, first round 1.0: after the charge no further round fits)."""
    task = deploy_task(
        federated_task,
        admin,
        [aggregator],
        devices[:3],
        start=False,
        secureAggregation=True,
        epsilonBudgetMicro=1_500_000,
        firstRoundEpsilonMicro=1_000_000,
    )
    register_keys(task, devices[:3])
    task.start({"from": admin})
    setup(task, devices[0])
    close_setup_window(task)
    masked(task, devices[0])
    chain.sleep(ROUND_DURATION)
    tx = task.closeRound(1, {"from": admin})
    assert list(tx.events.keys()) == [
        "AggregationFailed",
        "EpsilonSpent",
        "PrivacyBudgetExhausted",
        "TaskFinished",
    ]
    assert tx.events["EpsilonSpent"]["spentMicro"] == 1_000_000
    assert round_state(task)["phase"] == Phase.Finished and task.failedRounds() == 1


# ---------------------------------------------------------------- plain and secure submissions do not mix


def test_plain_submit_refused_with_secure_aggregation(secagg, devices):
    with reverts_with("SecureAggregationRequired"):
        secagg.submitUpdate(1, digest("plain"), 10, {"from": devices[0]})


def test_secure_messages_refused_without_secure_aggregation(started, devices):
    started.setEncryptionKey(key_of(devices[0]), {"from": devices[0]})
    with reverts_with("SecureAggregationDisabled"):
        setup(started, devices[0])
    with reverts_with("SecureAggregationDisabled"):
        masked(started, devices[0], setups=0)
    started.submitUpdate(1, digest("plain"), 10, {"from": devices[0]})
    with reverts_with("SecureAggregationDisabled"):
        unmask(started, devices[0])


# ---------------------------------------------------------------- unmask shares


def test_unmask_shares_in_the_commit_and_reveal_windows(sa_aggregating, devices, aggregator):
    task = sa_aggregating
    tx = unmask(task, devices[0])
    assert list(tx.events.keys()) == ["UnmaskSharesSubmitted"]
    event = tx.events["UnmaskSharesSubmitted"]
    assert event["round"] == 1
    assert event["device"] == devices[0]
    assert bytes(event["revealDigest"]) == digest(f"unmask-1-{devices[0].address}")
    assert bytes(task.unmaskSharesOf(1, devices[0])) == digest(f"unmask-1-{devices[0].address}")
    assert task.unmaskShareCount(1) == 1
    with reverts_with("UnmaskSharesAlreadySubmitted", devices[0].address, 1):
        unmask(task, devices[0])
    result = make_result(task, 1)
    commit(task, aggregator, result)
    assert round_state(task)["phase"] == Phase.Revealing
    unmask(task, devices[1])
    assert task.unmaskShareCount(1) == 2
    assert bytes(task.unmaskSharesOf(1, devices[2])) == ZERO_BYTES32
    # the round is final: round 1's shares are closed
    task.revealResult(1, result.inputs_hash, result.model, result.report, 3, 0, result.salt, {"from": aggregator})
    with reverts_with("WrongRound", 2, 1):
        unmask(task, devices[2])
    assert task.unmaskShareCount(1) == 2


def test_unmask_shares_reverts(secagg, devices):
    a, b, c = devices[:3]
    for d in (a, b, c):
        setup(secagg, d)
    close_setup_window(secagg)
    masked(secagg, a)
    # the round is still open
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Open):
        unmask(secagg, a)
    masked(secagg, b)
    with reverts_with("WrongRound", 1, 2):
        unmask(secagg, a, round_index=2)
    masked(secagg, c)
    assert round_state(secagg)["phase"] == Phase.Aggregating
    with reverts_with("EmptyDigest"):
        secagg.submitUnmaskShares(1, ZERO_BYTES32, {"from": a})
    with reverts_with("NoUpdateSubmitted", devices[3].address, 1):
        unmask(secagg, devices[3])


def test_unmask_needs_an_update_in_the_round(secagg, devices, chain):
    """A device that set up but did not submit its masked update has nothing in the round to unmask."""
    for d in devices[:3]:
        setup(secagg, d)
    close_setup_window(secagg)
    masked(secagg, devices[0])
    masked(secagg, devices[1])
    chain.sleep(ROUND_DURATION)
    secagg.closeRound(1, {"from": devices[0]})
    with reverts_with("NoUpdateSubmitted", devices[2].address, 1):
        unmask(secagg, devices[2])
    unmask(secagg, devices[1])


def test_removed_device_may_still_unmask(sa_aggregating, admin, devices):
    """Its update is in the round: its shares are still needed."""
    sa_aggregating.removeDevice(devices[1], {"from": admin})
    assert "UnmaskSharesSubmitted" in unmask(sa_aggregating, devices[1]).events


def test_unmask_closed_for_failed_finished_and_cancelled_rounds(sa_aggregating, devices, admin, chain):
    chain.sleep(AGGREGATION_DURATION)
    tx = sa_aggregating.closeAggregationWindow(1, {"from": admin})
    assert "AggregationFailed" in tx.events
    with reverts_with("WrongRound", 2, 1):
        unmask(sa_aggregating, devices[0])
    sa_aggregating.cancel({"from": admin})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Cancelled):
        unmask(sa_aggregating, devices[0], round_index=2)


def test_unmask_closed_once_the_task_finished(federated_task, admin, aggregator, devices):
    task = deploy_task(
        federated_task, admin, [aggregator], devices[:3], start=False, secureAggregation=True, numRounds=1
    )
    register_keys(task, devices[:3])
    task.start({"from": admin})
    for d in devices[:3]:
        setup(task, d)
    close_setup_window(task)
    for d in devices[:3]:
        masked(task, d)
    unmask(task, devices[0])
    assert "TaskFinished" in commit_reveal(task, aggregator, 1).events
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Finished):
        unmask(task, devices[1])
