"""Finalising a round with the fixtures' single aggregator (n = k = 1: commit, then reveal), finishing and cancelling,
and a full lifecycle. Several aggregators, faults and failed rounds: test_commit_reveal.py."""

import pytest
from conftest import (
    AGGREGATION_DURATION,
    AGGREGATOR_ROLE,
    DEFAULT_ADMIN_ROLE,
    NUM_ROUNDS,
    ROUND_DURATION,
    ZERO_BYTES32,
    Phase,
    aggregation_state,
    aggregator_info,
    commit,
    commit_reveal,
    device_info,
    digest,
    expected_inputs_hash,
    initial_inputs_hash,
    make_config,
    make_result,
    reveal,
    reverts_with,
    round_state,
    submit_round,
)

from fedchain.chain.task import result_key

MODEL = digest("model-1")
REPORT = digest("report-1")


def commit_then_reveal(task, sender, round_index=1, **fields):
    """Commit a result (defaults from make_result, overridden by `fields`) and reveal it; returns the reveal tx."""
    result = make_result(task, round_index, **fields)
    commit(task, sender, result)
    return reveal(task, sender, result)


# ---------------------------------------------------------------- success


def test_commit_then_reveal_emits_and_opens_next_round(started, devices, aggregator):
    submissions, _ = submit_round(started, devices[:3], 1)
    inputs_hash = expected_inputs_hash(started.address, 1, submissions)
    result = make_result(started, 1, inputs_hash=inputs_hash, model=MODEL, report=REPORT, accepted=2)
    commitment = result.commitment(started, aggregator)

    tx = commit(started, aggregator, result)
    assert list(tx.events.keys()) == ["ResultCommitted", "RevealOpened"]
    committed = tx.events["ResultCommitted"]
    assert committed["round"] == 1
    assert committed["aggregator"] == aggregator
    assert bytes(committed["commitment"]) == commitment
    opened = tx.events["RevealOpened"]
    assert opened["round"] == 1
    assert opened["deadline"] == tx.timestamp + AGGREGATION_DURATION
    assert opened["commits"] == 1
    state = round_state(started)
    assert state["phase"] == Phase.Revealing
    assert state["deadline"] == tx.timestamp + AGGREGATION_DURATION
    assert aggregator_info(started, aggregator) == (1, False, 0, commitment)
    assert aggregation_state(started) == (1, 0, 1, 1)

    tx = reveal(started, aggregator, result)
    assert list(tx.events.keys()) == ["ResultRevealed", "AggregateCommitted", "RoundOpened"]
    revealed = tx.events["ResultRevealed"]
    assert revealed["round"] == 1
    assert revealed["aggregator"] == aggregator
    assert bytes(revealed["modelDigest"]) == MODEL
    assert bytes(revealed["reportDigest"]) == REPORT
    assert revealed["acceptedUpdates"] == 2
    assert revealed["epsilonMicro"] == 0

    final = tx.events["AggregateCommitted"]
    assert final["round"] == 1
    assert final["aggregator"] == aggregator
    assert bytes(final["modelDigest"]) == MODEL
    assert bytes(final["reportDigest"]) == REPORT
    assert bytes(final["inputsHash"]) == inputs_hash
    assert final["acceptedUpdates"] == 2
    assert final["epsilonMicro"] == 0

    opened = tx.events["RoundOpened"]
    assert opened["round"] == 2
    assert bytes(opened["globalModelDigest"]) == MODEL
    assert opened["deadline"] == tx.timestamp + ROUND_DURATION
    assert "TaskFinished" not in tx.events
    assert "AggregatorFault" not in tx.events

    assert bytes(started.globalModelDigest()) == MODEL
    assert bytes(started.roundModelDigest(1)) == MODEL
    assert bytes(started.roundModelDigest(2)) == ZERO_BYTES32
    assert bytes(started.finalResultKey(1)) == result.key()
    assert bytes(started.finalResultKey(1)) == result_key(inputs_hash, MODEL, 2, epsilon_micro=0)
    assert bytes(started.finalResultKey(2)) == ZERO_BYTES32
    assert started.failedRounds() == 0
    assert aggregator_info(started, aggregator) == (1, True, 0, commitment)
    state = round_state(started)
    assert state["round"] == 2
    assert state["phase"] == Phase.Open
    assert state["globalModel"] == MODEL
    assert state["updates"] == 0
    assert state["totalSamples"] == 0
    assert state["inputsHash"] == initial_inputs_hash(started.address, 2)
    # the new round's counters start from zero
    assert aggregation_state(started) == (0, 0, 1, 1)


