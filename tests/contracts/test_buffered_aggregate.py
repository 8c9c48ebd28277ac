"""BufferedTask aggregation: k-of-n commit-reveal on a buffer, disagreement and faults, a buffer whose aggregation
deadline passes (re-aggregated, then discarded), suspensions and role changes while running (issue 15 part 3)."""

import pytest
from brownie import chain
from buffered_helpers import (
    AGGREGATION_DURATION,
    AGGREGATOR_ROLE,
    BUFFER_SIZE,
    AggPhase,
    BufferStatus,
    aggregate,
    aggregation,
    buffer_info,
    buffered_reverts,
    commit,
    deploy_buffered,
    digest,
    faults,
    filling,
    make_result,
    reveal,
    submit,
)
from stateful_helpers import reverts_named


@pytest.fixture(scope="module")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def aggs(accounts):
    """n = 3 aggregators; the tasks here use k = 2."""
    return [accounts[1], accounts[6], accounts[7]]


@pytest.fixture(scope="module")
def devs(accounts):
    return [accounts[2], accounts[3], accounts[4], accounts[5], accounts[8]]


@pytest.fixture(scope="module")
def outsider(accounts):
    return accounts[9]


@pytest.fixture(scope="module")
def task(admin, aggs, devs):
    return deploy_buffered(admin, aggs, devs, aggregatorThreshold=2, maxAggregatorFaults=3)


def fill(task, devices, base, label):
    for i, device in enumerate(devices):
        submit(task, device, base, f"{label}-{i}")


@pytest.fixture
def pending(task, devs):
    """Buffer 1 full and in its first commit window."""
    fill(task, devs[:BUFFER_SIZE], 0, "b1")
    assert aggregation(task)["buffer"] == 1 and aggregation(task)["phase"] == AggPhase.Committing
    return task


# ---------------------------------------------------------------- agreement


@pytest.mark.parametrize("dissent", [{"model": digest("poisoned")}, {"accepted": BUFFER_SIZE - 1}])
def test_two_of_three_agree_and_the_dissenter_is_faulted(pending, aggs, dissent):
    """The dissenter reveals first (its result differs in the model, or only in the accepted count): the result of
    the other two is final and the earlier dissenting reveal is a fault."""
    a, b, c = aggs
    good = make_result(pending, 1)
    bad = good.but(salt=digest("other salt"), **dissent)
    commit(pending, a, good)
    commit(pending, c, bad)
    tx = commit(pending, b, good)
    assert "RevealOpened" in tx.events  # all n committed
    reveal(pending, c, bad)  # the dissenter reveals first: one vote, no result
    assert pending.currentVersion() == 0
    reveal(pending, a, good)
    tx = reveal(pending, b, good)  # second vote for good: k = 2
    assert tx.events["VersionPublished"][0]["version"] == 1
    assert bytes(pending.versionDigest(1)) == good.model
    assert bytes(pending.finalResultKey(1)) == good.key()
    fault = tx.events["AggregatorFault"][0]
    assert fault["aggregator"] == c.address and bytes(fault["revealedModelDigest"]) == bad.model
    assert [faults(pending, x) for x in aggs] == [0, 0, 1]


def test_late_dissenting_reveal_is_a_fault(pending, aggs):
    a, b, c = aggs
    good = make_result(pending, 1)
    bad = good.but(accepted=2)
    for account, result in ((a, good), (b, good), (c, bad)):
        commit(pending, account, result)
    reveal(pending, a, good)
    reveal(pending, b, good)  # published
    assert pending.currentVersion() == 1
    tx = reveal(pending, c, bad)  # late: still accepted, and faulted
    assert tx.events["AggregatorFault"][0]["aggregator"] == c.address
    assert faults(pending, c) == 1
    # a late agreeing reveal is no fault (the first reveal of a published buffer with the final key)


def test_no_agreement_without_k(pending, aggs):
    """Three different results: no key reaches k = 2; the reveal window closes, the attempt fails and a second
    attempt re-aggregates the same buffer."""
    results = [make_result(pending, 1, model=digest(f"m{i}")) for i in range(3)]
    for account, result in zip(aggs, results, strict=True):
        commit(pending, account, result)
    for account, result in zip(aggs, results, strict=True):
        assert "VersionPublished" not in reveal(pending, account, result).events
    chain.sleep(AGGREGATION_DURATION + 1)
    tx = pending.closeAggregationWindow(1, {"from": aggs[0]})
    assert tx.events["AggregationFailed"][0]["reveals"] == 3
    assert tx.events["AggregationOpened"][0]["attempt"] == 2
    assert aggregation(pending)["attempt"] == 2 and pending.currentVersion() == 0
    # a reveal for the failed attempt's commitment is refused
    with buffered_reverts("AlreadyRevealed", aggs[0].address, 1):
        reveal(pending, aggs[0], results[0])
    result, _ = aggregate(pending, aggs, 1)
    assert pending.currentVersion() == 1 and bytes(pending.versionDigest(1)) == result.model


