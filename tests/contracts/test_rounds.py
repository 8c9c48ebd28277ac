"""Rounds: start, deadlines, closing at maxUpdates, closeRound (aggregate or extend)."""

import pytest
from conftest import (
    AGGREGATION_DURATION,
    DEFAULT_ADMIN_ROLE,
    MAX_UPDATES,
    MIN_UPDATES,
    ROUND_DURATION,
    Phase,
    commit_reveal,
    digest,
    expected_inputs_hash,
    make_config,
    reverts_with,
    round_state,
    set_next_block_timestamp,
    submit_round,
)

# ---------------------------------------------------------------- start


def test_start_opens_round_one(task, admin):
    tx = task.start({"from": admin})
    event = tx.events["RoundOpened"]
    assert event["round"] == 1
    assert bytes(event["globalModelDigest"]) == bytes(task.initialModelDigest())
    assert event["deadline"] == tx.timestamp + ROUND_DURATION
    state = round_state(task)
    assert state["round"] == 1
    assert state["phase"] == Phase.Open
    assert state["deadline"] == tx.timestamp + ROUND_DURATION
    assert state["updates"] == 0
    assert state["totalSamples"] == 0
    assert state["globalModel"] == bytes(task.initialModelDigest())


def test_start_only_once(started, admin):
    with reverts_with("WrongPhase", Phase.Registering, Phase.Open):
        started.start({"from": admin})


def test_start_while_aggregating_reverts(aggregating, admin):
    with reverts_with("WrongPhase", Phase.Registering, Phase.Aggregating):
        aggregating.start({"from": admin})


@pytest.mark.parametrize("who", ["aggregator", "device", "outsider"])
def test_start_only_admin(task, aggregator, devices, outsider, who):
    sender = {"aggregator": aggregator, "device": devices[0], "outsider": outsider}[who]
    with reverts_with("AccessControlUnauthorizedAccount", sender.address, DEFAULT_ADMIN_ROLE):
        task.start({"from": sender})
    assert round_state(task)["phase"] == Phase.Registering


def test_start_with_no_devices(federated_task, admin, aggregator):
    """Nothing requires devices before start: they may join the open round (an aggregator is needed: k <= n)."""
    contract = federated_task.deploy(make_config(), admin, {"from": admin})
    contract.grantRole(contract.AGGREGATOR_ROLE(), aggregator, {"from": admin})
    contract.start({"from": admin})
    assert contract.deviceCount() == 0
    assert round_state(contract)["phase"] == Phase.Open


# ---------------------------------------------------------------- closing at maxUpdates


def test_max_updates_closes_round(started, devices):
    submissions, txs = submit_round(started, devices[:MAX_UPDATES], 1, samples=[5, 6, 7])
    for tx in txs[:-1]:
        assert "RoundReadyForAggregation" not in tx.events
    ready = txs[-1].events["RoundReadyForAggregation"]
    assert ready["round"] == 1
    assert ready["updates"] == MAX_UPDATES
    assert ready["totalSamples"] == 18
    assert bytes(ready["inputsHash"]) == expected_inputs_hash(started.address, 1, submissions)
    # UpdateSubmitted comes first, then the round closes
    assert list(txs[-1].events.keys()) == ["UpdateSubmitted", "RoundReadyForAggregation"]
    state = round_state(started)
    assert state["phase"] == Phase.Aggregating
    assert state["round"] == 1
    assert state["updates"] == MAX_UPDATES
    # the round's deadline is now the commit window's
    assert state["deadline"] == txs[-1].timestamp + AGGREGATION_DURATION


def test_round_closes_before_deadline_at_max(started, devices, chain):
    """maxUpdates closes the round at once, long before the deadline."""
    submit_round(started, devices[:MAX_UPDATES], 1)
    assert chain[-1].timestamp < round_state(started)["deadline"]
    assert round_state(started)["phase"] == Phase.Aggregating


# ---------------------------------------------------------------- closeRound


