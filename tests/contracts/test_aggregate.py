"""commitAggregate, finishing and cancelling, and a full lifecycle."""

import pytest
from conftest import (
    AGGREGATOR_ROLE,
    DEFAULT_ADMIN_ROLE,
    NUM_ROUNDS,
    ROUND_DURATION,
    ZERO_BYTES32,
    Phase,
    commit_round,
    device_info,
    digest,
    expected_inputs_hash,
    initial_inputs_hash,
    make_config,
    reverts_with,
    round_state,
    submit_round,
)

MODEL = digest("model-1")
REPORT = digest("report-1")


def commit(task, sender, round_index=1, inputs_hash=None, model=MODEL, report=REPORT, accepted=3):
    if inputs_hash is None:
        inputs_hash = round_state(task)["inputsHash"]
    return task.commitAggregate(round_index, inputs_hash, model, report, accepted, {"from": sender})


# ---------------------------------------------------------------- success


def test_commit_emits_and_opens_next_round(started, devices, aggregator):
    submissions, _ = submit_round(started, devices[:3], 1)
    inputs_hash = expected_inputs_hash(started.address, 1, submissions)
    tx = started.commitAggregate(1, inputs_hash, MODEL, REPORT, 2, {"from": aggregator})

    committed = tx.events["AggregateCommitted"]
    assert committed["round"] == 1
    assert committed["aggregator"] == aggregator
    assert bytes(committed["modelDigest"]) == MODEL
    assert bytes(committed["reportDigest"]) == REPORT
    assert bytes(committed["inputsHash"]) == inputs_hash
    assert committed["acceptedUpdates"] == 2

    opened = tx.events["RoundOpened"]
    assert opened["round"] == 2
    assert bytes(opened["globalModelDigest"]) == MODEL
    assert opened["deadline"] == tx.timestamp + ROUND_DURATION
    assert list(tx.events.keys()) == ["AggregateCommitted", "RoundOpened"]
    assert "TaskFinished" not in tx.events

    assert bytes(started.globalModelDigest()) == MODEL
    assert bytes(started.roundModelDigest(1)) == MODEL
    assert bytes(started.roundModelDigest(2)) == ZERO_BYTES32
    state = round_state(started)
    assert state["round"] == 2
    assert state["phase"] == Phase.Open
    assert state["globalModel"] == MODEL
    assert state["updates"] == 0
    assert state["totalSamples"] == 0
    assert state["inputsHash"] == initial_inputs_hash(started.address, 2)


@pytest.mark.parametrize("accepted", [0, 1, 3])
def test_commit_accepted_up_to_submitted(aggregating, aggregator, accepted):
    tx = commit(aggregating, aggregator, accepted=accepted)
    assert tx.events["AggregateCommitted"]["acceptedUpdates"] == accepted


def test_commit_after_deadline_close(started, devices, aggregator, chain):
    submissions, _ = submit_round(started, devices[:2], 1)
    chain.sleep(ROUND_DURATION)
    started.closeRound(1, {"from": devices[0]})
    with reverts_with("TooManyAccepted", 3, 2):
        commit(started, aggregator, accepted=3)
    tx = commit(started, aggregator, inputs_hash=expected_inputs_hash(started.address, 1, submissions), accepted=2)
    assert tx.events["AggregateCommitted"]["acceptedUpdates"] == 2


def test_any_aggregator_can_commit(aggregating, admin, accounts):
    second = accounts[8]
    aggregating.grantRole(AGGREGATOR_ROLE, second, {"from": admin})
    tx = commit(aggregating, second)
    assert tx.events["AggregateCommitted"]["aggregator"] == second


# ---------------------------------------------------------------- reverts


@pytest.mark.parametrize("who", ["admin", "device", "outsider"])
def test_commit_only_aggregator(aggregating, admin, devices, outsider, who):
    sender = {"admin": admin, "device": devices[0], "outsider": outsider}[who]
    with reverts_with("AccessControlUnauthorizedAccount", sender.address, AGGREGATOR_ROLE):
        commit(aggregating, sender)
    assert round_state(aggregating)["phase"] == Phase.Aggregating


def test_commit_while_registering_reverts(task, aggregator):
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Registering):
        task.commitAggregate(0, b"\x00" * 20, MODEL, REPORT, 0, {"from": aggregator})


def test_commit_while_open_reverts(started, devices, aggregator):
    submit_round(started, devices[:2], 1)
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Open):
        commit(started, aggregator, accepted=2)


@pytest.mark.parametrize("given", [0, 2])
def test_commit_wrong_round_reverts(aggregating, aggregator, given):
    with reverts_with("WrongRound", 1, given):
        commit(aggregating, aggregator, round_index=given)


