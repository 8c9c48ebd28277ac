"""Differential-privacy ledger: epsilon in the agreed result, its checks, the budget that ends a task, failed rounds."""

import pytest
from conftest import (
    AGGREGATION_DURATION,
    ZERO_BYTES32,
    Phase,
    commit,
    commit_reveal,
    deploy_task,
    digest,
    make_config,
    make_result,
    reveal,
    reverts_with,
    round_state,
    submit_round,
)

from fedchain.chain.task import result_key

M = 1_000_000  # epsilon 1.0 in millionths


def ledger(task) -> tuple[int, int, int, int]:
    """privacyLedger(): (spent, increment, agreed, budget)."""
    return tuple(int(v) for v in task.privacyLedger())


@pytest.fixture
def dp_task(federated_task, admin, aggregator, devices):
    """Budget 5.0, first round 2.0, ten rounds; one aggregator (n = k = 1), three devices; started."""
    return deploy_task(
        federated_task,
        admin,
        [aggregator],
        devices[:3],
        numRounds=10,
        epsilonBudgetMicro=5 * M,
        firstRoundEpsilonMicro=2 * M,
    )


def run_round(task, aggregator, devices, r, epsilon):
    """Fill round r with three updates and finalise it with this cumulative epsilon; returns the reveal tx."""
    submit_round(task, devices[:3], r)
    return commit_reveal(task, aggregator, r, epsilon=epsilon)


def fail_round(task, aggregator, devices, r, chain):
    """Fill round r and let its commit window pass without a commitment: the round fails."""
    submit_round(task, devices[:3], r)
    chain.sleep(AGGREGATION_DURATION)
    tx = task.closeAggregationWindow(r, {"from": aggregator})
    assert "AggregationFailed" in tx.events
    return tx


# ---------------------------------------------------------------- configuration


def test_privacy_configured(federated_task, admin):
    contract = federated_task.deploy(
        make_config(secureAggregation=True, epsilonBudgetMicro=8 * M, firstRoundEpsilonMicro=M + 1),
        admin,
        {"from": admin},
    )
    event = contract.tx.events["PrivacyConfigured"]
    assert event["secureAggregation"] is True
    assert event["epsilonBudgetMicro"] == 8 * M
    assert event["firstRoundEpsilonMicro"] == M + 1
    assert contract.secureAggregation()
    assert contract.epsilonBudgetMicro() == 8 * M
    assert contract.firstRoundEpsilonMicro() == M + 1
    # before any round: nothing spent, the first round's epsilon bounds round 1
    assert ledger(contract) == (0, M + 1, 0, 8 * M)
    assert contract.privacyLedger()[0] == 0


def test_defaults_have_no_privacy(task):
    assert not task.secureAggregation()
    assert task.epsilonBudgetMicro() == 0
    assert task.firstRoundEpsilonMicro() == 0
    assert ledger(task) == (0, 0, 0, 0)
    event = task.tx.events["PrivacyConfigured"]
    assert (event["secureAggregation"], event["epsilonBudgetMicro"], event["firstRoundEpsilonMicro"]) == (False, 0, 0)


def test_first_round_epsilon_ignored_without_budget(federated_task, admin):
    contract = federated_task.deploy(make_config(firstRoundEpsilonMicro=3 * M), admin, {"from": admin})
    assert contract.firstRoundEpsilonMicro() == 0
    assert contract.tx.events["PrivacyConfigured"]["firstRoundEpsilonMicro"] == 0


def test_first_round_over_budget_is_refused(federated_task, admin):
    """A budget one round already exceeds: the constructor refuses it (so start() never sees one)."""
    with reverts_with("FirstRoundOverBudget", 2 * M + 1, 2 * M):
        federated_task.deploy(
            make_config(epsilonBudgetMicro=2 * M, firstRoundEpsilonMicro=2 * M + 1), admin, {"from": admin}
        )
    with reverts_with("InvalidConfig", "firstRoundEpsilonMicro is 0"):
        federated_task.deploy(make_config(epsilonBudgetMicro=2 * M), admin, {"from": admin})


