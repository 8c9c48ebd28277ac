"""Review findings M5 (per-task cap on an update's sample count) and L5 (withheld reveals are faults; faults
suspend): each test performs the attack and shows it now fails or gains nothing."""

import pytest
from conftest import (
    AGGREGATION_DURATION,
    AGGREGATOR_ROLE,
    MAX_SAMPLES_PER_UPDATE,
    ZERO_BYTES32,
    Phase,
    aggregation_state,
    aggregator_info,
    commit,
    deploy_task,
    digest,
    is_suspended,
    make_config,
    make_result,
    reveal,
    reverts_with,
    round_state,
    submit_round,
)

CAP = 1_000


# ---------------------------------------------------------------- M5: sample cap


@pytest.mark.parametrize("cap", [0, MAX_SAMPLES_PER_UPDATE + 1])
def test_cap_outside_range_is_refused(federated_task, admin, cap):
    with reverts_with("InvalidConfig", "maxSamplesPerUpdate"):
        federated_task.deploy(make_config(maxSamplesPerUpdate=cap), admin, {"from": admin})


def test_zero_fault_limit_is_refused(federated_task, admin):
    with reverts_with("InvalidConfig", "maxAggregatorFaults is 0"):
        federated_task.deploy(make_config(maxAggregatorFaults=0), admin, {"from": admin})


def test_device_cannot_claim_more_than_the_cap(federated_task, admin, aggregator, devices):
    """The attack: one device reports 2^32 - 1 samples to dominate the FedAvg average. Refused above the task's cap;
    the cap itself is accepted."""
    task = deploy_task(federated_task, admin, [aggregator], devices[:3], maxSamplesPerUpdate=CAP)
    assert task.limits()[0] == CAP
    assert task.tx.events["LimitsConfigured"]["maxSamplesPerUpdate"] == CAP
    with reverts_with("TooManySamples", MAX_SAMPLES_PER_UPDATE, CAP):
        task.submitUpdate(1, digest("dominant"), MAX_SAMPLES_PER_UPDATE, {"from": devices[0]})
    with reverts_with("TooManySamples", CAP + 1, CAP):
        task.submitUpdate(1, digest("dominant"), CAP + 1, {"from": devices[0]})
    tx = task.submitUpdate(1, digest("capped"), CAP, {"from": devices[0]})
    assert tx.events["UpdateSubmitted"]["numSamples"] == CAP
    assert round_state(task)["totalSamples"] == CAP


def test_masked_update_is_capped(federated_task, admin, aggregator, devices):
    task = deploy_task(
        federated_task, admin, [aggregator], devices[:3], maxSamplesPerUpdate=CAP, secureAggregation=True
    )
    with reverts_with("TooManySamples", CAP + 1, CAP):
        task.submitMaskedUpdate(1, digest("masked"), CAP + 1, 0, {"from": devices[0]})


def test_batch_total_is_capped_per_entry(federated_task, admin, aggregator, devices):
    task = deploy_task(federated_task, admin, [aggregator], devices[:3], maxSamplesPerUpdate=CAP)
    relayer = aggregator
    task.grantRole(task.RELAYER_ROLE(), relayer, {"from": admin})
    with reverts_with("BatchSamplesOutOfRange", 2 * CAP + 1, 2, 2 * CAP):
        task.submitUpdateBatch(1, digest("batch"), digest("root"), 2, 2 * CAP + 1, {"from": relayer})
    task.submitUpdateBatch(1, digest("batch"), digest("root"), 2, 2 * CAP, {"from": relayer})


# ---------------------------------------------------------------- L5: withheld reveals, suspension


@pytest.fixture
def trio_strict(federated_task, admin, aggregators, devices):
    """k = 2 of n = 3; an aggregator is suspended at its second fault."""
    return deploy_task(federated_task, admin, aggregators, devices[:3], aggregatorThreshold=2, maxAggregatorFaults=2)


def _commit_all(task, aggregators, round_index):
    results = {}
    for i, a in enumerate(aggregators):
        results[a] = make_result(task, round_index, salt=digest(f"salt-{round_index}-{i}"))
        commit(task, a, results[a])
    return results


def test_withheld_reveal_is_a_fault_when_the_window_closes(trio_strict, aggregators, devices, outsider, chain):
    """The attack: an aggregator that would be outvoted commits and withholds its reveal; with one honest reveal
    the round fails and (before the fix) nobody was faulted. Now closing the reveal window faults every committer
    that did not reveal."""
    honest, withholder1, withholder2 = aggregators
    submit_round(trio_strict, devices[:3], 1)
    results = _commit_all(trio_strict, aggregators, 1)
    reveal(trio_strict, honest, results[honest])
    chain.sleep(AGGREGATION_DURATION)
    tx = trio_strict.closeAggregationWindow(1, {"from": outsider})
    faults = [
        (f["round"], f["aggregator"], bytes(f["revealedModelDigest"]), f["faults"])
        for f in tx.events["AggregatorFault"]
    ]
    assert faults == [(1, withholder1.address, ZERO_BYTES32, 1), (1, withholder2.address, ZERO_BYTES32, 1)]
    assert "AggregationFailed" in tx.events
    assert aggregator_info(trio_strict, honest)[2] == 0


def test_faults_suspend_and_n_shrinks_from_the_next_round(trio_strict, aggregators, devices, admin, outsider, chain):
    """Two withheld reveals suspend an aggregator: it can no longer commit, n drops from the next round on, and the
    admin reinstates it by revoking and granting its role again (faults reset)."""
    a, b, withholder = aggregators
    for r in (1, 2):
        submit_round(trio_strict, devices[:3], r)
        results = _commit_all(trio_strict, aggregators, r)
        reveal(trio_strict, a, results[a])
        if r == 1:
            reveal(trio_strict, b, results[b])  # finalises round 1; the withholder's fault comes at its next commit
    chain.sleep(AGGREGATION_DURATION)
    # round 2: withholder committed in round 2, so round 1's withheld reveal was already counted (fault 1)
    assert aggregator_info(trio_strict, withholder)[2] == 1
    tx = trio_strict.closeAggregationWindow(2, {"from": outsider})
    assert tx.events["AggregatorSuspended"]["aggregator"] == withholder
    assert is_suspended(trio_strict, withholder)
    assert trio_strict.aggregatorCount() == 2
    assert aggregation_state(trio_strict)[2:] == (2, 2)  # round 3: k = 2, n = 2
    submit_round(trio_strict, devices[:3], 3)
    with reverts_with("AggregatorIsSuspended", withholder.address):
        commit(trio_strict, withholder, make_result(trio_strict, 3))
    # the two others still finalise: n = 2 commitments open the reveal window at once
    results = _commit_all(trio_strict, [a, b], 3)
    assert round_state(trio_strict)["phase"] == Phase.Revealing
    reveal(trio_strict, a, results[a])
    assert "AggregateCommitted" in reveal(trio_strict, b, results[b]).events
    # reinstatement: revoke + grant (n = 3 < 2k = 4 is allowed while running)
    trio_strict.revokeRole(AGGREGATOR_ROLE, withholder, {"from": admin})
    trio_strict.grantRole(AGGREGATOR_ROLE, withholder, {"from": admin})
    assert not is_suspended(trio_strict, withholder) and aggregator_info(trio_strict, withholder)[2] == 0
    assert trio_strict.aggregatorCount() == 3
