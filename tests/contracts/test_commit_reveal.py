"""k-of-n aggregator agreement by commit-reveal: aggregatorCount, commit and reveal windows, faults, failed rounds."""

import pytest
from conftest import (
    AGGREGATION_DURATION,
    AGGREGATOR_ROLE,
    DEFAULT_ADMIN_ROLE,
    MAX_AGGREGATORS,
    NUM_ROUNDS,
    ZERO_BYTES32,
    Phase,
    aggregation_state,
    aggregator_info,
    commit,
    commit_reveal,
    deploy_task,
    digest,
    make_result,
    result_commitment,
    result_key,
    reveal,
    reverts_with,
    round_state,
    set_next_block_timestamp,
    submit_round,
)

from fedchain.chain import task as binding

POISON = digest("poisoned")


@pytest.fixture
def trio(federated_task, admin, aggregators, devices):
    """Three aggregators, k = 2; round 1 filled by three devices and in its commit window."""
    contract = deploy_task(federated_task, admin, aggregators, devices[:3], aggregatorThreshold=2)
    submit_round(contract, devices[:3], 1)
    assert round_state(contract)["phase"] == Phase.Aggregating
    assert aggregation_state(contract) == (0, 0, 2, 3)
    return contract


def results_for(task, aggregator_accounts, round_index, **fields):
    """Honest results: the same model and accepted count, but each aggregator its own salt and report."""
    base = make_result(task, round_index, **fields)
    return {
        a.address: base.but(salt=digest(f"salt-{round_index}-{a.address}"), report=digest(f"report-{a.address}"))
        for a in aggregator_accounts
    }


def commit_all(task, aggregator_accounts, results):
    return [commit(task, a, results[a.address]) for a in aggregator_accounts]


def fault_events(tx):
    """The AggregatorFault events of a transaction, as plain Python values."""
    if "AggregatorFault" not in tx.events:
        return []
    return [
        {
            "round": int(e["round"]),
            "aggregator": str(e["aggregator"]),
            "revealedModelDigest": bytes(e["revealedModelDigest"]),
            "finalModelDigest": bytes(e["finalModelDigest"]),
            "faults": int(e["faults"]),
        }
        for e in tx.events["AggregatorFault"]
    ]


# ---------------------------------------------------------------- aggregatorCount


def test_aggregator_count_follows_grants_and_revocations(task, admin, aggregator, accounts):
    other = accounts[6]
    assert task.aggregatorCount() == 1
    assert "RoleGranted" in task.grantRole(AGGREGATOR_ROLE, other, {"from": admin}).events
    assert task.aggregatorCount() == 2
    # granting a holder again changes nothing (OpenZeppelin returns false, emits nothing)
    assert "RoleGranted" not in task.grantRole(AGGREGATOR_ROLE, other, {"from": admin}).events
    assert task.aggregatorCount() == 2
    task.revokeRole(AGGREGATOR_ROLE, other, {"from": admin})
    assert task.aggregatorCount() == 1
    # revoking a non-holder changes nothing
    assert "RoleRevoked" not in task.revokeRole(AGGREGATOR_ROLE, other, {"from": admin}).events
    assert task.aggregatorCount() == 1
    task.grantRole(AGGREGATOR_ROLE, other, {"from": admin})
    assert task.aggregatorCount() == 2
    task.renounceRole(AGGREGATOR_ROLE, other, {"from": other})
    assert task.aggregatorCount() == 1
    # other roles are not counted
    task.grantRole(DEFAULT_ADMIN_ROLE, accounts[7], {"from": admin})
    task.revokeRole(DEFAULT_ADMIN_ROLE, accounts[7], {"from": admin})
    assert task.aggregatorCount() == 1
    task.revokeRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    assert task.aggregatorCount() == 0
    assert aggregation_state(task)[3] == 0


