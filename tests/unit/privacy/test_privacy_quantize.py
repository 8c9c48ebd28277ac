"""Fixed-point quantisation into Z_{2^32}: rounding bound, clipping, overflow capacity, layout."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.privacy import QuantParams, VectorLayout, dequantize, flatten, quantize, unflatten
from fedchain.privacy.quantize import DESIGN_MAX_DEVICES, SIGNED_MAX


def test_defaults_admit_the_design_target_of_1000_devices() -> None:
    params = QuantParams()
    assert (params.scale_bits, params.clip_range) == (20, 2.0)
    assert params.max_abs_int == 2**21
    assert params.max_devices == 1023 >= DESIGN_MAX_DEVICES
    assert DESIGN_MAX_DEVICES * params.max_abs_int <= SIGNED_MAX
    params.check_capacity(1)
    params.check_capacity(1023)
    for bad in (0, 1024, 10**6):
        with pytest.raises(ValueError):
            params.check_capacity(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_bits": 31},
        {"scale_bits": -1},
        {"clip_range": 0.0},
        {"clip_range": float("nan")},
        {"clip_range": float("inf")},
        {"scale_bits": 30, "clip_range": 2.0},
        {"scale_bits": 2.5},
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        QuantParams(**kwargs)  # type: ignore[arg-type]


def test_single_value_error_is_at_most_half_a_step_and_ties_round_to_even() -> None:
    params = QuantParams()
    x = np.random.default_rng(1).uniform(-2.0, 2.0, 100_000)
    back = dequantize(quantize(x, params), params)
    assert np.max(np.abs(back - x)) <= 2.0 ** -(params.scale_bits + 1)
    step = 2.0**-params.scale_bits
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5]) * step
    assert quantize(ties, params).view(np.int32).tolist() == [0, 2, 2, 0, -2]


def test_negative_values_are_twos_complement_in_the_ring() -> None:
    params = QuantParams(scale_bits=0, clip_range=10.0)
    assert quantize(np.array([-1.0, 0.0, 1.0, -10.0]), params).tolist() == [2**32 - 1, 0, 1, 2**32 - 10]


@pytest.mark.parametrize("n", [2, 50, 1000])
def test_sum_of_n_dequantised_values_is_within_n_half_steps(n: int) -> None:
    params = QuantParams()
    values = np.random.default_rng(n).uniform(-2.0, 2.0, (n, 2_000))
    ring = np.zeros(2_000, dtype=np.uint32)
    for row in values:
        np.add(ring, quantize(row, params), out=ring)
    total = dequantize(ring, params, n)
    bound = params.sum_error_bound(n)
    assert bound == n * 2.0 ** -(params.scale_bits + 1)
    assert np.max(np.abs(total - values.sum(axis=0))) <= bound


def test_extreme_sums_at_capacity_do_not_overflow_and_one_more_would() -> None:
    params = QuantParams()
    n = params.max_devices
    for sign in (1.0, -1.0):
        q = quantize(np.full(4, sign * 5.0), params)  # clipped to ±2
        ring = (q.astype(np.uint64) * n % 2**32).astype(np.uint32)
        assert np.all(dequantize(ring, params, n) == sign * 2.0 * n)
    over = (quantize(np.full(1, 2.0), params).astype(np.uint64) * (n + 1) % 2**32).astype(np.uint32)
    assert over.view(np.int32)[0] < 0  # the wrap that check_capacity exists to prevent
    with pytest.raises(ValueError, match="overflow"):
        dequantize(over, params, n + 1)


def test_values_are_clipped_and_non_finite_values_refused() -> None:
    params = QuantParams(scale_bits=10, clip_range=1.0)
    back = dequantize(quantize(np.array([3.0, -7.5, 0.25]), params), params)
    assert back.tolist() == [1.0, -1.0, 0.25]
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="NaN or infinite"):
            quantize(np.array([0.0, bad]), params)


def test_flatten_uses_sorted_names_and_unflatten_inverts_it() -> None:
    weights = {
        "b.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a.bias": np.array([10.0, 11.0], dtype=np.float32),
        "c": np.array(12.0, dtype=np.float32),
    }
    flat = flatten(weights)
    assert flat.dtype == np.float64
    assert flat.tolist() == [10.0, 11.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 12.0]
    layout = VectorLayout.of(weights)
    assert layout.size == 9
    back = unflatten(flat, layout, np.float32)
    assert list(back) == ["a.bias", "b.weight", "c"]
    for name in weights:
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], weights[name])
    with pytest.raises(ValueError):
        unflatten(flat[:-1], layout)


def test_flatten_refuses_empty_and_multidimensional_input() -> None:
    for bad in ({}, np.zeros(0), np.zeros((2, 2))):
        with pytest.raises(ValueError):
            flatten(bad)
    with pytest.raises(TypeError):
        flatten([1.0, 2.0])  # type: ignore[arg-type]


def test_dequantize_refuses_non_ring_vectors() -> None:
    with pytest.raises(ValueError):
        dequantize(np.zeros(3, dtype=np.int64))
