"""FedAvg against hand-computed cases, and its validation."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.learning.aggregation import StreamingFedAvg, fedavg
from fedchain.learning.model import InvalidWeights

SHAPES = {"w": (2,)}


def _w(*values: float) -> dict[str, np.ndarray]:
    return {"w": np.array(values, dtype=np.float32)}


def test_weighted_mean_by_hand() -> None:
    result = fedavg([(_w(1, 2), 1), (_w(3, 4), 3)])
    # (1*[1,2] + 3*[3,4]) / 4 = [10, 14] / 4
    np.testing.assert_array_equal(result["w"], np.array([2.5, 3.5], dtype=np.float32))
    assert result["w"].dtype == np.float32


def test_equal_weights_is_plain_mean() -> None:
    updates = [(_w(1, -1), 5), (_w(2, 0), 5), (_w(6, 4), 5)]
    np.testing.assert_array_equal(fedavg(updates)["w"], np.array([3, 1], dtype=np.float32))


def test_single_update_returns_itself() -> None:
    rng = np.random.default_rng(0)
    weights = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    result = fedavg([(weights, 17)])
    assert list(result) == ["a", "b"]
    for k in weights:
        np.testing.assert_array_equal(result[k], weights[k])
        assert result[k] is not weights[k]


def test_streaming_counts() -> None:
    agg = StreamingFedAvg(SHAPES)
    assert agg.count == 0 and agg.total_samples == 0
    agg.add(_w(1, 1), 2)
    agg.add(_w(4, 4), 1)
    assert agg.count == 2 and agg.total_samples == 3
    np.testing.assert_array_equal(agg.result()["w"], np.array([2, 2], dtype=np.float32))
    # result() does not consume: more updates can follow.
    agg.add(_w(2, 2), 1)
    np.testing.assert_array_equal(agg.result()["w"], np.array([2, 2], dtype=np.float32))


def test_order_fixed_gives_identical_bits() -> None:
    rng = np.random.default_rng(1)
    updates = [({"w": rng.standard_normal(1000).astype(np.float32)}, int(n)) for n in rng.integers(1, 100, 7)]
    a, b = fedavg(updates), fedavg(list(updates))
    assert a["w"].tobytes() == b["w"].tobytes()
    np.testing.assert_allclose(
        a["w"], sum(n * w["w"].astype(np.float64) for w, n in updates) / sum(n for _, n in updates), rtol=1e-6
    )


def test_empty_rejected() -> None:
    with pytest.raises(ValueError):
        StreamingFedAvg(SHAPES).result()
    with pytest.raises(ValueError):
        fedavg([])


@pytest.mark.parametrize("num_samples", [0, -3, True, 2.5])
def test_bad_num_samples(num_samples: object) -> None:
    agg = StreamingFedAvg(SHAPES)
    with pytest.raises(ValueError):
        agg.add(_w(1, 2), num_samples)  # type: ignore[arg-type]
    assert agg.count == 0


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        ({}, "missing-tensor"),
        ({"w": np.zeros(2, np.float32), "x": np.zeros(1, np.float32)}, "unexpected-tensor"),
        ({"w": np.zeros(3, np.float32)}, "shape-mismatch"),
        ({"w": np.zeros(2, np.float64)}, "dtype-mismatch"),
        ({"w": np.array([1, np.nan], np.float32)}, "non-finite"),
    ],
)
def test_invalid_updates_rejected_without_effect(weights: dict[str, np.ndarray], reason: str) -> None:
    agg = StreamingFedAvg(SHAPES)
    agg.add(_w(1, 2), 1)
    with pytest.raises(InvalidWeights) as info:
        agg.add(weights, 10)
    assert info.value.reason == reason
    assert agg.count == 1 and agg.total_samples == 1
    np.testing.assert_array_equal(agg.result()["w"], np.array([1, 2], dtype=np.float32))


def test_fedavg_rejects_mismatched_later_update() -> None:
    with pytest.raises(InvalidWeights):
        fedavg([(_w(1, 2), 1), ({"w": np.zeros(3, np.float32)}, 1)])