def test_max_aggregators(task, admin, aggregator, accounts):
    assert task.MAX_AGGREGATORS() == MAX_AGGREGATORS
    extra = [f"0x{i:040x}" for i in range(1, MAX_AGGREGATORS)]  # plus the fixture's aggregator: 32
    for address in extra:
        task.grantRole(AGGREGATOR_ROLE, address, {"from": admin})
    assert task.aggregatorCount() == MAX_AGGREGATORS
    with reverts_with("TooManyAggregators", MAX_AGGREGATORS):
        task.grantRole(AGGREGATOR_ROLE, accounts[8], {"from": admin})
    assert not task.hasRole(AGGREGATOR_ROLE, accounts[8])
    # a holder may be granted again, and other roles are unaffected
    task.grantRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    task.grantRole(DEFAULT_ADMIN_ROLE, accounts[8], {"from": admin})
    assert task.aggregatorCount() == MAX_AGGREGATORS
    # one leaves, another may come in
    task.revokeRole(AGGREGATOR_ROLE, extra[0], {"from": admin})
    task.grantRole(AGGREGATOR_ROLE, accounts[8], {"from": admin})
    assert task.aggregatorCount() == MAX_AGGREGATORS


# ---------------------------------------------------------------- commit


def test_commit_records_and_counts(trio, aggregators):
    result = make_result(trio, 1)
    tx = commit(trio, aggregators[0], result)
    assert list(tx.events.keys()) == ["ResultCommitted"]
    assert bytes(tx.events["ResultCommitted"]["commitment"]) == result.commitment(trio, aggregators[0])
    assert aggregator_info(trio, aggregators[0]) == (1, False, 0, result.commitment(trio, aggregators[0]))
    assert aggregator_info(trio, aggregators[1]) == (0, False, 0, ZERO_BYTES32)
    assert aggregation_state(trio) == (1, 0, 2, 3)
    assert round_state(trio)["phase"] == Phase.Aggregating


def test_double_commit_reverts(trio, aggregators):
    commit(trio, aggregators[0], make_result(trio, 1))
    with reverts_with("AlreadyCommitted", aggregators[0].address, 1):
        commit(trio, aggregators[0], make_result(trio, 1, model=digest("changed my mind")))
    assert aggregation_state(trio) == (1, 0, 2, 3)


def test_commit_in_reveal_window_reverts(trio, aggregators, admin, accounts):
    commit_all(trio, aggregators, results_for(trio, aggregators, 1))
    # replaced (revoke first: a fourth aggregator would make n = 4 >= 2k while running)
    trio.revokeRole(AGGREGATOR_ROLE, aggregators[2], {"from": admin})
    trio.grantRole(AGGREGATOR_ROLE, accounts[8], {"from": admin})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Revealing):
        commit(trio, accounts[8], make_result(trio, 1))


def test_commit_after_deadline_before_close_counts(trio, aggregators, chain):
    """The commit deadline only enables closeAggregationWindow; until someone calls it, commitments count."""
    commit_deadline = round_state(trio)["deadline"]
    chain.sleep(AGGREGATION_DURATION * 2)
    results = results_for(trio, aggregators, 1)
    txs = commit_all(trio, aggregators, results)
    assert txs[0].timestamp > commit_deadline
    assert "RevealOpened" in txs[2].events


def test_reveal_window_opens_when_all_committed(trio, aggregators):
    txs = commit_all(trio, aggregators, results_for(trio, aggregators, 1))
    assert "RevealOpened" not in txs[0].events and "RevealOpened" not in txs[1].events
    opened = txs[2].events["RevealOpened"]
    assert opened["round"] == 1
    assert opened["deadline"] == txs[2].timestamp + AGGREGATION_DURATION
    assert opened["commits"] == 3
    state = round_state(trio)
    assert state["phase"] == Phase.Revealing
    assert state["deadline"] == opened["deadline"]
    assert aggregation_state(trio) == (3, 0, 2, 3)


# ---------------------------------------------------------------- closeAggregationWindow


