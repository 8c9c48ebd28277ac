"""The trusted-root reference filter (FLTrust's trust test) in front of robust rules, its registry parameter,
`Strategy.within`, and the root set."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.learning.aggregation.base import UnweightedMean, Update
from fedchain.learning.aggregation.bulyan import Bulyan
from fedchain.learning.aggregation.clipping import NormClipping
from fedchain.learning.aggregation.fedavg import FedAvg
from fedchain.learning.aggregation.krum import Krum, MultiKrum
from fedchain.learning.aggregation.reference import MissingReference, ReferenceFilter, delta_cosine
from fedchain.learning.aggregation.registry import StrategySpec, build_strategy
from fedchain.learning.aggregation.trimmed_mean import TrimmedMean
from fedchain.learning.root import root_dataset, root_reference_trainer
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.learning.types import Weights

GLOBAL: Weights = {"a": np.zeros(3, dtype=np.float32), "b": np.zeros((2,), dtype=np.float32)}
TRUSTED = np.array([1.0, 1.0, 0.0, 1.0, 0.0])


def weights(vector: np.ndarray) -> Weights:
    v = np.asarray(vector, dtype=np.float32)
    return {"a": v[:3].copy(), "b": v[3:].copy()}


def update(i: int, vector: np.ndarray) -> Update:
    return Update(f"0x{i:040x}", weights(vector), 10)


def reference_to(vector: np.ndarray):
    calls: list[Weights] = []

    def train(global_weights: Weights) -> Weights:
        calls.append(global_weights)
        return {name: global_weights[name] + weights(vector)[name] for name in global_weights}

    train.calls = calls  # type: ignore[attr-defined]
    return train


def test_delta_cosine_hand_computed() -> None:
    assert delta_cosine(GLOBAL, weights(np.array([1, 0, 0, 0, 0])), weights(np.array([1, 1, 0, 0, 0]))) == (
        pytest.approx(1 / np.sqrt(2))
    )
    assert delta_cosine(GLOBAL, weights(-TRUSTED), weights(TRUSTED)) == pytest.approx(-1.0)
    assert delta_cosine(GLOBAL, weights(np.zeros(5)), weights(TRUSTED)) == 0.0
    # Cosine of deltas, not of weights: a shared offset in the global model cancels.
    offset = weights(np.full(5, 7.0))
    shifted = {name: offset[name] + weights(TRUSTED)[name] for name in offset}
    assert delta_cosine(offset, shifted, shifted) == pytest.approx(1.0)


def test_filter_drops_reversed_updates_and_names_them() -> None:
    honest = [update(i, TRUSTED * (0.5 + 0.05 * i) + np.array([0, 0, 0.1, 0, 0])) for i in range(1, 6)]
    flipped = [update(i, -TRUSTED) for i in range(6, 8)]
    trainer = reference_to(TRUSTED)
    strategy = ReferenceFilter(FedAvg(), 30, trainer)
    result = strategy.aggregate(GLOBAL, honest + flipped)
    assert set(result.accepted) == {u.device for u in honest}
    assert set(result.excluded) == {u.device for u in flipped}
    assert all("reference: cosine -1.000" in reason for reason in result.excluded.values())
    plain = FedAvg().aggregate(GLOBAL, honest)
    for name in GLOBAL:
        np.testing.assert_array_equal(result.weights[name], plain.weights[name])
    assert len(trainer.calls) == 1  # one reference per round
    assert result.clipped == ()  # all shorter than the reference step


def test_survivors_are_clipped_to_the_reference_norm() -> None:
    boosted = update(1, 10 * TRUSTED)
    small = update(2, 0.5 * TRUSTED)
    result = ReferenceFilter(FedAvg(), 5, reference_to(TRUSTED)).aggregate(GLOBAL, [boosted, small])
    assert result.clipped == (boosted.device,)
    # The boosted update now weighs as much as the root set's own step: mean of 1.0 and 0.5 times TRUSTED.
    expected = weights(0.75 * TRUSTED)
    for name in GLOBAL:
        np.testing.assert_allclose(result.weights[name], expected[name], rtol=1e-6)


def test_orthogonal_update_is_left_out_at_threshold_zero() -> None:
    ortho = update(1, np.array([0.0, 0.0, 1.0, 0.0, 1.0]))
    kept = update(2, TRUSTED)
    result = ReferenceFilter(FedAvg(), 5, reference_to(TRUSTED)).aggregate(GLOBAL, [ortho, kept])
    assert result.accepted == (kept.device,)
    assert ortho.device in result.excluded


def test_nothing_kept_keeps_the_model() -> None:
    result = ReferenceFilter(FedAvg(), 5, reference_to(TRUSTED)).aggregate(GLOBAL, [update(1, -TRUSTED)])
    assert result.accepted == ()
    for name in GLOBAL:
        np.testing.assert_array_equal(result.weights[name], GLOBAL[name])


def test_inner_rule_runs_with_the_largest_f_the_survivors_allow() -> None:
    # Multi-Krum f = 3 needs 9 updates; 7 survive the filter, so it runs with f = 2 instead of failing the round.
    honest = [update(i, TRUSTED * (1 + 0.01 * i)) for i in range(1, 8)]
    flipped = [update(i, -TRUSTED) for i in range(8, 10)]
    result = ReferenceFilter(MultiKrum(f=3), 5, reference_to(TRUSTED)).aggregate(GLOBAL, honest + flipped)
    assert len(result.accepted) == 7 - 2  # n - f with f = 2
    assert len(result.excluded) == 4


def test_within() -> None:
    assert MultiKrum(f=3).within(9) is not None
    mk = MultiKrum(f=3)
    assert mk.within(9) is mk
    assert mk.within(7).params() == {"f": 2, "m": 0}
    assert MultiKrum(f=3, m=5).within(6).params() == {"f": 1, "m": 5}
    assert MultiKrum(f=3, m=5).within(4).params() == {"f": 0, "m": 4}
    assert isinstance(mk.within(2), UnweightedMean)
    assert Krum(f=2).within(5).params() == {"f": 1}
    assert isinstance(Krum(f=2).within(1), UnweightedMean)
    assert Bulyan(f=2).within(10).params() == {"f": 1}
    assert Bulyan(f=2).within(11) is not None and Bulyan(f=2).within(11).params() == {"f": 2}
    tm = TrimmedMean(beta=0.3)
    assert tm.within(3) is tm
    clipped = NormClipping(MultiKrum(f=3), 1.0).within(7)
    assert isinstance(clipped, NormClipping) and clipped.inner.params() == {"f": 2, "m": 0}


def test_registry_root_samples_parameter() -> None:
    spec = StrategySpec("multi-krum", {"f": 2, "root_samples": 40})
    assert spec.root_samples == 40
    assert spec.to_json() == b'{"name":"multi-krum","params":{"f":2,"m":0,"root_samples":40}}'
    assert StrategySpec.from_json(spec.to_json()) == spec
    assert StrategySpec("fedavg").root_samples == 0
    strategy = build_strategy(spec, reference=reference_to(TRUSTED))
    assert isinstance(strategy, ReferenceFilter) and isinstance(strategy.inner, MultiKrum)
    both = build_strategy(
        StrategySpec("median", {"clip_norm": 2.0, "root_samples": 10}), reference=reference_to(TRUSTED)
    )
    assert isinstance(both, ReferenceFilter) and isinstance(both.inner, NormClipping)  # filter outermost
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="root_samples"):
            StrategySpec("fedavg", {"root_samples": bad})


def test_missing_reference_is_a_clear_error() -> None:
    strategy = build_strategy(StrategySpec("trimmed-mean", {"beta": 0.2, "root_samples": 10}))
    with pytest.raises(MissingReference, match="root-set trainer"):
        strategy.aggregate(GLOBAL, [update(1, TRUSTED)])


def test_root_set_is_seeded_and_sized() -> None:
    task = default_task_spec()
    a, b = root_dataset(task, 30), root_dataset(task, 30)
    np.testing.assert_array_equal(a.x, b.x)
    assert len(a) == 30
    other = root_dataset(TaskSpec.from_dict({**task.to_dict(), "seed": task.seed + 1}), 30)
    assert not np.array_equal(a.x, other.x)
    with pytest.raises(ValueError, match="training split"):
        root_dataset(task, 10_000)
    with pytest.raises(ValueError, match=">= 1"):
        root_dataset(task, 0)


def test_root_reference_is_deterministic_and_moves_the_model() -> None:
    from fedchain.learning.model import build_model, get_weights

    task = default_task_spec()
    start = get_weights(build_model(task.model, seed=task.seed))
    first = root_reference_trainer(task, 20)(start)
    second = root_reference_trainer(task, 20)(start)
    for name in start:
        np.testing.assert_array_equal(first[name], second[name])
    assert any(not np.array_equal(first[name], start[name]) for name in start)