@pytest.mark.parametrize("accepted", [0, 1, 3])
def test_accepted_up_to_submitted(aggregating, aggregator, accepted):
    tx = commit_then_reveal(aggregating, aggregator, accepted=accepted)
    assert tx.events["AggregateCommitted"]["acceptedUpdates"] == accepted


def test_aggregate_after_deadline_close(started, devices, aggregator, chain):
    submissions, _ = submit_round(started, devices[:2], 1)
    chain.sleep(ROUND_DURATION)
    started.closeRound(1, {"from": devices[0]})
    inputs_hash = expected_inputs_hash(started.address, 1, submissions)
    tx = commit_then_reveal(started, aggregator, inputs_hash=inputs_hash, accepted=2)
    assert tx.events["AggregateCommitted"]["acceptedUpdates"] == 2
    assert bytes(tx.events["AggregateCommitted"]["inputsHash"]) == inputs_hash


def test_any_aggregator_can_finalise_when_alone(aggregating, admin, aggregator, accounts):
    """Whoever holds the role can aggregate; replaced (revoked first: n = 2 would break n / 2 < k while running),
    n = k = 1 again."""
    second = accounts[8]
    aggregating.revokeRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    aggregating.grantRole(AGGREGATOR_ROLE, second, {"from": admin})
    tx = commit_then_reveal(aggregating, second)
    assert tx.events["AggregateCommitted"]["aggregator"] == second


def test_report_is_free_but_bound_by_the_commitment(aggregating, aggregator):
    """Any non-zero report digest may be revealed, but only the committed one."""
    result = make_result(aggregating, 1, report=digest("my own report"))
    commit(aggregating, aggregator, result)
    with reverts_with("CommitmentMismatch", aggregator.address, 1):
        reveal(aggregating, aggregator, result.but(report=digest("another report")))
    tx = reveal(aggregating, aggregator, result)
    assert bytes(tx.events["AggregateCommitted"]["reportDigest"]) == digest("my own report")


# ---------------------------------------------------------------- reverts


@pytest.mark.parametrize("who", ["admin", "device", "outsider"])
def test_commit_and_reveal_only_aggregator(aggregating, admin, devices, outsider, who):
    sender = {"admin": admin, "device": devices[0], "outsider": outsider}[who]
    result = make_result(aggregating, 1)
    with reverts_with("AccessControlUnauthorizedAccount", sender.address, AGGREGATOR_ROLE):
        commit(aggregating, sender, result)
    with reverts_with("AccessControlUnauthorizedAccount", sender.address, AGGREGATOR_ROLE):
        reveal(aggregating, sender, result)
    assert round_state(aggregating)["phase"] == Phase.Aggregating
    assert aggregation_state(aggregating) == (0, 0, 1, 1)


def test_commit_while_registering_reverts(task, aggregator):
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Registering):
        task.commitResult(0, digest("c"), {"from": aggregator})


def test_commit_while_open_reverts(started, devices, aggregator):
    submit_round(started, devices[:2], 1)
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Open):
        commit(started, aggregator, make_result(started, 1))


@pytest.mark.parametrize("given", [0, 2])
def test_commit_wrong_round_reverts(aggregating, aggregator, given):
    with reverts_with("WrongRound", 1, given):
        commit(aggregating, aggregator, make_result(aggregating, given))


def test_commit_zero_commitment_reverts(aggregating, aggregator):
    with reverts_with("EmptyDigest"):
        aggregating.commitResult(1, ZERO_BYTES32, {"from": aggregator})


def _wrong_inputs_hashes(task, devices):
    row = [(devices[i].address, digest(f"u-1-{i}"), 100 + 10 * i) for i in range(3)]
    # sanity: the in-order chain is the on-chain value
    assert round_state(task)["inputsHash"] == expected_inputs_hash(task.address, 1, row)
    return {
        "zero": b"\x00" * 20,
        "ones": b"\x01" * 20,
        "initial": initial_inputs_hash(task.address, 1),
        "reordered": expected_inputs_hash(task.address, 1, row[::-1]),
        "first_two": expected_inputs_hash(task.address, 1, row[:2]),
    }