def test_first_round_equal_to_budget_runs_exactly_one_round(federated_task, admin, aggregator, devices):
    task = deploy_task(
        federated_task,
        admin,
        [aggregator],
        devices[:3],
        numRounds=5,
        epsilonBudgetMicro=2 * M,
        firstRoundEpsilonMicro=2 * M,
    )
    assert round_state(task)["round"] == 1
    tx = run_round(task, aggregator, devices, 1, 2 * M)
    assert list(tx.events.keys()) == [
        "ResultRevealed",
        "AggregateCommitted",
        "EpsilonSpent",
        "PrivacyBudgetExhausted",
        "TaskFinished",
    ]
    assert round_state(task)["phase"] == Phase.Finished


# ---------------------------------------------------------------- finalisation records epsilon


def test_finalisation_records_epsilon(dp_task, aggregator, devices):
    tx = run_round(dp_task, aggregator, devices, 1, 2 * M)
    assert list(tx.events.keys()) == ["ResultRevealed", "AggregateCommitted", "EpsilonSpent", "RoundOpened"]
    assert tx.events["ResultRevealed"]["epsilonMicro"] == 2 * M
    assert tx.events["AggregateCommitted"]["epsilonMicro"] == 2 * M
    spent = tx.events["EpsilonSpent"]
    assert (spent["round"], spent["spentMicro"], spent["incrementMicro"]) == (1, 2 * M, 2 * M)
    assert dp_task.roundEpsilonMicro(1) == 2 * M
    assert dp_task.privacyLedger()[0] == 2 * M
    assert ledger(dp_task) == (2 * M, 2 * M, 2 * M, 5 * M)
    result = make_result(dp_task, 1)
    assert bytes(dp_task.finalResultKey(1)) != ZERO_BYTES32
    assert bytes(dp_task.finalResultKey(1)) == result_key(
        bytes(tx.events["AggregateCommitted"]["inputsHash"]), result.model, 3, epsilon_micro=2 * M
    )

    # round 2 measures the increment from round 1's agreed value
    run_round(dp_task, aggregator, devices, 2, 2_800_000)
    assert ledger(dp_task) == (2_800_000, 800_000, 2_800_000, 5 * M)
    assert dp_task.roundEpsilonMicro(2) == 2_800_000


def test_budget_ends_the_task_before_a_round_could_exceed_it(dp_task, aggregator, devices):
    """Budget 5.0: 2.0 (next <= 4.0), 3.0 (next <= 4.0), 3.9 (next <= 4.8), 4.5 (next <= 5.1 > 5.0: finished)."""
    for r, epsilon in [(1, 2 * M), (2, 3 * M), (3, 3_900_000)]:
        tx = run_round(dp_task, aggregator, devices, r, epsilon)
        assert "RoundOpened" in tx.events and "PrivacyBudgetExhausted" not in tx.events
    tx = run_round(dp_task, aggregator, devices, 4, 4_500_000)
    assert list(tx.events.keys()) == [
        "ResultRevealed",
        "AggregateCommitted",
        "EpsilonSpent",
        "PrivacyBudgetExhausted",
        "TaskFinished",
    ]
    exhausted = tx.events["PrivacyBudgetExhausted"]
    assert (exhausted["round"], exhausted["spentMicro"], exhausted["budgetMicro"]) == (4, 4_500_000, 5 * M)
    assert tx.events["TaskFinished"]["rounds"] == 4
    assert bytes(tx.events["TaskFinished"]["finalModelDigest"]) == digest("model-4")
    state = round_state(dp_task)
    assert state["phase"] == Phase.Finished and state["round"] == 4
    assert ledger(dp_task) == (4_500_000, 600_000, 4_500_000, 5 * M)
    with reverts_with("WrongPhase", Phase.Open, Phase.Finished):
        dp_task.submitUpdate(5, digest("late"), 10, {"from": devices[0]})