def test_close_commit_window_with_threshold_commits_opens_reveal(trio, aggregators, outsider):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators[:2], results)
    deadline = round_state(trio)["deadline"]
    set_next_block_timestamp(deadline - 1)
    with reverts_with("DeadlineNotReached", deadline, deadline - 1):
        trio.closeAggregationWindow(1, {"from": outsider})
    set_next_block_timestamp(deadline)
    tx = trio.closeAggregationWindow(1, {"from": outsider})
    assert list(tx.events.keys()) == ["RevealOpened"]
    assert tx.events["RevealOpened"]["deadline"] == deadline + AGGREGATION_DURATION
    assert tx.events["RevealOpened"]["commits"] == 2
    assert round_state(trio)["phase"] == Phase.Revealing
    # the third aggregator is too late to commit, and has nothing to reveal
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Revealing):
        commit(trio, aggregators[2], results[aggregators[2].address])
    with reverts_with("NoCommitment", aggregators[2].address, 1):
        reveal(trio, aggregators[2], results[aggregators[2].address])
    reveal(trio, aggregators[0], results[aggregators[0].address])
    tx = reveal(trio, aggregators[1], results[aggregators[1].address])
    assert "AggregateCommitted" in tx.events


def test_close_window_wrong_round_or_phase(trio, started, task, outsider, chain):
    chain.sleep(AGGREGATION_DURATION)
    with reverts_with("WrongRound", 1, 2):
        trio.closeAggregationWindow(2, {"from": outsider})
    with reverts_with("WrongRound", 1, 0):
        trio.closeAggregationWindow(0, {"from": outsider})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Open):
        started.closeAggregationWindow(1, {"from": outsider})


def test_close_window_while_registering(task, outsider):
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Registering):
        task.closeAggregationWindow(0, {"from": outsider})


def test_close_reveal_window_before_deadline_reverts(trio, aggregators, outsider):
    commit_all(trio, aggregators, results_for(trio, aggregators, 1))
    deadline = round_state(trio)["deadline"]
    set_next_block_timestamp(deadline - 1)
    with reverts_with("DeadlineNotReached", deadline, deadline - 1):
        trio.closeAggregationWindow(1, {"from": outsider})
    assert round_state(trio)["phase"] == Phase.Revealing


# ---------------------------------------------------------------- wrong reveals


@pytest.mark.parametrize(
    "field",
    [
        {"salt": digest("guessed salt")},
        {"model": digest("another model")},
        {"report": digest("another report")},
        {"accepted": 2},
        {"inputs_hash": b"\x07" * 20},
    ],
    ids=["salt", "model", "report", "accepted", "inputs_hash"],
)
def test_reveal_other_than_committed_reverts(trio, aggregators, field):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators, results)
    who = aggregators[0]
    with reverts_with("CommitmentMismatch", who.address, 1):
        reveal(trio, who, results[who.address].but(**field))
    assert aggregator_info(trio, who)[1] is False
    assert aggregation_state(trio) == (3, 0, 2, 3)


def test_copied_commitment_cannot_be_revealed(trio, aggregators):
    """The commitment binds the aggregator: copying someone's commitment and result does not work."""
    results = results_for(trio, aggregators, 1)
    honest, copycat = aggregators[0], aggregators[1]
    commit(trio, honest, results[honest.address])
    commit(trio, copycat, results[honest.address], commitment=results[honest.address].commitment(trio, honest))
    commit(trio, aggregators[2], results[aggregators[2].address])
    with reverts_with("CommitmentMismatch", copycat.address, 1):
        reveal(trio, copycat, results[honest.address])


def test_reveal_without_commit_reverts(trio, aggregators, chain):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators[:2], results)
    chain.sleep(AGGREGATION_DURATION)
    trio.closeAggregationWindow(1, {"from": aggregators[2]})
    with reverts_with("NoCommitment", aggregators[2].address, 1):
        reveal(trio, aggregators[2], results[aggregators[2].address])
    # and no reveal for another round than the committed one
    with reverts_with("NoCommitment", aggregators[0].address, 2):
        reveal(trio, aggregators[0], results[aggregators[0].address].but(round=2))


def test_double_reveal_in_window_reverts(trio, aggregators):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators, results)
    reveal(trio, aggregators[0], results[aggregators[0].address])
    with reverts_with("AlreadyRevealed", aggregators[0].address, 1):
        reveal(trio, aggregators[0], results[aggregators[0].address])
    assert aggregation_state(trio) == (3, 1, 2, 3)


