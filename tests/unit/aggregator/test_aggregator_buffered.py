"""A buffered task's aggregation without chain or IPFS: staleness weights per strategy, rebasing stale updates onto
the current version, the buffer's aggregate through `aggregate_round`, and the agreement step."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from fedchain.aggregator.agreement import Action
from fedchain.aggregator.buffered_round import (
    BufferedView,
    buffer_report,
    buffer_weights,
    buffered_step,
    entry_fields,
    entry_submission,
    rebased_update,
)
from fedchain.aggregator.round import DecodedUpdate, RoundLimits, aggregate_round
from fedchain.chain.buffered import WEIGHTING_CONSTANT, WEIGHTING_POLYNOMIAL, AggPhase, BufferEntry
from fedchain.learning.aggregation import ServerState, build_strategy
from fedchain.learning.aggregation.bound import UpdateBound
from fedchain.learning.aggregation.registry import StrategySpec
from fedchain.learning.staleness import WEIGHT_SCALE, check_buffered_strategy, integer_weights, rebase

SHAPES = {"b": (2,), "w": (3, 2)}
LIMITS = RoundLimits(SHAPES, UpdateBound(5.0))
DEVICES = [f"0x{i:040x}" for i in range(1, 6)]
FEDAVG = StrategySpec("fedavg")
MEDIAN = StrategySpec("median")
A = 500_000  # FedBuff's a = 0.5


def weights(value: float) -> dict[str, np.ndarray]:
    return {"b": np.full(2, value, np.float32), "w": np.full((3, 2), value, np.float32)}


def entry(i: int, samples: int, base: int, staleness: int) -> BufferEntry:
    return BufferEntry(DEVICES[i], hashlib.sha256(bytes([i])).digest(), samples, base, staleness)


def test_weighted_mean_strategies_weigh_samples_times_staleness() -> None:
    entries = [entry(0, 10, 4, 0), entry(1, 10, 1, 3), entry(2, 30, 3, 1)]
    got = buffer_weights(entries, FEDAVG, WEIGHTING_POLYNOMIAL, A)
    raw = [10.0, 10 / math.sqrt(4), 30 / math.sqrt(2)]
    shares = [r / sum(raw) for r in raw]
    assert [w.share for w in got] == pytest.approx(shares, rel=1e-12)
    assert [w.staleness_weight for w in got] == pytest.approx([1.0, 0.5, 1 / math.sqrt(2)], rel=1e-15)
    step = (10 + 10 / math.sqrt(4) + 30 / math.sqrt(2)) / 50  # the buffer's sample-weighted mean w(s)
    assert [w.delta_factor for w in got] == pytest.approx([step] * 3, rel=1e-12)
    assert sum(w.integer_weight for w in got) == pytest.approx(WEIGHT_SCALE, abs=3)
    # the stale update counts half of a fresh one with the same samples
    assert got[1].integer_weight == pytest.approx(got[0].integer_weight / 2, abs=1)
    constant = buffer_weights(entries, FEDAVG, WEIGHTING_CONSTANT, 0)
    assert [w.share for w in constant] == pytest.approx([0.2, 0.2, 0.6])


def test_weightless_strategies_scale_the_delta_instead() -> None:
    entries = [entry(0, 10, 4, 0), entry(1, 20, 1, 3)]
    got = buffer_weights(entries, MEDIAN, WEIGHTING_POLYNOMIAL, A)
    assert [w.delta_factor for w in got] == pytest.approx([1.0, 0.5])
    assert [w.integer_weight for w in got] == [10, 20]


def test_rebase_moves_the_delta_onto_the_current_version() -> None:
    current, base, update = weights(3.0), weights(1.0), weights(1.5)
    assert all(np.array_equal(v, np.full(SHAPES[k], 3.5, np.float32)) for k, v in rebase(current, base, update).items())
    half = rebase(current, base, update, 0.5)
    assert all(v.dtype == np.float32 and np.allclose(v, 3.25) for v in half.values())
    with pytest.raises(ValueError):
        rebase(current, base, {"b": np.zeros(3, np.float32), "w": np.zeros((3, 2), np.float32)})
    with pytest.raises(ValueError):
        rebase(current, base, {"b": np.zeros(2, np.float32)})
    assert integer_weights([0.5, 1e-12]) == [WEIGHT_SCALE // 2, 1]


def aggregate(strategy: StrategySpec, entries: list[BufferEntry], updates: list[dict], bases: dict[int, dict]):
    current = weights(10.0)
    ws = buffer_weights(entries, strategy, WEIGHTING_POLYNOMIAL, A)
    decoded = []
    for e, w, u in zip(entries, ws, updates, strict=True):
        sub = entry_submission(e, w)
        decoded.append(rebased_update(DecodedUpdate(sub, u, {}), current, bases[e.base_version], w, sub))
    built = None if strategy.name == "fedavg" else build_strategy(strategy)
    return aggregate_round(current, decoded, built, ServerState(), LIMITS), ws


def test_buffer_aggregate_is_the_staleness_weighted_mean_of_deltas_and_reproducible() -> None:
    entries = [entry(0, 10, 5, 0), entry(1, 10, 2, 3)]
    bases = {5: weights(10.0), 2: weights(4.0)}
    updates = [weights(11.0), weights(6.0)]  # deltas +1 (fresh) and +2 (three versions old)
    result, ws = aggregate(FEDAVG, entries, updates, bases)
    expected = 10.0 + (10 * 1.0 * 1.0 + 10 * 0.5 * 2.0) / 20  # FedBuff: sum n_i w(s_i) delta_i / sum n_i
    assert result.aggregated and all(np.allclose(v, expected, atol=1e-6) for v in result.weights.values())
    again, _ = aggregate(FEDAVG, entries, updates, bases)
    assert all(np.array_equal(result.weights[k], again.weights[k]) for k in SHAPES)
    fields = {e.device: entry_fields(e, w) for e, w in zip(entries, ws, strict=True)}
    report = buffer_report("0x" + "11" * 20, 7, 5, FEDAVG, (1, A), b"\x01" * 20, "Qmprev", "Qmnew", result, fields, {})
    assert report["version"] == 6 and report["buffer"] == 7
    assert [(e["num_samples"], e["staleness"]) for e in report["accepted"]] == [(10, 0), (10, 3)]
    assert report["accepted"][1]["weight"] == pytest.approx(1 / 3)


def test_a_broken_update_is_rejected_and_the_buffer_goes_on() -> None:
    entries = [entry(0, 10, 5, 0), entry(1, 10, 5, 0), entry(2, 10, 5, 0)]
    bad = weights(11.0)
    bad["b"] = np.array([np.nan, 1.0], np.float32)
    result, _ = aggregate(MEDIAN, entries, [weights(11.0), bad, weights(12.0)], {5: weights(10.0)})
    assert result.aggregated
    assert [e["device"] for e in result.rejected] == [DEVICES[1]]


def test_unsupported_privacy_is_refused_and_every_strategy_allowed() -> None:
    # Stateful server optimisers are allowed since their state is carried from version to version
    # (tests/unit/aggregator/test_buffered_strategies.py); secure aggregation stays refused.
    with pytest.raises(ValueError, match="secure aggregation"):
        check_buffered_strategy(FEDAVG, secure_aggregation=True)
    for name in ("fedavg", "fedprox", "median", "trimmed-mean", "krum", "multi-krum", "bulyan", "fedavgm", "fedadam"):
        check_buffered_strategy(StrategySpec(name))


@pytest.mark.parametrize(
    ("view", "action"),
    [
        (BufferedView(AggPhase.NONE, False, False, False), Action.WAIT),
        (BufferedView(AggPhase.NONE, False, False, False, early_close_due=True), Action.CLOSE_ROUND),
        (BufferedView(AggPhase.COMMITTING, False, False, False), Action.COMMIT),
        (BufferedView(AggPhase.COMMITTING, False, False, False, inputs_ready=False), Action.WAIT),
        (BufferedView(AggPhase.COMMITTING, True, False, False), Action.WAIT),
        (BufferedView(AggPhase.COMMITTING, True, False, True), Action.CLOSE_WINDOW),
        (BufferedView(AggPhase.REVEALING, True, False, False), Action.REVEAL),
        (BufferedView(AggPhase.REVEALING, True, True, False), Action.WAIT),
        (BufferedView(AggPhase.REVEALING, False, False, True), Action.CLOSE_WINDOW),
    ],
)
def test_agreement_step(view: BufferedView, action: Action) -> None:
    assert buffered_step(view) is action