@pytest.mark.parametrize("case", ["zero", "ones", "initial", "reordered", "first_two"])
def test_reveal_wrong_inputs_hash_reverts(aggregating, aggregator, devices, case):
    """A result computed from other inputs is refused in the reveal window (it may have been committed)."""
    onchain = round_state(aggregating)["inputsHash"]
    given = _wrong_inputs_hashes(aggregating, devices)[case]
    result = make_result(aggregating, 1, inputs_hash=given)
    commit(aggregating, aggregator, result)
    with reverts_with("InputsMismatch", onchain, given):
        reveal(aggregating, aggregator, result)
    assert round_state(aggregating)["phase"] == Phase.Revealing
    assert aggregator_info(aggregating, aggregator)[1] is False


@pytest.mark.parametrize(("model", "report"), [(ZERO_BYTES32, REPORT), (MODEL, ZERO_BYTES32), (ZERO_BYTES32,) * 2])
def test_reveal_empty_digest_reverts(revealing, aggregator, model, report):
    result = make_result(revealing, 1, model=model, report=report)
    with reverts_with("EmptyDigest"):
        reveal(revealing, aggregator, result)


@pytest.mark.parametrize("accepted", [4, 2**32 - 1])
def test_reveal_too_many_accepted_reverts(aggregating, aggregator, accepted):
    result = make_result(aggregating, 1, accepted=accepted)
    commit(aggregating, aggregator, result)
    with reverts_with("TooManyAccepted", accepted, 3):
        reveal(aggregating, aggregator, result)


def test_too_many_accepted_after_deadline_close(started, devices, aggregator, chain):
    submit_round(started, devices[:2], 1)
    chain.sleep(ROUND_DURATION)
    started.closeRound(1, {"from": devices[0]})
    result = make_result(started, 1, accepted=3)
    commit(started, aggregator, result)
    with reverts_with("TooManyAccepted", 3, 2):
        reveal(started, aggregator, result)


def test_commit_twice_reverts(aggregating, aggregator):
    result = make_result(aggregating, 1)
    commit(aggregating, aggregator, result)
    # alone, the aggregator's commitment opened the reveal window
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Revealing):
        commit(aggregating, aggregator, result)
    reveal(aggregating, aggregator, result)
    # and once the round is final, round 2 is open
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Open):
        aggregating.commitResult(1, digest("again"), {"from": aggregator})
    assert bytes(aggregating.roundModelDigest(1)) == result.model


def test_reveal_twice_reverts(aggregating, aggregator):
    result = make_result(aggregating, 1)
    commit(aggregating, aggregator, result)
    reveal(aggregating, aggregator, result)
    with reverts_with("AlreadyRevealed", aggregator.address, 1):
        reveal(aggregating, aggregator, result)


def test_commit_again_once_next_round_aggregates(aggregating, aggregator, devices):
    commit_reveal(aggregating, aggregator, 1)
    submit_round(aggregating, devices[:3], 2)
    with reverts_with("WrongRound", 2, 1):
        commit(aggregating, aggregator, make_result(aggregating, 1, model=digest("other")))
    assert bytes(aggregating.roundModelDigest(1)) == MODEL


# ---------------------------------------------------------------- finishing


def test_last_round_finishes_task(started, devices, aggregator):
    for r in range(1, NUM_ROUNDS):
        submit_round(started, devices[:3], r)
        commit_reveal(started, aggregator, r)
    submit_round(started, devices[:3], NUM_ROUNDS)
    final = digest("final")
    tx = commit_then_reveal(started, aggregator, round_index=NUM_ROUNDS, model=final)
    assert tx.events["AggregateCommitted"]["round"] == NUM_ROUNDS
    finished = tx.events["TaskFinished"]
    assert bytes(finished["finalModelDigest"]) == final
    assert finished["rounds"] == NUM_ROUNDS
    assert "RoundOpened" not in tx.events
    assert list(tx.events.keys()) == ["ResultRevealed", "AggregateCommitted", "TaskFinished"]
    state = round_state(started)
    assert state["phase"] == Phase.Finished
    assert state["round"] == NUM_ROUNDS
    assert state["globalModel"] == final
    assert bytes(started.roundModelDigest(NUM_ROUNDS)) == final