def test_reveal_in_commit_window_reverts(trio, aggregators):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators[:2], results)
    with reverts_with("WrongPhase", Phase.Revealing, Phase.Aggregating):
        reveal(trio, aggregators[0], results[aggregators[0].address])


def test_reveal_after_reveal_deadline_reverts(trio, aggregators):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators, results)
    deadline = round_state(trio)["deadline"]
    set_next_block_timestamp(deadline - 1)
    reveal(trio, aggregators[0], results[aggregators[0].address])  # still in time
    set_next_block_timestamp(deadline)
    with reverts_with("RevealWindowClosed", 1):
        reveal(trio, aggregators[1], results[aggregators[1].address])
    assert round_state(trio)["phase"] == Phase.Revealing
    assert aggregation_state(trio) == (3, 1, 2, 3)


def test_newer_commitment_replaces_older(trio, aggregators, devices):
    """An aggregator that commits for round 2 can no longer reveal its round 1 commitment (NoCommitment); its
    withheld round 1 reveal is recorded as a fault when it commits again."""
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators, results)
    reveal(trio, aggregators[0], results[aggregators[0].address])
    reveal(trio, aggregators[1], results[aggregators[1].address])
    submit_round(trio, devices[:3], 2)
    late = aggregators[2]
    withheld = fault_events(commit(trio, late, make_result(trio, 2)))
    assert [(f["round"], f["aggregator"], bytes(f["revealedModelDigest"]), f["faults"]) for f in withheld] == [
        (1, late.address, ZERO_BYTES32, 1)
    ]
    with reverts_with("NoCommitment", late.address, 1):
        reveal(trio, late, results[late.address])
    assert aggregator_info(trio, late)[:3] == (2, False, 1)


# ---------------------------------------------------------------- agreement and faults


@pytest.mark.parametrize("order", ["liar_first", "liar_middle", "liar_last"])
def test_liar_is_outvoted_and_faulted(trio, aggregators, order):
    honest1, honest2, liar = aggregators
    results = results_for(trio, aggregators, 1)
    results[liar.address] = results[liar.address].but(model=POISON)
    honest = results[honest1.address]
    commit_all(trio, aggregators, results)
    sequence = {
        "liar_first": [liar, honest1, honest2],
        "liar_middle": [honest1, liar, honest2],
        "liar_last": [honest1, honest2, liar],
    }[order]

    txs = {a.address: reveal(trio, a, results[a.address]) for a in sequence}

    final_tx = txs[honest2.address]
    final = final_tx.events["AggregateCommitted"]
    assert final["aggregator"] == honest2
    assert bytes(final["modelDigest"]) == honest.model
    # the finaliser's own report goes into the event; the honest ones' reports differ and that is no fault
    assert bytes(final["reportDigest"]) == results[honest2.address].report
    assert "RoundOpened" in final_tx.events
    fault_tx = final_tx if order != "liar_last" else txs[liar.address]
    assert fault_events(fault_tx) == [
        {
            "round": 1,
            "aggregator": liar.address,
            "revealedModelDigest": POISON,
            "finalModelDigest": honest.model,
            "faults": 1,
        }
    ]
    for tx in txs.values():
        if tx != fault_tx:
            assert "AggregatorFault" not in tx.events
    if order == "liar_last":
        # a late reveal: accepted after finalisation, only to record the fault
        assert list(txs[liar.address].events.keys()) == ["ResultRevealed", "AggregatorFault"]
    else:
        assert list(final_tx.events.keys()) == [
            "ResultRevealed",
            "AggregateCommitted",
            "AggregatorFault",
            "RoundOpened",
        ]

    assert aggregator_info(trio, liar)[:3] == (1, True, 1)
    assert aggregator_info(trio, honest1)[:3] == (1, True, 0)
    assert aggregator_info(trio, honest2)[:3] == (1, True, 0)
    assert bytes(trio.roundModelDigest(1)) == honest.model
    assert bytes(trio.globalModelDigest()) == honest.model
    assert bytes(trio.finalResultKey(1)) == honest.key() == result_key(honest.inputs_hash, honest.model, 3)
    state = round_state(trio)
    assert state["round"] == 2
    assert state["phase"] == Phase.Open
    assert state["globalModel"] == honest.model


