"""Model construction, weights in and out, and weight validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedchain.learning.model import InvalidWeights, build_model, check_weights, get_weights, set_weights, weight_shapes
from fedchain.learning.spec import ModelSpec


def test_shapes_match_built_model() -> None:
    for spec in (ModelSpec(), ModelSpec(hidden=()), ModelSpec(input_dim=5, hidden=(7, 3, 2), num_classes=4)):
        weights = get_weights(build_model(spec))
        assert {k: v.shape for k, v in weights.items()} == weight_shapes(spec)
        assert list(weights) == list(weight_shapes(spec))


def test_names_do_not_depend_on_dropout() -> None:
    assert list(get_weights(build_model(ModelSpec(dropout=0.3)))) == list(weight_shapes(ModelSpec()))


def test_forward_gives_logits() -> None:
    model = build_model(ModelSpec(input_dim=4, hidden=(3,), num_classes=3))
    assert model(torch.zeros(5, 4)).shape == (5, 3)


def test_seeded_init() -> None:
    a = get_weights(build_model(ModelSpec(), seed=1))
    b = get_weights(build_model(ModelSpec(), seed=1))
    c = get_weights(build_model(ModelSpec(), seed=2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_build_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(ModelSpec(), seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_get_set_round_trip() -> None:
    source = build_model(ModelSpec(), seed=1)
    target = build_model(ModelSpec(), seed=2)
    weights = get_weights(source)
    assert all(v.dtype == np.float32 for v in weights.values())
    set_weights(target, weights)
    out = get_weights(target)
    assert all(np.array_equal(out[k], weights[k]) for k in weights)
    # Copies both ways: changing the arrays does not change the model, and vice versa.
    weights["output.bias"][:] = 42.0
    assert not np.array_equal(get_weights(target)["output.bias"], weights["output.bias"])


def _weights() -> dict[str, np.ndarray]:
    return get_weights(build_model(ModelSpec()))


def _reason(weights: dict[str, np.ndarray]) -> str:
    with pytest.raises(InvalidWeights) as info:
        check_weights(weights, weight_shapes(ModelSpec()))
    assert isinstance(info.value, ValueError)
    return info.value.reason


def test_check_accepts_valid() -> None:
    check_weights(_weights(), weight_shapes(ModelSpec()))


def test_missing_tensor() -> None:
    w = _weights()
    del w["output.bias"]
    assert _reason(w) == "missing-tensor"


def test_unexpected_tensor() -> None:
    w = _weights()
    w["backdoor"] = np.zeros(1, dtype=np.float32)
    assert _reason(w) == "unexpected-tensor"


def test_shape_mismatch() -> None:
    w = _weights()
    w["output.bias"] = np.zeros(3, dtype=np.float32)
    assert _reason(w) == "shape-mismatch"


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_dtype_mismatch(dtype: type) -> None:
    w = _weights()
    w["output.bias"] = w["output.bias"].astype(dtype)
    assert _reason(w) == "dtype-mismatch"


def test_not_an_array() -> None:
    w: dict = _weights()
    w["output.bias"] = [0.0, 0.0]
    assert _reason(w) == "dtype-mismatch"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(bad: float) -> None:
    w = _weights()
    w["hidden.0.weight"][3, 4] = bad
    assert _reason(w) == "non-finite"


def test_set_weights_validates_and_leaves_model_alone() -> None:
    model = build_model(ModelSpec())
    before = get_weights(model)
    w = _weights()
    w["output.weight"][0, 0] = np.nan
    with pytest.raises(InvalidWeights) as info:
        set_weights(model, w)
    assert info.value.reason == "non-finite" and "output.weight" in str(info.value)
    after = get_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