def test_close_before_deadline_reverts(started, devices):
    submit_round(started, devices[:MIN_UPDATES], 1)
    deadline = round_state(started)["deadline"]
    set_next_block_timestamp(deadline - 1)
    with reverts_with("DeadlineNotReached", deadline, deadline - 1):
        started.closeRound(1, {"from": devices[0]})
    assert round_state(started)["phase"] == Phase.Open


def test_close_right_after_start_reverts(started, devices, chain):
    deadline = round_state(started)["deadline"]
    now = chain[-1].timestamp + 1
    set_next_block_timestamp(now)
    with reverts_with("DeadlineNotReached", deadline, now):
        started.closeRound(1, {"from": devices[0]})


def test_close_exactly_at_deadline_with_min_updates(started, devices):
    submissions, _ = submit_round(started, devices[:MIN_UPDATES], 1, samples=[4, 9])
    deadline = round_state(started)["deadline"]
    set_next_block_timestamp(deadline)
    tx = started.closeRound(1, {"from": devices[0]})
    ready = tx.events["RoundReadyForAggregation"]
    assert ready["round"] == 1
    assert ready["updates"] == MIN_UPDATES
    assert ready["totalSamples"] == 13
    assert bytes(ready["inputsHash"]) == expected_inputs_hash(started.address, 1, submissions)
    assert "RoundExtended" not in tx.events
    assert round_state(started)["phase"] == Phase.Aggregating
    assert round_state(started)["deadline"] == deadline + AGGREGATION_DURATION


def test_close_after_deadline_with_min_updates(started, devices, chain, aggregator):
    submit_round(started, devices[:MIN_UPDATES], 1)
    chain.sleep(ROUND_DURATION + 60)
    tx = started.closeRound(1, {"from": devices[2]})
    assert tx.events["RoundReadyForAggregation"]["updates"] == MIN_UPDATES
    assert round_state(started)["phase"] == Phase.Aggregating
    commit_reveal(started, aggregator, 1)
    assert round_state(started)["round"] == 2


@pytest.mark.parametrize("updates", [0, MIN_UPDATES - 1])
def test_close_with_too_few_updates_extends(started, devices, chain, updates):
    submit_round(started, devices[:updates], 1)
    old_deadline = round_state(started)["deadline"]
    chain.sleep(ROUND_DURATION + 30)
    tx = started.closeRound(1, {"from": devices[0]})
    event = tx.events["RoundExtended"]
    assert event["round"] == 1
    assert event["newDeadline"] == tx.timestamp + ROUND_DURATION
    assert event["newDeadline"] > old_deadline + ROUND_DURATION  # extended from now, not from the old deadline
    assert event["updates"] == updates
    assert "RoundReadyForAggregation" not in tx.events
    state = round_state(started)
    assert state["phase"] == Phase.Open
    assert state["round"] == 1
    assert state["deadline"] == event["newDeadline"]
    assert state["updates"] == updates


def test_extended_round_takes_more_updates_then_closes(started, devices, chain, aggregator):
    started.submitUpdate(1, digest("first"), 3, {"from": devices[0]})
    chain.sleep(ROUND_DURATION)
    new_deadline = started.closeRound(1, {"from": devices[0]}).events["RoundExtended"]["newDeadline"]
    # the round stays open: a second update arrives
    started.submitUpdate(1, digest("second"), 4, {"from": devices[1]})
    # the new deadline must pass too
    set_next_block_timestamp(new_deadline - 1)
    with reverts_with("DeadlineNotReached", new_deadline, new_deadline - 1):
        started.closeRound(1, {"from": devices[0]})
    chain.sleep(ROUND_DURATION)
    tx = started.closeRound(1, {"from": devices[0]})
    assert tx.events["RoundReadyForAggregation"]["updates"] == 2
    assert tx.events["RoundReadyForAggregation"]["totalSamples"] == 7
    commit_reveal(started, aggregator, 1)
    assert round_state(started)["round"] == 2


def test_extended_round_closes_at_max(started, devices, chain):
    chain.sleep(ROUND_DURATION)
    started.closeRound(1, {"from": devices[0]})
    _, txs = submit_round(started, devices[:MAX_UPDATES], 1)
    assert "RoundReadyForAggregation" in txs[-1].events
    assert round_state(started)["phase"] == Phase.Aggregating