def test_disagreeing_accepted_count_is_a_fault(trio, aggregators):
    honest1, honest2, other = aggregators
    results = results_for(trio, aggregators, 1)
    results[other.address] = results[other.address].but(accepted=2)
    commit_all(trio, aggregators, results)
    reveal(trio, other, results[other.address])
    reveal(trio, honest1, results[honest1.address])
    tx = reveal(trio, honest2, results[honest2.address])
    assert [e["aggregator"] for e in fault_events(tx)] == [other.address]
    # the model digest is the same: the accepted count alone made the difference
    assert fault_events(tx)[0]["revealedModelDigest"] == fault_events(tx)[0]["finalModelDigest"]


def test_late_reveal_with_wrong_inputs_is_a_fault_not_a_revert(trio, aggregators):
    """After finalisation the inputs hash is not checked against the chain: a wrong one simply disagrees."""
    honest1, honest2, liar = aggregators
    results = results_for(trio, aggregators, 1)
    results[liar.address] = results[liar.address].but(inputs_hash=b"\x09" * 20)
    commit_all(trio, aggregators, results)
    reveal(trio, honest1, results[honest1.address])
    reveal(trio, honest2, results[honest2.address])
    tx = reveal(trio, liar, results[liar.address])
    fault = fault_events(tx)
    assert len(fault) == 1 and fault[0]["aggregator"] == liar.address and fault[0]["faults"] == 1
    # same model, other inputs: the fault shows the same digest twice
    assert fault[0]["revealedModelDigest"] == fault[0]["finalModelDigest"]


def test_late_honest_reveal_is_no_fault(trio, aggregators, devices):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators, results)
    reveal(trio, aggregators[0], results[aggregators[0].address])
    reveal(trio, aggregators[1], results[aggregators[1].address])
    submit_round(trio, devices[:3], 2)  # the task has moved on
    tx = reveal(trio, aggregators[2], results[aggregators[2].address])
    assert list(tx.events.keys()) == ["ResultRevealed"]
    assert aggregator_info(trio, aggregators[2])[:3] == (1, True, 0)
    # the current round's counters are untouched by a late reveal
    assert aggregation_state(trio) == (0, 0, 2, 3)
    with reverts_with("AlreadyRevealed", aggregators[2].address, 1):
        reveal(trio, aggregators[2], results[aggregators[2].address])


def test_late_reveal_after_task_finished_is_faulted(federated_task, admin, aggregators, devices):
    contract = deploy_task(
        federated_task, admin, aggregators, devices[:3], aggregatorThreshold=2, numRounds=1, minUpdates=1
    )
    submit_round(contract, devices[:3], 1)
    results = results_for(contract, aggregators, 1)
    results[aggregators[2].address] = results[aggregators[2].address].but(model=POISON)
    commit_all(contract, aggregators, results)
    reveal(contract, aggregators[0], results[aggregators[0].address])
    tx = reveal(contract, aggregators[1], results[aggregators[1].address])
    assert "TaskFinished" in tx.events
    tx = reveal(contract, aggregators[2], results[aggregators[2].address])
    assert fault_events(tx)[0]["faults"] == 1
    assert round_state(contract)["phase"] == Phase.Finished


def test_faults_accumulate_over_rounds(trio, aggregators, devices):
    honest1, honest2, liar = aggregators
    for r, liar_position in ((1, 0), (2, 2)):
        if r > 1:
            submit_round(trio, devices[:3], r)
        results = results_for(trio, aggregators, r)
        results[liar.address] = results[liar.address].but(model=POISON)
        commit_all(trio, aggregators, results)
        order = [honest1, honest2]
        order.insert(liar_position, liar)
        for a in order:
            reveal(trio, a, results[a.address])
    assert aggregator_info(trio, liar)[:3] == (2, True, 2)
    assert aggregator_info(trio, honest1)[2] == aggregator_info(trio, honest2)[2] == 0
    assert round_state(trio)["round"] == 3