def test_reveal_checks(pending, aggs, outsider):
    a, b, c = aggs
    good = make_result(pending, 1)
    wrong_inputs = good.but(inputs_hash=b"\x11" * 20)
    too_many = good.but(accepted=BUFFER_SIZE + 1)
    commit(pending, a, wrong_inputs)
    commit(pending, b, too_many)
    with buffered_reverts("WrongPhase", AggPhase.Revealing, AggPhase.Committing):
        reveal(pending, a, wrong_inputs)
    commit(pending, c, good)
    with buffered_reverts("InputsMismatch", good.inputs_hash, wrong_inputs.inputs_hash):
        reveal(pending, a, wrong_inputs)
    with buffered_reverts("TooManyAccepted", BUFFER_SIZE + 1, BUFFER_SIZE):
        reveal(pending, b, too_many)
    with buffered_reverts("CommitmentMismatch", c.address, 1):
        reveal(pending, c, good.but(salt=digest("guess")))
    with buffered_reverts("NoCommitment", c.address, 2):
        reveal(pending, c, good.but(buffer=2))
    with buffered_reverts("EmptyDigest"):
        reveal(pending, c, good.but(model=b"\x00" * 32))
    with buffered_reverts("AccessControlUnauthorizedAccount", outsider.address, AGGREGATOR_ROLE):
        reveal(pending, outsider, good)
    reveal(pending, c, good)
    with buffered_reverts("AlreadyRevealed", c.address, 1):
        reveal(pending, c, good)
    # the commit window is past: a reveal after the reveal deadline is refused
    chain.sleep(AGGREGATION_DURATION + 1)
    with buffered_reverts("RevealWindowClosed", 1):
        reveal(pending, a, wrong_inputs)


def test_commit_checks(task, pending, aggs, outsider, devs):
    a = aggs[0]
    result = make_result(pending, 1)
    with buffered_reverts("WrongBuffer", 1, 2):
        pending.commitResult(2, digest("c"), {"from": a})
    with buffered_reverts("EmptyDigest"):
        pending.commitResult(1, b"\x00" * 32, {"from": a})
    with buffered_reverts("AccessControlUnauthorizedAccount", outsider.address, AGGREGATOR_ROLE):
        pending.commitResult(1, digest("c"), {"from": outsider})
    commit(pending, a, result)
    with buffered_reverts("AlreadyCommitted", a.address, 1, 1):
        commit(pending, a, result)


def test_commit_without_pending_buffer(task, aggs):
    with buffered_reverts("WrongPhase", AggPhase.Committing, AggPhase.Idle):
        task.commitResult(1, digest("c"), {"from": aggs[0]})
    with buffered_reverts("WrongPhase", AggPhase.Committing, AggPhase.Idle):
        task.closeAggregationWindow(1, {"from": aggs[0]})


# ---------------------------------------------------------------- deadlines


def test_deadline_passes_buffer_reaggregated_then_discarded(pending, aggs, devs):
    """Nobody commits: after the commit window the attempt fails and a second one opens (maxAggregationAttempts =
    2); after the second the buffer is discarded, the full buffer behind it goes to aggregation, the version is
    unchanged, and the discarded buffer's devices submit again."""
    d0, d1, _, d3, d4 = devs
    fill(pending, [d3, d4, d0], 0, "b2")  # buffer 2 full behind the pending one
    with reverts_named("DeadlineNotReached"):
        pending.closeAggregationWindow(1, {"from": d1})
    chain.sleep(AGGREGATION_DURATION + 1)
    tx = pending.closeAggregationWindow(1, {"from": d1})  # anyone may call it
    assert tx.events["AggregationFailed"][0]["attempt"] == 1
    assert tx.events["AggregationOpened"][0]["attempt"] == 2
    # one commitment (k = 2) is not enough at the second deadline either
    commit(pending, aggs[0], make_result(pending, 1))
    chain.sleep(AGGREGATION_DURATION + 1)
    tx = pending.closeAggregationWindow(1, {"from": d1})
    assert tx.events["BufferDiscarded"][0]["attempts"] == 2
    assert tx.events["AggregationOpened"][0]["buffer"] == 2
    assert buffer_info(pending, 1)["status"] == BufferStatus.Discarded
    assert pending.discardedBuffers() == 1 and pending.currentVersion() == 0
    assert filling(pending)["buffer"] == 3
    submit(pending, d1, 0, "again")  # d1's update was in the discarded buffer
    aggregate(pending, aggs, 2)
    assert pending.currentVersion() == 1


def test_withheld_reveals_are_faults(pending, aggs):
    a, b, c = aggs
    result = make_result(pending, 1)
    for account in aggs:
        commit(pending, account, result)
    reveal(pending, a, result)
    chain.sleep(AGGREGATION_DURATION + 1)
    tx = pending.closeAggregationWindow(1, {"from": a})
    assert [e["aggregator"] for e in tx.events["AggregatorFault"]] == [b.address, c.address]
    assert [faults(pending, x) for x in aggs] == [0, 1, 1]