def test_single_round_task_finishes(federated_task, admin, aggregator, devices):
    contract = federated_task.deploy(make_config(numRounds=1, minUpdates=1, maxUpdates=1), admin, {"from": admin})
    contract.grantRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    contract.approveDevices([devices[0]], {"from": admin})
    contract.start({"from": admin})
    contract.submitUpdate(1, digest("only"), 9, {"from": devices[0]})
    tx = commit_then_reveal(contract, aggregator, accepted=1)
    assert tx.events["TaskFinished"]["rounds"] == 1
    assert round_state(contract)["phase"] == Phase.Finished


def test_nothing_works_after_finish(finished, admin, aggregator, devices, outsider, chain):
    last = NUM_ROUNDS
    state = round_state(finished)
    with reverts_with("WrongPhase", Phase.Open, Phase.Finished):
        finished.submitUpdate(last, digest("x"), 1, {"from": devices[0]})
    with reverts_with("WrongPhase", Phase.Open, Phase.Finished):
        finished.submitUpdate(last + 1, digest("x"), 1, {"from": devices[0]})
    chain.sleep(ROUND_DURATION)
    with reverts_with("WrongPhase", Phase.Open, Phase.Finished):
        finished.closeRound(last, {"from": outsider})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Finished):
        finished.commitResult(last, digest("c"), {"from": aggregator})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Finished):
        finished.commitResult(last + 1, digest("c"), {"from": aggregator})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Finished):
        finished.closeAggregationWindow(last, {"from": outsider})
    with reverts_with("WrongRound", last, last + 1):
        finished.closeAggregationWindow(last + 1, {"from": outsider})
    # the last round's reveal was made already; a reveal for a round never committed has no commitment
    with reverts_with("AlreadyRevealed", aggregator.address, last):
        reveal(finished, aggregator, make_result(finished, last))
    with reverts_with("NoCommitment", aggregator.address, last + 1):
        reveal(finished, aggregator, make_result(finished, last + 1))
    with reverts_with("WrongPhase", Phase.Registering, Phase.Finished):
        finished.start({"from": admin})
    with reverts_with("TaskOver", Phase.Finished):
        finished.cancel({"from": admin})
    with reverts_with("TaskOver", Phase.Finished):
        finished.approveDevices([devices[3]], {"from": admin})
    with reverts_with("TaskOver", Phase.Finished):
        finished.requestJoin({"from": outsider})
    assert round_state(finished) == state


# ---------------------------------------------------------------- cancelling


@pytest.mark.parametrize("stage", ["task", "started", "aggregating", "revealing"])
def test_cancel(request, admin, stage):
    contract = request.getfixturevalue(stage)
    round_index = round_state(contract)["round"]
    tx = contract.cancel({"from": admin})
    event = tx.events["TaskCancelled"]
    assert event["by"] == admin
    assert event["round"] == round_index
    assert round_state(contract)["phase"] == Phase.Cancelled


@pytest.mark.parametrize("who", ["aggregator", "device", "outsider"])
def test_cancel_only_admin(started, aggregator, devices, outsider, who):
    sender = {"aggregator": aggregator, "device": devices[0], "outsider": outsider}[who]
    with reverts_with("AccessControlUnauthorizedAccount", sender.address, DEFAULT_ADMIN_ROLE):
        started.cancel({"from": sender})
    assert round_state(started)["phase"] == Phase.Open


def test_cancel_twice_reverts(cancelled, admin):
    with reverts_with("TaskOver", Phase.Cancelled):
        cancelled.cancel({"from": admin})


def test_nothing_works_after_cancel(aggregating, admin, aggregator, devices, outsider, chain):
    result = make_result(aggregating, 1)
    aggregating.cancel({"from": admin})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Cancelled):
        commit(aggregating, aggregator, result)
    with reverts_with("WrongPhase", Phase.Open, Phase.Cancelled):
        aggregating.submitUpdate(1, digest("x"), 1, {"from": devices[0]})
    chain.sleep(ROUND_DURATION)
    with reverts_with("WrongPhase", Phase.Open, Phase.Cancelled):
        aggregating.closeRound(1, {"from": outsider})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Cancelled):
        aggregating.closeAggregationWindow(1, {"from": outsider})
    with reverts_with("WrongPhase", Phase.Registering, Phase.Cancelled):
        aggregating.start({"from": admin})
    assert bytes(aggregating.roundModelDigest(1)) == ZERO_BYTES32