def test_k1_with_three_aggregators_cannot_start(federated_task, admin, aggregators, devices, accounts):
    """Review M4: with k = 1 and n = 3 one aggregator alone finalised a model of its choice. Now start() needs
    n / 2 < k <= n, and a grant while running may not break it (n = 2k would let k aggregators be a minority)."""
    contract = deploy_task(federated_task, admin, aggregators, devices[:3], start=False, aggregatorThreshold=1)
    with reverts_with("ThresholdOutOfRange", 1, 3):
        contract.start({"from": admin})
    # k = n = 1 starts; a second aggregator while running would make n = 2 = 2k
    single = deploy_task(federated_task, admin, aggregators[:1], devices[:3], aggregatorThreshold=1)
    with reverts_with("ThresholdOutOfRange", 1, 2):
        single.grantRole(AGGREGATOR_ROLE, aggregators[1], {"from": admin})
    # k = 2 of n = 3 starts, and n = 4 is refused while running
    trio = deploy_task(federated_task, admin, aggregators, devices[:3], aggregatorThreshold=2)
    with reverts_with("ThresholdOutOfRange", 2, 4):
        trio.grantRole(AGGREGATOR_ROLE, accounts[8], {"from": admin})
    assert trio.aggregatorCount() == 3


# ---------------------------------------------------------------- failed rounds


@pytest.mark.parametrize("commits", [0, 1])
def test_commit_window_expires_below_threshold(trio, aggregators, outsider, chain, commits):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators[:commits], results)
    initial = bytes(trio.initialModelDigest())
    chain.sleep(AGGREGATION_DURATION)
    tx = trio.closeAggregationWindow(1, {"from": outsider})
    assert list(tx.events.keys()) == ["AggregationFailed", "RoundOpened"]
    failed = tx.events["AggregationFailed"]
    assert (failed["round"], failed["commits"], failed["reveals"]) == (1, commits, 0)
    opened = tx.events["RoundOpened"]
    assert opened["round"] == 2
    assert bytes(opened["globalModelDigest"]) == initial
    assert opened["deadline"] == tx.timestamp + trio.roundDuration()
    assert trio.failedRounds() == 1
    assert bytes(trio.roundModelDigest(1)) == ZERO_BYTES32
    assert bytes(trio.finalResultKey(1)) == ZERO_BYTES32
    assert bytes(trio.globalModelDigest()) == initial
    state = round_state(trio)
    assert (state["round"], state["phase"], state["updates"]) == (2, Phase.Open, 0)
    assert aggregation_state(trio) == (0, 0, 2, 3)
    if commits:
        with reverts_with("RevealWindowClosed", 1):
            reveal(trio, aggregators[0], results[aggregators[0].address])
    with reverts_with("WrongRound", 2, 1):
        trio.closeAggregationWindow(1, {"from": outsider})


def test_reveal_window_expires_with_split_votes(trio, aggregators, outsider, chain):
    results = {
        a.address: r.but(model=digest(f"model-of-{a.address}"))
        for a, r in zip(aggregators, results_for(trio, aggregators, 1).values(), strict=True)
    }
    commit_all(trio, aggregators, results)
    txs = [reveal(trio, a, results[a.address]) for a in aggregators]
    assert not any("AggregateCommitted" in tx.events for tx in txs)
    assert round_state(trio)["phase"] == Phase.Revealing
    assert aggregation_state(trio) == (3, 3, 2, 3)
    chain.sleep(AGGREGATION_DURATION)
    tx = trio.closeAggregationWindow(1, {"from": outsider})
    failed = tx.events["AggregationFailed"]
    assert (failed["round"], failed["commits"], failed["reveals"]) == (1, 3, 3)
    assert tx.events["RoundOpened"]["round"] == 2
    assert trio.failedRounds() == 1
    # without a final result nobody is at fault
    assert [aggregator_info(trio, a)[2] for a in aggregators] == [0, 0, 0]
    assert bytes(trio.roundModelDigest(1)) == ZERO_BYTES32
    # nothing more for round 1: it failed
    with reverts_with("AlreadyRevealed", aggregators[0].address, 1):
        reveal(trio, aggregators[0], results[aggregators[0].address])


