"""Every strategy family of synchronous tasks in a buffered (FedBuff) task, through buffered_round's pure
`aggregate_buffer`: staleness weighting composed with the rule, deterministically (same bits whatever the entries'
order), and the rule still doing its job (an outlier is out, clipping bounds a stale update by w(s) x clip_norm,
a server optimiser's state goes from version to version). Secure aggregation stays refused, saying why."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from fedchain.aggregator.buffered_round import BufferInputs, aggregate_buffer, buffer_weights
from fedchain.aggregator.round import DecodedUpdate, RoundLimits, RoundResult, Submission
from fedchain.chain.buffered import WEIGHTING_POLYNOMIAL, BufferEntry
from fedchain.learning.aggregation import ServerState, build_strategy
from fedchain.learning.aggregation.bound import UpdateBound
from fedchain.learning.aggregation.registry import OPTIONAL_PARAMS, WEIGHTED_MEAN_STRATEGIES, StrategySpec
from fedchain.learning.staleness import check_buffer_size, check_buffered_strategy, min_updates
from fedchain.learning.types import Weights

SHAPES = {"b": (2,), "w": (3, 2)}
LIMITS = RoundLimits(SHAPES, UpdateBound(1000.0))
DEVICES = [f"0x{i:040x}" for i in range(1, 10)]
A = 500_000  # FedBuff's a = 0.5: w(s) = (1 + s)^-0.5
CURRENT_VERSION = 6


def weights(value: float) -> Weights:
    return {"b": np.full(2, value, np.float32), "w": np.full((3, 2), value, np.float32)}


def entry(i: int, samples: int, staleness: int) -> BufferEntry:
    return BufferEntry(DEVICES[i], hashlib.sha256(bytes([i])).digest(), samples, CURRENT_VERSION - staleness, staleness)


# Every base version's model: version v is all (v), the current one all 6.0.
BASES = {v: weights(float(v)) for v in range(CURRENT_VERSION + 1)}


def run(
    spec: StrategySpec,
    entries: list[BufferEntry],
    deltas: list[float],
    state: ServerState | None = None,
    reference=None,  # type: ignore[no-untyped-def]
) -> RoundResult:
    """The buffer whose i-th entry moved its base model by deltas[i] in every coordinate."""
    updates = [
        DecodedUpdate(
            Submission(e.device, e.update_digest, e.num_samples, 0, ""),
            {k: v + np.float32(d) for k, v in BASES[e.base_version].items()},
            {},
        )
        for e, d in zip(entries, deltas, strict=True)
    ]
    streaming = spec.name in WEIGHTED_MEAN_STRATEGIES and not (set(OPTIONAL_PARAMS) & set(spec.params))
    strategy = None if streaming else build_strategy(spec, reference=reference)
    inputs = BufferInputs(
        BASES[CURRENT_VERSION], entries, updates, BASES, buffer_weights(entries, spec, WEIGHTING_POLYNOMIAL, A)
    )
    return aggregate_buffer(inputs, spec, strategy, state or ServerState(), LIMITS)


def moved(result: RoundResult) -> float:
    """How far the aggregate moved the current model (the same in every coordinate here)."""
    assert result.aggregated
    values = {float(v) for tensor in result.weights.values() for v in np.ravel(tensor)}
    assert len(values) == 1, values
    return values.pop() - CURRENT_VERSION


def assert_order_free(spec: StrategySpec, entries: list[BufferEntry], deltas: list[float], **kw) -> RoundResult:  # type: ignore[no-untyped-def]
    """The aggregate of the buffer, checked to be bit-identical when the entries come in reverse order or again."""
    first = run(spec, entries, deltas, **kw)
    for again in (run(spec, entries[::-1], deltas[::-1], **kw), run(spec, entries, deltas, **kw)):
        assert all(np.array_equal(first.weights[k], again.weights[k]) for k in SHAPES)
    return first


def w(s: int) -> float:
    return (1 + s) ** -0.5


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_weighted_means_take_fedbuff_s_step(name: str) -> None:
    entries = [entry(0, 10, 0), entry(1, 30, 3), entry(2, 20, 1)]
    deltas = [0.3, 0.6, -0.2]
    result = assert_order_free(StrategySpec(name), entries, deltas)
    expected = (10 * w(0) * 0.3 + 30 * w(3) * 0.6 + 20 * w(1) * -0.2) / 60  # sum n_i w(s_i) d_i / sum n_i
    assert moved(result) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("name", "params"), [("median", {}), ("trimmed-mean", {"beta": 0.2})])
def test_coordinate_wise_rules_see_each_delta_discounted_by_its_staleness(name: str, params: dict) -> None:
    # Five updates, one a Byzantine outlier: the rule works on w(s_i) d_i, and the outlier does not count.
    entries = [entry(i, 10, s) for i, s in enumerate([0, 3, 1, 0, 2])]
    deltas = [0.4, 0.8, 0.5, 0.2, 50.0]
    result = assert_order_free(StrategySpec(name, params), entries, deltas)
    scaled = sorted([0.4 * w(0), 0.8 * w(3), 0.5 * w(1), 0.2 * w(0), 50.0 * w(2)])
    expected = scaled[2] if name == "median" else float(np.mean(scaled[1:4]))
    assert moved(result) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("name", "params"), [("krum", {"f": 1}), ("multi-krum", {"f": 1, "m": 3}), ("bulyan", {"f": 1})]
)
def test_selection_rules_drop_the_outlier_among_discounted_deltas(name: str, params: dict) -> None:
    # Seven updates (Bulyan needs n >= 4f + 3), one far off; the honest ones agree once discounted.
    stale = [0, 1, 3, 0, 2, 1, 0]
    entries = [entry(i, 10, s) for i, s in enumerate(stale)]
    deltas = [0.5 / w(s) for s in stale[:-1]] + [-40.0]  # honest: w(s) d = 0.5 exactly; the last one: an attack
    result = assert_order_free(StrategySpec(name, params), entries, deltas)
    assert moved(result) == pytest.approx(0.5, abs=1e-5)
    assert DEVICES[6] not in {e["device"] for e in result.accepted} or name == "bulyan"


def test_clipping_comes_before_the_staleness_discount() -> None:
    """A large stale update moves the model by at most w(s) x clip_norm (clip, then discount), not clip_norm."""
    clip = 1.0
    norm_per_unit = math.sqrt(8)  # 8 coordinates
    entries = [entry(0, 10, 3)]
    result = assert_order_free(StrategySpec("median", {"clip_norm": clip}), entries, [10.0])
    assert moved(result) * norm_per_unit == pytest.approx(w(3) * clip, rel=1e-5)
    # A small fresh update is not clipped; FedAvg with clipping composes the same way.
    mixed = assert_order_free(
        StrategySpec("fedavg", {"clip_norm": clip}), [entry(0, 10, 0), entry(1, 10, 3)], [0.1, 10.0]
    )
    step = (w(0) + w(3)) / 2  # the buffer's sample-weighted mean w(s) scales the weighted mean of clipped deltas
    assert moved(mixed) == pytest.approx(step * (0.1 * w(0) + clip / norm_per_unit * w(3)) / (w(0) + w(3)), abs=1e-6)


def test_the_reference_filter_is_scale_free_so_staleness_does_not_change_what_it_keeps() -> None:
    def reference(model: Weights) -> Weights:  # the root set says: move up
        return {k: v + np.float32(1.0) for k, v in model.items()}

    entries = [entry(0, 10, 0), entry(1, 10, 3), entry(2, 10, 1)]
    result = assert_order_free(
        StrategySpec("median", {"root_samples": 5}), entries, [0.4, 0.6, -3.0], reference=reference
    )
    assert {e["device"] for e in result.accepted} == {DEVICES[0], DEVICES[1]}
    assert moved(result) == pytest.approx(float(np.median([0.4 * w(0), 0.6 * w(3)])), abs=1e-6)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi"])
def test_server_optimisers_step_once_per_version_and_carry_their_state(name: str) -> None:
    spec = StrategySpec(name)
    check_buffered_strategy(spec)  # allowed: one optimiser step per version
    entries = [entry(0, 10, 0), entry(1, 30, 2)]
    first = assert_order_free(spec, entries, [0.2, 0.4])
    assert first.server_state is not None and not first.server_state.empty
    # The state after this version changes the next step: the same buffer again moves the model differently.
    with_state = run(spec, entries, [0.2, 0.4], state=first.server_state)
    again = run(spec, entries, [0.2, 0.4], state=first.server_state)
    assert not all(np.array_equal(first.weights[k], with_state.weights[k]) for k in SHAPES)
    assert all(np.array_equal(again.weights[k], with_state.weights[k]) for k in SHAPES)
    # The state round-trips through its stored form (the report's server_state_cid) bit for bit.
    restored = ServerState.from_tensors(first.server_state.to_tensors())
    from_stored = run(spec, entries, [0.2, 0.4], state=restored)
    assert all(np.array_equal(from_stored.weights[k], with_state.weights[k]) for k in SHAPES)


def test_fedavgm_s_pseudo_gradient_is_fedbuff_s_step() -> None:
    """With no momentum yet, FedAvgM at server_lr 1 moves the model by FedBuff's step, as FedAvg does."""
    entries = [entry(0, 10, 0), entry(1, 30, 2)]
    fedavgm = run(StrategySpec("fedavgm", {"server_lr": 1.0, "momentum": 0.9}), entries, [0.2, 0.4])
    fedavg = run(StrategySpec("fedavg"), entries, [0.2, 0.4])
    assert moved(fedavgm) == pytest.approx(moved(fedavg), abs=1e-6)


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "median"])
def test_secure_aggregation_and_sealed_updates_stay_refused_with_the_reason(name: str) -> None:
    for options in ({"secure_aggregation": True}, {"seal_updates": True}):
        with pytest.raises(ValueError, match="participant set fixed before masking") as refused:
            check_buffered_strategy(StrategySpec(name), **options)
        assert "staleness weights" in str(refused.value) and "--mode sync" in str(refused.value)


@pytest.mark.parametrize(
    ("name", "params", "need"),
    [
        ("fedavg", {}, 1),
        ("median", {}, 1),
        ("krum", {"f": 1}, 5),
        ("multi-krum", {"f": 1, "m": 6}, 6),
        ("bulyan", {"f": 2}, 11),
    ],
)
def test_a_buffer_too_small_for_the_strategy_is_refused_at_deploy(name: str, params: dict, need: int) -> None:
    spec = StrategySpec(name, params)
    assert min_updates(spec) == need
    check_buffer_size(spec, need)
    if need > 1:
        with pytest.raises(ValueError, match=f"needs at least {need} updates per aggregate"):
            check_buffer_size(spec, need - 1)