def test_a_round_that_exactly_reaches_the_budget_may_open(dp_task, aggregator, devices):
    """spent + increment == budget is within the budget: 2.0, then 3.5 (next <= 5.0) opens round 3."""
    run_round(dp_task, aggregator, devices, 1, 2 * M)
    tx = run_round(dp_task, aggregator, devices, 2, 3_500_000)
    assert "RoundOpened" in tx.events
    assert ledger(dp_task)[:2] == (3_500_000, 1_500_000)


def test_last_round_finishes_without_exhaustion(federated_task, admin, aggregator, devices):
    task = deploy_task(
        federated_task,
        admin,
        [aggregator],
        devices[:3],
        numRounds=2,
        epsilonBudgetMicro=50 * M,
        firstRoundEpsilonMicro=M,
    )
    run_round(task, aggregator, devices, 1, M)
    tx = run_round(task, aggregator, devices, 2, 1_400_000)
    assert list(tx.events.keys()) == ["ResultRevealed", "AggregateCommitted", "EpsilonSpent", "TaskFinished"]


def test_epsilon_above_the_bound_or_the_budget_is_refused(federated_task, admin, dp_task, aggregator, devices):
    """Review L1: an epsilon above the budget was accepted. Now a reveal's epsilon is at most the charged one plus
    the increment bound (plus one millionth of rounding) and never above the budget (EpsilonTooHigh): no vote."""
    submit_round(dp_task, devices[:3], 1)
    over = make_result(dp_task, 1, epsilon=5_500_000)
    commit(dp_task, aggregator, over)
    with reverts_with("EpsilonTooHigh", 5_500_000, 2 * M + 1):
        reveal(dp_task, aggregator, over)
    assert dp_task.aggregationState()[1] == 0 and ledger(dp_task)[0] == 0
    # round 1 at 2.0, round 2 at 3.5 (increment 1.5): 3.5 + 1.5 <= 5.0 opens round 3, whose bound (5.000001) is cut
    # to the budget
    task = deploy_task(
        federated_task,
        admin,
        [aggregator],
        devices[:3],
        numRounds=10,
        epsilonBudgetMicro=5 * M,
        firstRoundEpsilonMicro=2 * M,
    )
    run_round(task, aggregator, devices, 1, 2 * M)
    run_round(task, aggregator, devices, 2, 3_500_000)
    assert ledger(task) == (3_500_000, 1_500_000, 3_500_000, 5 * M)
    submit_round(task, devices[:3], 3)
    above = make_result(task, 3, epsilon=5 * M + 1)
    commit(task, aggregator, above)
    with reverts_with("EpsilonTooHigh", 5 * M + 1, 5 * M):
        reveal(task, aggregator, above)


# ---------------------------------------------------------------- epsilon checks at reveal


def test_decreasing_epsilon_is_refused(dp_task, aggregator, devices):
    run_round(dp_task, aggregator, devices, 1, 2 * M)
    submit_round(dp_task, devices[:3], 2)
    low = make_result(dp_task, 2, epsilon=2 * M - 1)
    commit(dp_task, aggregator, low)
    with reverts_with("EpsilonTooLow", 2 * M - 1, 2 * M + 1):
        reveal(dp_task, aggregator, low)
    assert round_state(dp_task)["phase"] == Phase.Revealing
    assert dp_task.aggregationState()[1] == 0  # no vote counted


def test_equal_epsilon_is_refused(dp_task, aggregator, devices):
    """Review L1: an unchanged epsilon (increment 0) made every later round free. Every round costs privacy: the
    epsilon must grow (EpsilonTooLow below the last agreed value + 1)."""
    run_round(dp_task, aggregator, devices, 1, 2 * M)
    submit_round(dp_task, devices[:3], 2)
    same = make_result(dp_task, 2, epsilon=2 * M)
    commit(dp_task, aggregator, same)
    with reverts_with("EpsilonTooLow", 2 * M, 2 * M + 1):
        reveal(dp_task, aggregator, same)
    assert ledger(dp_task) == (2 * M, 2 * M, 2 * M, 5 * M)


