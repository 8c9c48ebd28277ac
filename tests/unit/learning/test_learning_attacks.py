"""The attack library: each attack's definition on hand-made updates."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.learning import attacks
from fedchain.learning.data import Dataset
from fedchain.learning.model import check_weights

GLOBAL = {"w": np.array([1.0, 2.0, 3.0], np.float32), "b": np.array([0.5], np.float32)}
HONEST = {"w": np.array([1.5, 2.0, 2.0], np.float32), "b": np.array([1.0], np.float32)}
SHAPES = {"w": (3,), "b": (1,)}


def test_sign_flip() -> None:
    out = attacks.sign_flip(GLOBAL, HONEST)
    np.testing.assert_array_equal(out["w"], [0.5, 2.0, 4.0])
    np.testing.assert_array_equal(out["b"], [0.0])
    np.testing.assert_array_equal(attacks.sign_flip(GLOBAL, HONEST, 4.0)["w"], [-1.0, 2.0, 7.0])
    check_weights(out, SHAPES)
    with pytest.raises(ValueError):
        attacks.sign_flip(GLOBAL, HONEST, 0.0)


def test_scale_defaults_to_ten() -> None:
    out = attacks.scale(GLOBAL, HONEST)
    np.testing.assert_array_equal(out["w"], [6.0, 2.0, -7.0])
    np.testing.assert_array_equal(out["b"], [5.5])
    assert list(out) == ["w", "b"] and all(v.dtype == np.float32 for v in out.values())


def test_gaussian_noise_is_seeded() -> None:
    a = attacks.gaussian_noise(HONEST, sigma=0.5, seed=3)
    b = attacks.gaussian_noise(HONEST, sigma=0.5, seed=3)
    c = attacks.gaussian_noise(HONEST, sigma=0.5, seed=4)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert any(a[k].tobytes() != c[k].tobytes() for k in a)
    check_weights(a, SHAPES)
    np.testing.assert_array_equal(attacks.gaussian_noise(HONEST, sigma=0.0, seed=1)["w"], HONEST["w"])
    big = attacks.gaussian_noise({"x": np.zeros(20000, np.float32)}, sigma=2.0, seed=0)["x"]
    assert abs(big.std() - 2.0) < 0.05 and abs(big.mean()) < 0.05


def test_constant() -> None:
    out = attacks.constant(GLOBAL, 10.0)
    np.testing.assert_array_equal(out["w"], [11.0, 12.0, 13.0])
    np.testing.assert_array_equal(out["b"], [10.5])


def test_attacks_validate_inputs() -> None:
    with pytest.raises(ValueError):
        attacks.scale(GLOBAL, {"w": HONEST["w"]})
    with pytest.raises(ValueError):
        attacks.constant(GLOBAL, float("nan"))
    with pytest.raises(ValueError):
        attacks.gaussian_noise(HONEST, sigma=-1.0, seed=0)


def test_flip_labels() -> None:
    data = Dataset(np.arange(8, dtype=np.float32).reshape(4, 2), np.array([0, 1, 1, 0]))
    flipped = attacks.flip_labels(data)
    np.testing.assert_array_equal(flipped.y, [1, 0, 0, 1])
    np.testing.assert_array_equal(flipped.x, data.x)
    np.testing.assert_array_equal(data.y, [0, 1, 1, 0])  # input untouched
    np.testing.assert_array_equal(attacks.flip_labels(Dataset(data.x, np.array([0, 1, 2, 2])), 3).y, [2, 1, 0, 0])
    with pytest.raises(ValueError):
        attacks.flip_labels(Dataset(data.x, np.array([0, 1, 2, 3])), 3)