def test_reveal_window_expires_with_too_few_reveals(trio, aggregators, outsider, chain):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators, results)
    reveal(trio, aggregators[0], results[aggregators[0].address])
    chain.sleep(AGGREGATION_DURATION)
    with reverts_with("RevealWindowClosed", 1):
        reveal(trio, aggregators[1], results[aggregators[1].address])
    failed = trio.closeAggregationWindow(1, {"from": outsider}).events["AggregationFailed"]
    assert (failed["commits"], failed["reveals"]) == (3, 1)
    # after the failure the round is past: still RevealWindowClosed
    with reverts_with("RevealWindowClosed", 1):
        reveal(trio, aggregators[1], results[aggregators[1].address])


def test_task_still_produces_num_rounds_aggregates(trio, aggregators, devices, outsider, chain):
    """Round 1 fails in its commit window, round 3 on a split vote: the task finishes with round NUM_ROUNDS + 2."""
    assert NUM_ROUNDS == 3
    models = {0: bytes(trio.initialModelDigest())}
    failing = {1: "commit", 3: "split"}
    last = NUM_ROUNDS + len(failing)
    for r in range(1, last + 1):
        if r > 1:
            submit_round(trio, devices[:3], r)
        previous = models[max(models)]
        assert round_state(trio)["globalModel"] == previous
        results = results_for(trio, aggregators, r)
        if failing.get(r) == "commit":
            commit_all(trio, aggregators[:1], results)
            chain.sleep(AGGREGATION_DURATION)
            tx = trio.closeAggregationWindow(r, {"from": outsider})
        elif failing.get(r) == "split":
            results = {a: res.but(model=digest(f"split-{r}-{a}")) for a, res in results.items()}
            commit_all(trio, aggregators, results)
            for a in aggregators:
                reveal(trio, a, results[a.address])
            chain.sleep(AGGREGATION_DURATION)
            tx = trio.closeAggregationWindow(r, {"from": outsider})
        else:
            commit_all(trio, aggregators, results)
            reveal(trio, aggregators[0], results[aggregators[0].address])
            tx = reveal(trio, aggregators[1], results[aggregators[1].address])
            models[r] = results[aggregators[0].address].model
        if r in failing:
            assert "AggregationFailed" in tx.events
            assert bytes(tx.events["RoundOpened"]["globalModelDigest"]) == previous
        elif r < last:
            assert "TaskFinished" not in tx.events
            assert tx.events["RoundOpened"]["round"] == r + 1

    assert tx.events["TaskFinished"]["rounds"] == last
    assert bytes(tx.events["TaskFinished"]["finalModelDigest"]) == models[last]
    assert trio.failedRounds() == len(failing)
    assert round_state(trio)["phase"] == Phase.Finished
    produced = [r for r in range(1, last + 1) if bytes(trio.roundModelDigest(r)) != ZERO_BYTES32]
    assert produced == [2, 4, 5]
    assert len(produced) == NUM_ROUNDS


def test_threshold_above_aggregator_count_fails(federated_task, admin, aggregators, devices, outsider, chain):
    """Review M4, k > n: refused at start; a revocation while running is allowed (it costs liveness, not safety)
    and counts from the next round: that round's n = 1 < k, its commitment opens the reveal window, and no result
    can become final."""
    aggregator = aggregators[0]
    refused = deploy_task(federated_task, admin, [aggregator], devices[:3], start=False, aggregatorThreshold=2)
    with reverts_with("ThresholdOutOfRange", 2, 1):
        refused.start({"from": admin})
    contract = deploy_task(federated_task, admin, aggregators[:2], devices[:3], aggregatorThreshold=2)
    contract.revokeRole(AGGREGATOR_ROLE, aggregators[1], {"from": admin})
    assert aggregation_state(contract)[3] == 2  # round 1 keeps the n it opened with
    submit_round(contract, devices[:3], 1)
    chain.sleep(AGGREGATION_DURATION)
    contract.closeAggregationWindow(1, {"from": outsider})  # no commitment: round 1 fails
    assert aggregation_state(contract)[2:] == (2, 1)  # round 2: k = 2, n = 1
    submit_round(contract, devices[:3], 2)
    result = make_result(contract, 2)
    assert "RevealOpened" in commit(contract, aggregator, result).events
    assert list(reveal(contract, aggregator, result).events.keys()) == ["ResultRevealed"]
    chain.sleep(AGGREGATION_DURATION)
    failed = contract.closeAggregationWindow(2, {"from": outsider}).events["AggregationFailed"]
    assert (failed["commits"], failed["reveals"]) == (1, 1)


