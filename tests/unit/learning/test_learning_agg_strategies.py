"""Each aggregation strategy against hand-computed cases and its defining property."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from safetensors.numpy import load, save

from fedchain.learning.aggregation import (
    Bulyan,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Krum,
    Median,
    MultiKrum,
    NormClipping,
    ServerState,
    TrimmedMean,
    Update,
    fedavg,
)
from fedchain.learning.aggregation.bulyan import bulyan_select, closest_to_median_mean
from fedchain.learning.aggregation.clipping import clip_update, delta_norm
from fedchain.learning.aggregation.krum import exact_sq_distances, multi_krum_select
from fedchain.learning.aggregation.trimmed_mean import trim_count
from fedchain.learning.types import Weights


def _vec(*values: float) -> Weights:
    return {"w": np.array(values, dtype=np.float32)}


def _updates(rows: list[list[float]], samples: list[int] | None = None) -> list[Update]:
    samples = samples or [1] * len(rows)
    return [Update(f"0x{i + 1:02x}", _vec(*row), n) for i, (row, n) in enumerate(zip(rows, samples, strict=True))]


def _random_updates(n: int, size: int, seed: int, spread: float = 0.1) -> tuple[Weights, list[Update]]:
    rng = np.random.default_rng(seed)
    global_weights = {
        "a": rng.standard_normal((size // 10, 9)).astype(np.float32),
        "b": np.zeros(size // 10, np.float32),
    }
    updates = [
        Update(
            f"0x{i:040x}",
            {k: (v + spread * rng.standard_normal(v.shape)).astype(np.float32) for k, v in global_weights.items()},
            int(rng.integers(1, 50)),
        )
        for i in range(n)
    ]
    return global_weights, updates


ZERO = _vec(0.0, 0.0)


# ------------------------------------------------------------------ FedAvg family


def test_fedavg_strategy_is_bit_identical_to_streaming_fedavg() -> None:
    global_weights, updates = _random_updates(7, 200, seed=1)
    result = FedAvg().aggregate(global_weights, updates[::-1])
    expected = fedavg([(u.weights, u.num_samples) for u in updates])
    assert all(result.weights[k].tobytes() == expected[k].tobytes() for k in global_weights)
    assert result.accepted == tuple(u.device for u in updates) and not result.excluded and result.state.empty
    prox = FedProx(mu=0.5).aggregate(global_weights, updates)
    assert all(prox.weights[k].tobytes() == expected[k].tobytes() for k in global_weights)


def test_fedavg_hand_computed() -> None:
    result = FedAvg().aggregate(ZERO, _updates([[1, 2], [3, 4]], [1, 3]))
    np.testing.assert_array_equal(result.weights["w"], np.array([2.5, 3.5], np.float32))


def test_fedavgm_without_momentum_equals_fedavg() -> None:
    global_weights, updates = _random_updates(6, 300, seed=2)
    plain = FedAvg().aggregate(global_weights, updates).weights
    result = FedAvgM(server_lr=1.0, momentum=0.0).aggregate(global_weights, updates)
    for k in global_weights:
        np.testing.assert_allclose(result.weights[k], plain[k], rtol=1e-6, atol=1e-7)
    assert result.state.slots() == {"momentum"}


def test_fedavgm_momentum_by_hand() -> None:
    strategy = FedAvgM(server_lr=1.0, momentum=0.5)
    # Round 1: avg 1, pseudo-gradient 0 - 1 = -1, v = -1, x = 0 + 1 = 1.
    r1 = strategy.aggregate(_vec(0.0), _updates([[1.0]]))
    np.testing.assert_array_equal(r1.weights["w"], [1.0])
    # Round 2: avg 1 = x, pseudo-gradient 0, v = 0.5 * -1 = -0.5, x = 1 + 0.5.
    r2 = strategy.aggregate(r1.weights, _updates([[1.0]]), r1.state)
    np.testing.assert_array_equal(r2.weights["w"], [1.5])
    np.testing.assert_array_equal(r2.state.tensors["momentum/w"], [-0.5])


@pytest.mark.parametrize("strategy", [FedAdam(), FedYogi()], ids=["fedadam", "fedyogi"])
def test_adaptive_moves_along_the_average_delta(strategy: FedAdam | FedYogi) -> None:
    global_weights, updates = _random_updates(5, 400, seed=3)
    avg = FedAvg().aggregate(global_weights, updates).weights
    result = strategy.aggregate(global_weights, updates)
    for k in global_weights:
        delta = avg[k].astype(np.float64) - global_weights[k]
        step = result.weights[k].astype(np.float64) - global_weights[k]
        moved = np.abs(delta) > 1e-3
        assert np.array_equal(np.sign(step[moved]), np.sign(delta[moved]))
        assert float((step * delta).sum()) > 0
    assert result.state.slots() == {"m", "v"}


def test_fedadam_first_step_by_hand() -> None:
    # m = 0.1·Δ, v = tau² + 0.01·Δ²: with tau tiny the first step is eta·sign(Δ).
    result = FedAdam(eta=0.1, beta1=0.9, beta2=0.99, tau=1e-9).aggregate(_vec(0.0, 0.0), _updates([[2.0, -0.5]]))
    np.testing.assert_allclose(result.weights["w"], [0.1, -0.1], rtol=1e-6)
    np.testing.assert_allclose(result.state.tensors["m/w"], [0.2, -0.05])
    np.testing.assert_allclose(result.state.tensors["v/w"], [0.04 + 1e-18, 0.0025 + 1e-18])


def test_fedyogi_second_moment_by_hand() -> None:
    strategy = FedYogi(eta=0.01, beta1=0.9, beta2=0.99, tau=1e-3)
    state = ServerState.from_slots({"m": {"w": np.zeros(2)}, "v": {"w": np.array([1.0, 0.0])}})
    # Δ = [0.5, 0.5], Δ² = 0.25: v - 0.01·0.25·sign(v - 0.25) = [1 - 0.0025, 0 + 0.0025].
    result = strategy.aggregate(_vec(0.0, 0.0), _updates([[0.5, 0.5]]), state)
    np.testing.assert_allclose(result.state.tensors["v/w"], [0.9975, 0.0025])


@pytest.mark.parametrize("strategy", [FedAvgM(momentum=0.9), FedAdam(), FedYogi()], ids=["fedavgm", "adam", "yogi"])
def test_state_through_safetensors_changes_no_bit(strategy: FedAvgM) -> None:
    global_weights, updates = _random_updates(4, 100, seed=4)
    r1 = strategy.aggregate(global_weights, updates)
    direct = strategy.aggregate(r1.weights, updates, r1.state)
    restarted = strategy.aggregate(r1.weights, updates, ServerState.from_tensors(load(save(r1.state.to_tensors()))))
    assert all(direct.weights[k].tobytes() == restarted.weights[k].tobytes() for k in global_weights)


def test_state_of_wrong_shape_rejected() -> None:
    state = ServerState.from_slots({"momentum": {"w": np.zeros(3)}})
    with pytest.raises(ValueError):
        FedAvgM().aggregate(_vec(0.0, 0.0), _updates([[1, 1]]), state)


# ------------------------------------------------------------------ coordinate-wise


def test_median_by_hand_and_ignores_outlier() -> None:
    odd = Median().aggregate(ZERO, _updates([[1, 5], [2, -1e6], [100, 4]]))
    np.testing.assert_array_equal(odd.weights["w"], [2, 4])
    even = Median().aggregate(ZERO, _updates([[1, 0], [2, 0], [3, 1], [1e6, 1]]))
    np.testing.assert_array_equal(even.weights["w"], [2.5, 0.5])
    honest = [[1.0 + 0.01 * i, -1.0] for i in range(4)]
    for outlier in (1e30, -1e30, 0.0):
        result = Median().aggregate(ZERO, _updates([*honest, [outlier, outlier]]))
        assert 1.0 <= result.weights["w"][0] <= 1.03 and result.weights["w"][1] == -1.0


def test_median_normalises_negative_zero() -> None:
    result = Median().aggregate(ZERO, _updates([[-0.0, -0.0], [0.0, -0.0], [-0.0, 0.0]]))
    assert not np.signbit(result.weights["w"]).any()


def test_trim_count_is_exact_decimal() -> None:
    assert trim_count(0.3, 10) == 3
    assert trim_count(0.29, 10) == 2
    assert trim_count(0.1, 9) == 0
    assert trim_count(0.0, 5) == 0


def test_trimmed_mean_by_hand_and_ignores_outliers() -> None:
    rows = [[float(v), float(-v)] for v in range(1, 11)]
    np.testing.assert_array_equal(TrimmedMean(0.1).aggregate(ZERO, _updates(rows)).weights["w"], [5.5, -5.5])
    np.testing.assert_array_equal(TrimmedMean(0.0).aggregate(ZERO, _updates(rows)).weights["w"], [5.5, -5.5])
    result = TrimmedMean(0.2).aggregate(ZERO, _updates([[1, 1], [2, 2], [3, 3], [4, 4], [1e9, -1e9]]))
    # One trimmed each side: [2, 3, 4] and [1, 2, 3].
    np.testing.assert_array_equal(result.weights["w"], [3, 2])


def test_trimmed_mean_parameter_range() -> None:
    for beta in (-0.1, 0.5, float("nan")):
        with pytest.raises(ValueError):
            TrimmedMean(beta)


# ------------------------------------------------------------------ Krum, Multi-Krum


LINE = [[0.0, 3.0], [1.0, 3.0], [2.0, 3.0], [4.0, 3.0], [100.0, 3.0]]
# f = 1, n = 5: each score sums the 2 smallest squared distances: 5, 2, 5, 13, huge.


def test_krum_picks_the_update_closest_to_its_neighbours() -> None:
    result = Krum(f=1).aggregate(ZERO, _updates(LINE)[::-1])
    np.testing.assert_array_equal(result.weights["w"], [1.0, 3.0])
    assert result.accepted == ("0x02",)
    assert set(result.excluded) == {"0x01", "0x03", "0x04", "0x05"}


def test_multi_krum_averages_the_m_best() -> None:
    result = MultiKrum(f=1, m=3).aggregate(ZERO, _updates(LINE))
    np.testing.assert_array_equal(result.weights["w"], [1.0, 3.0])  # mean of 0, 1, 2
    assert result.accepted == ("0x01", "0x02", "0x03")
    # m = 0 means n - f = 4: mean of 0, 1, 2, 4.
    np.testing.assert_array_equal(MultiKrum(f=1).aggregate(ZERO, _updates(LINE)).weights["w"], [1.75, 3.0])


def test_multi_krum_tie_goes_to_lower_address_through_exact_distances() -> None:
    weights = [u.weights for u in _updates(LINE)]
    # Scores 5 and 5 tie for second place: the Gram bounds cannot decide, the canonical distances do.
    tie = multi_krum_select(ZERO, weights, f=1, m=2)
    assert tie.indices == (0, 1) and tie.exact
    clear = multi_krum_select(ZERO, weights, f=1, m=3)
    assert clear.indices == (0, 1, 2) and not clear.exact
    with pytest.raises(ValueError, match="cannot decide"):
        multi_krum_select(ZERO, weights, f=1, m=2, method="gram")


def test_identical_updates_tie_by_address_without_the_slow_path() -> None:
    # Scores (f = 1, 3 neighbours): 11, 5, 5, 17, ...: the twins tie for first place.
    rows = [[0.0], [1.0], [1.0], [3.0], [100.0], [-100.0]]
    weights = [u.weights for u in _updates(rows)]
    sel = multi_krum_select(_vec(0.0), weights, f=1, m=1)
    assert sel.indices == (1,) and not sel.exact
    assert Krum(f=1).aggregate(_vec(0.0), _updates(rows)[::-1]).accepted == ("0x02",)
    assert multi_krum_select(_vec(0.0), weights, f=1, m=2).indices == (1, 2)
    more = [*weights, _vec(2.5)]
    assert bulyan_select(_vec(0.0), more, 1).indices == bulyan_select(_vec(0.0), more, 1, "exact").indices


def _brute_force_scores(weights: list[Weights], f: int) -> list[float]:
    vectors = [np.concatenate([w[k].astype(np.float64).ravel() for k in sorted(w)]) for w in weights]
    n = len(vectors)
    dist = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        dist[i, j] = dist[j, i] = float(((vectors[i] - vectors[j]) ** 2).sum())
    return [sorted(dist[i, [j for j in range(n) if j != i]])[: n - f - 2] for i in range(n)]  # type: ignore[misc]


def test_krum_selection_matches_brute_force_and_exact_path() -> None:
    global_weights, updates = _random_updates(12, 500, seed=5)
    # Two attackers far away, one of them boosted.
    for i, factor in ((3, 20.0), (8, -5.0)):
        w = updates[i].weights
        updates[i] = Update(
            updates[i].device, {k: (global_weights[k] + factor * (w[k] - global_weights[k])) for k in w}, 1
        )
    weights = [u.weights for u in updates]
    scores = [sum(s) for s in _brute_force_scores(weights, f=2)]
    expected = tuple(sorted(np.argsort(scores, kind="stable")[:5].tolist()))
    fast = multi_krum_select(global_weights, weights, f=2, m=5)
    exact = multi_krum_select(global_weights, weights, f=2, m=5, method="exact")
    assert fast.indices == exact.indices == expected
    assert not fast.exact and exact.exact
    assert 3 not in fast.indices and 8 not in fast.indices
    krum = Krum(f=2).aggregate(global_weights, updates)
    assert krum.accepted == (updates[int(np.argmin(scores))].device,)


def test_exact_distances_by_hand() -> None:
    dist = exact_sq_distances([_vec(0, 0), _vec(3, 4), _vec(1, 1)])
    np.testing.assert_array_equal(dist, [[0, 25, 2], [25, 0, 13], [2, 13, 0]])


def test_krum_needs_2f_plus_3_updates() -> None:
    with pytest.raises(ValueError, match="2f\\+3"):
        Krum(f=1).aggregate(ZERO, _updates(LINE[:4]))
    with pytest.raises(ValueError):
        MultiKrum(f=0, m=6).aggregate(ZERO, _updates(LINE))


# ------------------------------------------------------------------ Bulyan


def test_bulyan_requires_4f_plus_3() -> None:
    rows = [[float(i), 0.0] for i in range(10)]
    with pytest.raises(ValueError, match="4f\\+3"):
        Bulyan(f=2).aggregate(ZERO, _updates(rows))
    with pytest.raises(ValueError, match="4f\\+3"):
        Bulyan(f=1).aggregate(ZERO, _updates(rows[:6]))
    Bulyan(f=1).aggregate(ZERO, _updates(rows[:7]))


def test_closest_to_median_mean_by_hand() -> None:
    block = np.array([[1, 2, 3, 10, 11], [0, 5, 6, 7, 20]], np.float32)
    np.testing.assert_array_equal(closest_to_median_mean(block, 3), [2.0, 6.0])
    # Even count: median 1.5; window [1, 2] is closest.
    np.testing.assert_array_equal(closest_to_median_mean(np.array([[0, 1, 2, 3]], np.float32), 2), [1.5])
    # Tie between [0, 2] and [2, 4] around median 2: the left window.
    np.testing.assert_array_equal(closest_to_median_mean(np.array([[0, 2, 4]], np.float32), 2), [1.0])


def test_bulyan_by_hand_and_excludes_outliers() -> None:
    rows = [[0.0, 0.0], [1.0, 0.1], [2.0, 0.2], [3.0, 0.3], [4.0, 0.4], [5.0, 0.5], [1e4, -1e4]]
    result = Bulyan(f=1).aggregate(ZERO, _updates(rows))
    # theta = 5 selected by repeated Krum (the outlier never), beta = 3 closest to each coordinate's median.
    assert "0x07" in result.excluded and len(result.accepted) == 5
    assert 1.0 <= result.weights["w"][0] <= 4.0 and 0.1 <= result.weights["w"][1] <= 0.4
    global_weights, updates = _random_updates(11, 300, seed=6)
    weights = [u.weights for u in updates]
    assert (
        bulyan_select(global_weights, weights, 2).indices == bulyan_select(global_weights, weights, 2, "exact").indices
    )


# ------------------------------------------------------------------ clipping


def test_clipping_bounds_every_delta_norm() -> None:
    global_weights, updates = _random_updates(6, 1000, seed=7)
    scaled = [
        Update(u.device, {k: (global_weights[k] + s * (u.weights[k] - global_weights[k])) for k in u.weights}, 1)
        for u, s in zip(updates, [0.01, 1, 5, 10, 50, 100], strict=True)
    ]
    norms = [delta_norm(global_weights, u.weights) for u in scaled]
    max_norm = sorted(norms)[2] * 1.001
    for update, norm in zip(scaled, norms, strict=True):
        clipped, was = clip_update(global_weights, update, max_norm)
        assert was == (norm > max_norm)
        assert delta_norm(global_weights, clipped.weights) <= max_norm * (1 + 1e-6)
        if was:  # direction kept
            assert delta_norm(global_weights, clipped.weights) >= max_norm * (1 - 1e-6)
        else:
            assert clipped is update
    result = NormClipping(Median(), max_norm).aggregate(global_weights, scaled)
    assert result.clipped == tuple(u.device for u, n in zip(scaled, norms, strict=True) if n > max_norm)
    inner = Median().aggregate(global_weights, [clip_update(global_weights, u, max_norm)[0] for u in scaled])
    assert all(result.weights[k].tobytes() == inner.weights[k].tobytes() for k in global_weights)


def test_clipping_tames_a_scaled_update_for_fedavg() -> None:
    rows = [[1.0, 0.0], [1.0, 0.0], [1000.0, 0.0]]
    result = NormClipping(FedAvg(), 1.0).aggregate(ZERO, _updates(rows))
    np.testing.assert_array_equal(result.weights["w"], [1.0, 0.0])
    assert result.clipped == ("0x03",)
    with pytest.raises(ValueError):
        NormClipping(FedAvg(), 0.0)