def test_constant_epsilon_no_longer_runs_twenty_rounds(federated_task, admin, aggregator, devices, chain):
    """Review L1, the attack: n = k = 1, budget 2.0, first round 0.5, 20 rounds; the aggregator reports epsilon 0.5
    after every round. Before the fix all 20 rounds were agreed on a 2.0 budget. Now only round 1 is: every later
    report is refused, each failed round is charged the 0.5 increment, and the task finishes on its budget after
    round 4 with one aggregate."""
    task = deploy_task(
        federated_task,
        admin,
        [aggregator],
        devices[:3],
        numRounds=20,
        epsilonBudgetMicro=2 * M,
        firstRoundEpsilonMicro=M // 2,
    )
    agreed = 0
    for r in range(1, 21):
        if round_state(task)["phase"] == Phase.Finished:
            break
        submit_round(task, devices[:3], r)
        result = make_result(task, r, epsilon=M // 2)
        if r == 1:
            task.submitResult(
                r, result.inputs_hash, result.model, result.report, result.accepted, M // 2, {"from": aggregator}
            )
            agreed += 1
            continue
        with reverts_with("EpsilonTooLow", M // 2, M // 2 + 1):
            task.submitResult(
                r, result.inputs_hash, result.model, result.report, result.accepted, M // 2, {"from": aggregator}
            )
        chain.sleep(AGGREGATION_DURATION)
        task.closeAggregationWindow(r, {"from": aggregator})
    assert agreed == 1
    assert round_state(task)["phase"] == Phase.Finished and round_state(task)["round"] == 4
    assert task.failedRounds() == 3
    assert ledger(task)[0] == 2 * M  # 0.5 agreed + 3 failed rounds at 0.5: exactly the budget


@pytest.mark.parametrize("epsilon", [0, 2 * M - 1])
def test_epsilon_below_the_first_round_is_refused(dp_task, aggregator, devices, epsilon):
    """Epsilon 0 (an aggregator unaware of the ledger) or below the deployer's first-round value never finalises."""
    submit_round(dp_task, devices[:3], 1)
    result = make_result(dp_task, 1, epsilon=epsilon)
    commit(dp_task, aggregator, result)
    with reverts_with("EpsilonTooLow", epsilon, 2 * M):
        reveal(dp_task, aggregator, result)


def test_no_ledger_accepts_any_epsilon_and_records_nothing(started, aggregator, devices):
    submit_round(started, devices[:3], 1)
    tx = commit_reveal(started, aggregator, 1, epsilon=123)
    assert tx.events["AggregateCommitted"]["epsilonMicro"] == 123
    assert "EpsilonSpent" not in tx.events
    assert started.roundEpsilonMicro(1) == 0
    assert ledger(started) == (0, 0, 0, 0)


def test_aggregators_must_agree_on_epsilon(federated_task, admin, aggregators, devices):
    """Epsilon is in the result key: a reveal that differs only in epsilon is a fault."""
    task = deploy_task(
        federated_task,
        admin,
        aggregators,
        devices[:3],
        aggregatorThreshold=2,
        epsilonBudgetMicro=10 * M,
        firstRoundEpsilonMicro=M,
    )
    submit_round(task, devices[:3], 1)
    honest = make_result(task, 1, epsilon=M)
    results = {
        aggregators[0]: honest.but(epsilon=M + 1, salt=digest("s0")),
        aggregators[1]: honest.but(salt=digest("s1")),
        aggregators[2]: honest.but(salt=digest("s2")),
    }
    for a, res in results.items():
        commit(task, a, res)
    reveal(task, aggregators[0], results[aggregators[0]])
    assert "AggregateCommitted" not in reveal(task, aggregators[1], results[aggregators[1]]).events
    tx = reveal(task, aggregators[2], results[aggregators[2]])
    assert tx.events["AggregateCommitted"]["epsilonMicro"] == M
    fault = tx.events["AggregatorFault"]
    assert fault["aggregator"] == aggregators[0] and fault["faults"] == 1
    assert task.privacyLedger()[0] == M


# ---------------------------------------------------------------- failed rounds


def test_failed_round_spends_an_increment(dp_task, aggregator, devices, chain):
    """A failed round 1 charges the first round's epsilon; round 2's agreed value replaces the estimate but does not
    re-measure the increment (it would be measured from an over-estimate)."""
    tx = fail_round(dp_task, aggregator, devices, 1, chain)
    assert list(tx.events.keys()) == ["AggregationFailed", "EpsilonSpent", "RoundOpened"]
    spent = tx.events["EpsilonSpent"]
    assert (spent["round"], spent["spentMicro"], spent["incrementMicro"]) == (1, 2 * M, 2 * M)
    assert dp_task.roundEpsilonMicro(1) == 2 * M
    assert ledger(dp_task) == (2 * M, 2 * M, 0, 5 * M)

    run_round(dp_task, aggregator, devices, 2, 2_800_000)
    assert ledger(dp_task) == (2_800_000, 2 * M, 2_800_000, 5 * M)
    # 2.8 + 2.0 <= 5.0: round 3 opened; now both values are agreed ones and the increment is measured
    run_round(dp_task, aggregator, devices, 3, 3_400_000)
    assert ledger(dp_task) == (3_400_000, 600_000, 3_400_000, 5 * M)


def test_agreed_epsilon_below_a_failed_rounds_charge(federated_task, admin, aggregator, devices, chain):
    """Round 2 fails (charged 2.0 + 2.0 = 4.0); the accountant's true epsilon after round 3 (3.46) is below that
    charge but above the last agreed value: accepted, the charge stays, the increment bound stays 2.0."""
    task = deploy_task(
        federated_task,
        admin,
        [aggregator],
        devices[:3],
        numRounds=10,
        epsilonBudgetMicro=10 * M,
        firstRoundEpsilonMicro=2 * M,
    )
    run_round(task, aggregator, devices, 1, 2 * M)
    fail_round(task, aggregator, devices, 2, chain)
    assert ledger(task) == (4 * M, 2 * M, 2 * M, 10 * M)
    assert task.roundEpsilonMicro(2) == 4 * M
    tx = run_round(task, aggregator, devices, 3, 3_460_000)
    assert tx.events["AggregateCommitted"]["epsilonMicro"] == 3_460_000
    assert tx.events["EpsilonSpent"]["spentMicro"] == 4 * M
    assert ledger(task) == (4 * M, 2 * M, 3_460_000, 10 * M)
    assert task.roundEpsilonMicro(3) == 4 * M
    # still below the last agreed value is refused
    submit_round(task, devices[:3], 4)
    low = make_result(task, 4, epsilon=3_459_999)
    commit(task, aggregator, low)
    with reverts_with("EpsilonTooLow", 3_459_999, 3_460_001):
        reveal(task, aggregator, low)


def test_failed_round_can_exhaust_the_budget(dp_task, aggregator, devices, chain):
    """Budget 5.0: round 1 agreed at 2.0; round 2 fails, charged 4.0; 4.0 + 2.0 > 5.0: the task finishes."""
    run_round(dp_task, aggregator, devices, 1, 2 * M)
    tx = fail_round(dp_task, aggregator, devices, 2, chain)
    assert list(tx.events.keys()) == ["AggregationFailed", "EpsilonSpent", "PrivacyBudgetExhausted", "TaskFinished"]
    exhausted = tx.events["PrivacyBudgetExhausted"]
    assert (exhausted["round"], exhausted["spentMicro"], exhausted["budgetMicro"]) == (2, 4 * M, 5 * M)
    finished = tx.events["TaskFinished"]
    assert bytes(finished["finalModelDigest"]) == digest("model-1")
    assert finished["rounds"] == 2
    state = round_state(dp_task)
    assert state["phase"] == Phase.Finished and state["round"] == 2
    assert dp_task.failedRounds() == 1
    assert dp_task.privacyLedger()[0] == 4 * M


def test_failed_round_without_ledger_charges_nothing(aggregating, aggregator, chain):
    chain.sleep(AGGREGATION_DURATION)
    tx = aggregating.closeAggregationWindow(1, {"from": aggregator})
    assert list(tx.events.keys()) == ["AggregationFailed", "RoundOpened"]
    assert aggregating.roundEpsilonMicro(1) == 0