def test_no_aggregator_fails_the_round(federated_task, admin, aggregator, devices, outsider, chain):
    contract = deploy_task(federated_task, admin, [], devices[:3], start=False)
    with reverts_with("ThresholdOutOfRange", 1, 0):
        contract.start({"from": admin})
    contract.grantRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    contract.start({"from": admin})
    contract.revokeRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    submit_round(contract, devices[:3], 1)
    chain.sleep(AGGREGATION_DURATION)
    assert "AggregationFailed" in contract.closeAggregationWindow(1, {"from": outsider}).events
    assert contract.failedRounds() == 1


def test_cancel_during_revealing_with_several_aggregators(trio, aggregators, admin):
    results = results_for(trio, aggregators, 1)
    commit_all(trio, aggregators, results)
    reveal(trio, aggregators[0], results[aggregators[0].address])
    tx = trio.cancel({"from": admin})
    assert tx.events["TaskCancelled"]["round"] == 1
    with reverts_with("WrongPhase", Phase.Revealing, Phase.Cancelled):
        reveal(trio, aggregators[1], results[aggregators[1].address])
    assert bytes(trio.finalResultKey(1)) == ZERO_BYTES32


# ---------------------------------------------------------------- the commitment, on and off chain


@pytest.mark.parametrize("epsilon", [0, 1_234_567])
def test_result_commitment_matches_python_and_binding(trio, aggregators, federated_task, admin, epsilon):
    result = make_result(trio, 1, accepted=2, epsilon=epsilon)
    who = aggregators[1]
    args = (result.inputs_hash, result.model, result.report, result.accepted, result.epsilon, result.salt)
    onchain = bytes(trio.resultCommitment(1, who, *args))
    assert onchain == result_commitment(trio.address, 1, who.address, *args)
    assert onchain == binding.result_commitment(trio.address, 1, who.address, *args[:4], args[5], epsilon_micro=epsilon)
    assert onchain == result.commitment(trio, who)
    # task-, round-, aggregator- and epsilon-specific
    other = federated_task.deploy(_config_of(trio), admin, {"from": admin})
    assert bytes(other.resultCommitment(1, who, *args)) != onchain
    assert bytes(trio.resultCommitment(2, who, *args)) != onchain
    assert bytes(trio.resultCommitment(1, aggregators[0], *args)) != onchain
    assert bytes(trio.resultCommitment(1, who, *args[:4], epsilon + 1, args[5])) != onchain
    # the key reveals agree on
    # (resultKey is internal, for EIP-170's size limit: finalResultKey is what the chain shows of it, test_aggregate)
    key = binding.result_key(result.inputs_hash, result.model, 2, epsilon_micro=epsilon)
    assert key == result_key(result.inputs_hash, result.model, 2, epsilon) == result.key()
    assert key != binding.result_key(result.inputs_hash, result.model, 2, epsilon_micro=epsilon + 1)


def _config_of(task):
    return (
        task.modelSpecDigest(),
        task.initialModelDigest(),
        task.numRounds(),
        task.minUpdates(),
        task.maxUpdates(),
        task.roundDuration(),
        task.strategyId(),
        task.aggregatorThreshold(),
        task.aggregationDuration(),
        task.secureAggregation(),
        task.epsilonBudgetMicro(),
        task.firstRoundEpsilonMicro(),
        *task.limits(),
    )


def test_commit_reveal_helper_with_single_aggregator(aggregating, aggregator):
    """conftest's commit_reveal: n = k = 1, the commitment opens the reveal window and the reveal finalises."""
    tx = commit_reveal(aggregating, aggregator, 1)
    assert tx.events["AggregateCommitted"]["aggregator"] == aggregator
    assert round_state(aggregating)["round"] == 2