def test_a_failed_attempts_withheld_reveal_is_faulted_once(pending, aggs, devs):
    """c commits in attempt 1 and withholds its reveal (a fault when the window closes); attempt 2 publishes the
    buffer without c. Its old commitment is neither faulted again at its next commitment nor revealable late."""
    a, b, c = aggs
    first = make_result(pending, 1)
    for account in aggs:
        commit(pending, account, first)
    reveal(pending, a, first)
    chain.sleep(AGGREGATION_DURATION + 1)
    tx = pending.closeAggregationWindow(1, {"from": a})  # only one reveal: attempt 1 fails
    assert [e["aggregator"] for e in tx.events["AggregatorFault"]] == [b.address, c.address]
    second = make_result(pending, 1)
    assert second.attempt == 2
    commit(pending, a, second)
    commit(pending, b, second)
    chain.sleep(AGGREGATION_DURATION + 1)
    pending.closeAggregationWindow(1, {"from": a})  # k commitments: reveal window
    reveal(pending, a, second)
    assert "VersionPublished" in reveal(pending, b, second).events
    with buffered_reverts("RevealWindowClosed", 1):
        reveal(pending, c, first)
    fill(pending, devs[:BUFFER_SIZE], 1, "b2")
    tx = commit(pending, c, make_result(pending, 2))
    assert "AggregatorFault" not in tx.events
    assert [faults(pending, x) for x in aggs] == [0, 1, 1]


def test_commit_window_with_k_commitments_opens_reveal(pending, aggs):
    result = make_result(pending, 1)
    commit(pending, aggs[0], result)
    commit(pending, aggs[1], result)
    chain.sleep(AGGREGATION_DURATION + 1)
    tx = pending.closeAggregationWindow(1, {"from": aggs[2]})
    assert tx.events["RevealOpened"][0]["commits"] == 2
    reveal(pending, aggs[0], result)
    assert "VersionPublished" in reveal(pending, aggs[1], result).events


def test_unrevealed_commitment_to_published_buffer_is_faulted_at_next_commit(pending, aggs, devs):
    a, b, c = aggs
    result = make_result(pending, 1)
    for account in aggs:
        commit(pending, account, result)
    reveal(pending, a, result)
    reveal(pending, b, result)  # published; c never reveals
    fill(pending, devs[:BUFFER_SIZE], 1, "b2")
    tx = commit(pending, c, make_result(pending, 2))
    assert tx.events["AggregatorFault"][0]["buffer"] == 1
    assert faults(pending, c) == 1


# ---------------------------------------------------------------- suspensions and roles


def test_suspension_after_max_faults(admin, aggs, devs):
    task = deploy_buffered(admin, aggs, devs, aggregatorThreshold=2, maxAggregatorFaults=1)
    a, b, c = aggs
    fill(task, devs[:BUFFER_SIZE], 0, "b1")
    good = make_result(task, 1)
    for account, result in ((a, good), (b, good), (c, good.but(model=digest("bad")))):
        commit(task, account, result)
    reveal(task, c, good.but(model=digest("bad")))
    reveal(task, a, good)
    tx = reveal(task, b, good)
    assert tx.events["AggregatorSuspended"][0]["aggregator"] == c.address
    assert task.aggregatorCount() == 2
    fill(task, devs[:BUFFER_SIZE], 1, "b2")
    assert aggregation(task)["aggregators"] == 2  # n of the next attempt excludes the suspended one
    with buffered_reverts("AggregatorIsSuspended", c.address):
        commit(task, c, make_result(task, 2))
    # reinstatement: revoke and grant again
    task.revokeRole(AGGREGATOR_ROLE, c, {"from": admin})
    task.grantRole(AGGREGATOR_ROLE, c, {"from": admin})
    assert faults(task, c) == 0 and task.aggregatorCount() == 3


def test_grant_while_running_keeps_a_majority(task, admin, outsider):
    with buffered_reverts("ThresholdOutOfRange", 2, 4):
        task.grantRole(AGGREGATOR_ROLE, outsider, {"from": admin})


def test_cancel(task, admin, aggs, devs):
    fill(task, devs[:BUFFER_SIZE], 0, "b1")
    with buffered_reverts("AccessControlUnauthorizedAccount", devs[0].address, b"\x00" * 32):
        task.cancel({"from": devs[0]})
    tx = task.cancel({"from": admin})
    assert tx.events["TaskCancelled"][0]["version"] == 0
    with buffered_reverts("TaskNotRunning", 3):
        task.commitResult(1, digest("c"), {"from": aggs[0]})
    with buffered_reverts("TaskNotRunning", 3):
        task.cancel({"from": admin})