def test_extension_can_repeat(started, devices, chain):
    deadlines = [round_state(started)["deadline"]]
    for _ in range(3):
        chain.sleep(ROUND_DURATION)
        tx = started.closeRound(1, {"from": devices[0]})
        deadlines.append(tx.events["RoundExtended"]["newDeadline"])
    assert deadlines == sorted(deadlines)
    assert len(set(deadlines)) == 4
    assert round_state(started)["phase"] == Phase.Open


def test_submit_after_deadline_before_close_is_accepted(started, devices, chain):
    """The deadline is soft: until someone calls closeRound, the open round keeps accepting updates."""
    submit_round(started, devices[:MIN_UPDATES], 1)
    deadline = round_state(started)["deadline"]
    chain.sleep(ROUND_DURATION * 2)
    tx = started.submitUpdate(1, digest("late"), 1, {"from": devices[2]})
    assert tx.timestamp > deadline
    assert "RoundReadyForAggregation" in tx.events  # it was the MAX_UPDATES-th
    # the round's deadline is now the commit window's
    assert round_state(started)["deadline"] == tx.timestamp + AGGREGATION_DURATION


@pytest.mark.parametrize("given", [0, 2])
def test_close_wrong_round_reverts(started, devices, chain, given):
    chain.sleep(ROUND_DURATION)
    with reverts_with("WrongRound", 1, given):
        started.closeRound(given, {"from": devices[0]})


def test_close_past_round_reverts(started, devices, chain, aggregator):
    submit_round(started, devices[:3], 1)
    commit_reveal(started, aggregator, 1)
    chain.sleep(ROUND_DURATION)
    with reverts_with("WrongRound", 2, 1):
        started.closeRound(1, {"from": devices[0]})


def test_close_before_start_reverts(task, devices):
    with reverts_with("WrongPhase", Phase.Open, Phase.Registering):
        task.closeRound(0, {"from": devices[0]})


def test_close_while_aggregating_reverts(aggregating, devices, chain):
    chain.sleep(ROUND_DURATION)
    with reverts_with("WrongPhase", Phase.Open, Phase.Aggregating):
        aggregating.closeRound(1, {"from": devices[0]})


def test_close_twice_reverts(started, devices, chain):
    submit_round(started, devices[:MIN_UPDATES], 1)
    chain.sleep(ROUND_DURATION)
    started.closeRound(1, {"from": devices[0]})
    with reverts_with("WrongPhase", Phase.Open, Phase.Aggregating):
        started.closeRound(1, {"from": devices[0]})


@pytest.mark.parametrize(("end", "phase"), [("finished", Phase.Finished), ("cancelled", Phase.Cancelled)])
def test_close_after_task_over_reverts(request, devices, chain, end, phase):
    contract = request.getfixturevalue(end)
    chain.sleep(ROUND_DURATION)
    with reverts_with("WrongPhase", Phase.Open, phase):
        contract.closeRound(round_state(contract)["round"], {"from": devices[0]})


@pytest.mark.parametrize("who", ["outsider", "admin", "aggregator", "device", "unapproved_device"])
def test_anyone_can_close(started, devices, outsider, admin, aggregator, chain, who):
    sender = {
        "outsider": outsider,
        "admin": admin,
        "aggregator": aggregator,
        "device": devices[0],
        "unapproved_device": devices[3],
    }[who]
    submit_round(started, devices[:MIN_UPDATES], 1)
    chain.sleep(ROUND_DURATION)
    tx = started.closeRound(1, {"from": sender})
    assert "RoundReadyForAggregation" in tx.events


def test_next_round_deadline_from_finalising_reveal_time(aggregating, aggregator, chain):
    chain.sleep(100)
    tx = commit_reveal(aggregating, aggregator, 1)
    assert "AggregateCommitted" in tx.events
    opened = tx.events["RoundOpened"]
    assert opened["round"] == 2
    assert opened["deadline"] == tx.timestamp + ROUND_DURATION
    assert round_state(aggregating)["deadline"] == tx.timestamp + ROUND_DURATION
