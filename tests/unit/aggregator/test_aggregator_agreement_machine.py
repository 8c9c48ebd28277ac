"""The aggregator's agreement machine as pure transitions over chain state: which of submit, commit, reveal or close
each state asks for, and which earlier round is still to be revealed; the evaluation hooks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedchain.aggregator.agreement import Action, AgreementView, agreement_step, late_reveal_round
from fedchain.aggregator.hooks import AFTER_COMMIT, BEFORE_COMMIT, AggregatorHooks, evaluation_hooks, lying_model
from fedchain.chain import Phase

AGG, REV, OPEN = Phase.AGGREGATING, Phase.REVEALING, Phase.OPEN


def view(phase: Phase = AGG, committed_round: int = 0, revealed: bool = False, **kw: object) -> AgreementView:
    return AgreementView(round=4, phase=phase, committed_round=committed_round, revealed=revealed, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (view(), Action.COMMIT),
        (view(alone=True), Action.SUBMIT),
        (view(committed_round=3), Action.COMMIT),  # an old commitment does not count for this round
        (view(committed_round=4), Action.WAIT),  # committed: wait for the others (or the window)
        (view(committed_round=4, close_due=True), Action.CLOSE_WINDOW),
        (view(inputs_ready=False), Action.WAIT),
        (view(inputs_ready=False, close_due=True), Action.CLOSE_WINDOW),
        (view(REV, committed_round=4), Action.REVEAL),
        (view(REV, committed_round=4, close_due=True), Action.REVEAL),  # reveal first, close later
        (view(REV, committed_round=4, revealed=True), Action.WAIT),
        (view(REV, committed_round=4, revealed=True, close_due=True), Action.CLOSE_WINDOW),
        (view(REV, committed_round=4, unrevealable=frozenset({4})), Action.WAIT),
        (view(REV, committed_round=3), Action.WAIT),  # missed the commit window: nothing to reveal
        (view(OPEN), Action.WAIT),
        (view(OPEN, close_due=True), Action.CLOSE_ROUND),
        (view(Phase.FINISHED, close_due=True), Action.WAIT),
        (view(Phase.CANCELLED), Action.WAIT),
    ],
)
def test_agreement_step(state: AgreementView, action: Action) -> None:
    assert agreement_step(state) is action


def test_a_commit_that_cannot_be_prepared_falls_back_to_closing_an_expired_window() -> None:
    state = view(close_due=True)
    assert agreement_step(state) is Action.COMMIT
    assert agreement_step(replace(state, inputs_ready=False)) is Action.CLOSE_WINDOW


@pytest.mark.parametrize(
    ("state", "late"),
    [
        (view(OPEN, committed_round=3, prepared=frozenset({3})), 3),
        (view(Phase.FINISHED, committed_round=4, prepared=frozenset({4})), 4),
        (view(AGG, committed_round=3, prepared=frozenset({3, 4})), 3),  # round 4 now, 3 still unrevealed
        (view(OPEN, committed_round=0, prepared=frozenset({0})), None),  # never committed
        (view(OPEN, committed_round=3, revealed=True, prepared=frozenset({3})), None),
        (view(OPEN, committed_round=3), None),  # not computed by this process (restarted): cannot reveal
        (view(OPEN, committed_round=3, prepared=frozenset({3}), unrevealable=frozenset({3})), None),
        (view(REV, committed_round=4, prepared=frozenset({4})), None),  # the current round: a normal reveal
    ],
)
def test_late_reveal_round(state: AgreementView, late: int | None) -> None:
    assert late_reveal_round(state) == late


def test_honest_hooks_do_nothing_and_lying_hooks_corrupt_the_published_model() -> None:
    model = {"w": np.ones(4, np.float32)}
    honest = AggregatorHooks()
    assert honest.published_model(model, 2) is model and honest.at(BEFORE_COMMIT, 2) is None
    lying = evaluation_hooks(lie=True)
    published = lying.published_model(model, 2)
    assert np.array_equal(published["w"], lying_model(model, 2)["w"]) and not np.array_equal(published["w"], model["w"])
    assert evaluation_hooks().published_model(model, 2) is model


def test_crash_hook_fires_only_at_its_point_and_round() -> None:
    # Only points that do not match are called here: a match ends the process (exercised in
    # tests/e2e/test_aggregator_restart.py).
    hooks = evaluation_hooks(crash="after-commit:3")
    assert hooks.at(BEFORE_COMMIT, 3) is None and hooks.at(AFTER_COMMIT, 2) is None