def test_cancel_during_revealing(revealing, admin, aggregator, outsider, chain):
    """The reveal that would have finalised the round is refused once the task is cancelled."""
    tx = revealing.cancel({"from": admin})
    assert tx.events["TaskCancelled"]["round"] == 1
    with reverts_with("WrongPhase", Phase.Revealing, Phase.Cancelled):
        reveal(revealing, aggregator, make_result(revealing, 1))
    chain.sleep(AGGREGATION_DURATION)
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Cancelled):
        revealing.closeAggregationWindow(1, {"from": outsider})
    assert round_state(revealing)["phase"] == Phase.Cancelled
    assert bytes(revealing.roundModelDigest(1)) == ZERO_BYTES32
    assert bytes(revealing.finalResultKey(1)) == ZERO_BYTES32


def test_cancel_before_start_blocks_start(task, admin):
    task.cancel({"from": admin})
    with reverts_with("WrongPhase", Phase.Registering, Phase.Cancelled):
        task.start({"from": admin})


# ---------------------------------------------------------------- full lifecycle


def test_full_lifecycle(federated_task, admin, aggregator, devices, accounts, chain):
    """NUM_ROUNDS rounds with three devices, one round closed by its deadline after an extension."""
    contract = federated_task.deploy(make_config(), admin, {"from": admin})
    contract.grantRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    for d in devices[:3]:
        contract.requestJoin({"from": d})
    contract.approveDevices(devices[:3], {"from": admin})
    assert contract.deviceCount() == 3
    contract.start({"from": admin})

    models = [bytes(contract.initialModelDigest())]
    for r in range(1, NUM_ROUNDS + 1):
        state = round_state(contract)
        assert state["round"] == r
        assert state["phase"] == Phase.Open
        assert state["globalModel"] == models[-1]
        assert state["inputsHash"] == initial_inputs_hash(contract.address, r)
        if r == 2:
            # a slow round: one update, the deadline extends it, a second update, the deadline closes it
            sub = [(devices[1].address, digest("r2-a"), 11)]
            contract.submitUpdate(2, sub[0][1], sub[0][2], {"from": devices[1]})
            chain.sleep(ROUND_DURATION)
            assert "RoundExtended" in contract.closeRound(2, {"from": accounts[9]}).events
            sub.append((devices[0].address, digest("r2-b"), 22))
            contract.submitUpdate(2, sub[1][1], sub[1][2], {"from": devices[0]})
            chain.sleep(ROUND_DURATION)
            assert "RoundReadyForAggregation" in contract.closeRound(2, {"from": accounts[9]}).events
        else:
            sub, _ = submit_round(contract, devices[:3][::-1] if r == 3 else devices[:3], r)
        inputs_hash = expected_inputs_hash(contract.address, r, sub)
        state = round_state(contract)
        assert state["phase"] == Phase.Aggregating
        assert state["inputsHash"] == inputs_hash
        assert state["updates"] == len(sub)
        assert state["totalSamples"] == sum(n for _, _, n in sub)
        for device, _, _ in sub:
            assert device_info(contract, device)[1] == r
        model = digest(f"global-{r}")
        tx = commit_then_reveal(
            contract, aggregator, r, inputs_hash=inputs_hash, model=model, salt=digest(f"secret-{r}"), accepted=len(sub)
        )
        assert tx.events["AggregateCommitted"]["round"] == r
        models.append(model)

    assert tx.events["TaskFinished"]["rounds"] == NUM_ROUNDS
    assert bytes(tx.events["TaskFinished"]["finalModelDigest"]) == models[-1]
    assert round_state(contract)["phase"] == Phase.Finished
    assert bytes(contract.globalModelDigest()) == models[-1]
    assert [bytes(contract.roundModelDigest(r)) for r in range(1, NUM_ROUNDS + 1)] == models[1:]
    assert contract.failedRounds() == 0
    assert aggregator_info(contract, aggregator)[:3] == (NUM_ROUNDS, True, 0)
    # device 2 sat round 2 out
    assert device_info(contract, devices[2]) == (True, 3, 0)