def test_commit_wrong_inputs_hash_reverts(aggregating, aggregator, devices):
    onchain = round_state(aggregating)["inputsHash"]
    wrong = [
        b"\x00" * 20,
        b"\x01" * 20,
        initial_inputs_hash(aggregating.address, 1),
        # the right updates in the wrong order
        expected_inputs_hash(
            aggregating.address,
            1,
            [(devices[i].address, digest(f"u-1-{i}"), 100 + 10 * i) for i in (2, 1, 0)],
        ),
        # the first two updates only
        expected_inputs_hash(
            aggregating.address, 1, [(devices[i].address, digest(f"u-1-{i}"), 100 + 10 * i) for i in (0, 1)]
        ),
    ]
    # sanity: the in-order chain is the on-chain value
    assert onchain == expected_inputs_hash(
        aggregating.address, 1, [(devices[i].address, digest(f"u-1-{i}"), 100 + 10 * i) for i in (0, 1, 2)]
    )
    for given in wrong:
        with reverts_with("InputsMismatch", onchain, given):
            commit(aggregating, aggregator, inputs_hash=given)
    assert round_state(aggregating)["phase"] == Phase.Aggregating


@pytest.mark.parametrize(("model", "report"), [(ZERO_BYTES32, REPORT), (MODEL, ZERO_BYTES32), (ZERO_BYTES32,) * 2])
def test_commit_empty_digest_reverts(aggregating, aggregator, model, report):
    with reverts_with("EmptyDigest"):
        commit(aggregating, aggregator, model=model, report=report)


@pytest.mark.parametrize("accepted", [4, 2**32 - 1])
def test_commit_too_many_accepted_reverts(aggregating, aggregator, accepted):
    with reverts_with("TooManyAccepted", accepted, 3):
        commit(aggregating, aggregator, accepted=accepted)


def test_commit_twice_reverts(aggregating, aggregator):
    inputs_hash = round_state(aggregating)["inputsHash"]
    commit(aggregating, aggregator, inputs_hash=inputs_hash)
    # the same transaction again: round 1 is no longer aggregating
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Open):
        commit(aggregating, aggregator, inputs_hash=inputs_hash)
    assert bytes(aggregating.roundModelDigest(1)) == MODEL


def test_commit_twice_once_next_round_aggregates(aggregating, aggregator, devices):
    inputs_hash = round_state(aggregating)["inputsHash"]
    commit(aggregating, aggregator, inputs_hash=inputs_hash)
    submit_round(aggregating, devices[:3], 2)
    with reverts_with("WrongRound", 2, 1):
        commit(aggregating, aggregator, inputs_hash=inputs_hash, model=digest("other"))
    assert bytes(aggregating.roundModelDigest(1)) == MODEL


# ---------------------------------------------------------------- finishing


def test_last_round_finishes_task(started, devices, aggregator):
    for r in range(1, NUM_ROUNDS):
        submit_round(started, devices[:3], r)
        commit_round(started, aggregator, r)
    submit_round(started, devices[:3], NUM_ROUNDS)
    final = digest("final")
    tx = commit(started, aggregator, round_index=NUM_ROUNDS, model=final)
    assert tx.events["AggregateCommitted"]["round"] == NUM_ROUNDS
    finished = tx.events["TaskFinished"]
    assert bytes(finished["finalModelDigest"]) == final
    assert finished["rounds"] == NUM_ROUNDS
    assert "RoundOpened" not in tx.events
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
    tx = commit(contract, aggregator, accepted=1)
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
        finished.commitAggregate(last, state["inputsHash"], MODEL, REPORT, 0, {"from": aggregator})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Finished):
        finished.commitAggregate(last + 1, state["inputsHash"], MODEL, REPORT, 0, {"from": aggregator})
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


@pytest.mark.parametrize("stage", ["task", "started", "aggregating"])
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
    inputs_hash = round_state(aggregating)["inputsHash"]
    aggregating.cancel({"from": admin})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Cancelled):
        commit(aggregating, aggregator, inputs_hash=inputs_hash)
    with reverts_with("WrongPhase", Phase.Open, Phase.Cancelled):
        aggregating.submitUpdate(1, digest("x"), 1, {"from": devices[0]})
    chain.sleep(ROUND_DURATION)
    with reverts_with("WrongPhase", Phase.Open, Phase.Cancelled):
        aggregating.closeRound(1, {"from": outsider})
    with reverts_with("WrongPhase", Phase.Registering, Phase.Cancelled):
        aggregating.start({"from": admin})
    assert bytes(aggregating.roundModelDigest(1)) == ZERO_BYTES32


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
        tx = contract.commitAggregate(r, inputs_hash, model, digest(f"report-{r}"), len(sub), {"from": aggregator})
        assert tx.events["AggregateCommitted"]["round"] == r
        models.append(model)

    assert tx.events["TaskFinished"]["rounds"] == NUM_ROUNDS
    assert bytes(tx.events["TaskFinished"]["finalModelDigest"]) == models[-1]
    assert round_state(contract)["phase"] == Phase.Finished
    assert bytes(contract.globalModelDigest()) == models[-1]
    assert [bytes(contract.roundModelDigest(r)) for r in range(1, NUM_ROUNDS + 1)] == models[1:]
    # device 2 sat round 2 out
    assert device_info(contract, devices[2]) == (True, 3, 0)
