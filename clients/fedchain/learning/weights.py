"""Checking weights against a model's tensor names and shapes: numpy only, so strategies and the aggregator's
screening do not import torch (and `fedchain.learning.model` re-exports these for its callers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np

from fedchain.learning.types import Weights

REASONS: Final = ("missing-tensor", "unexpected-tensor", "shape-mismatch", "dtype-mismatch", "non-finite")


class InvalidWeights(ValueError):
    """Weights that do not fit the model; `reason` is one of REASONS, so callers can tell the cases apart."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown InvalidWeights reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def check_weights(weights: Weights, expected_shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise InvalidWeights unless `weights` has exactly the expected names and shapes, float32, all finite."""
    if not isinstance(weights, Mapping):
        raise InvalidWeights("unexpected-tensor", f"weights must be a mapping of name to array, got {type(weights)}")
    missing = sorted(set(expected_shapes) - set(weights))
    if missing:
        raise InvalidWeights("missing-tensor", f"missing tensor(s) {missing}")
    unexpected = sorted(map(str, set(weights) - set(expected_shapes)))
    if unexpected:
        raise InvalidWeights("unexpected-tensor", f"unexpected tensor(s) {unexpected}")
    for name, shape in expected_shapes.items():
        value = weights[name]
        if not isinstance(value, np.ndarray):
            raise InvalidWeights(
                "dtype-mismatch", f"{name}: expected a float32 numpy array, got {type(value).__name__}"
            )
        if value.shape != tuple(shape):
            raise InvalidWeights("shape-mismatch", f"{name}: expected shape {tuple(shape)}, got {value.shape}")
        # Only float32: silently casting float64/float16 would hide a device sending something else than agreed.
        if value.dtype != np.float32:
            raise InvalidWeights("dtype-mismatch", f"{name}: expected dtype float32, got {value.dtype}")
        if not np.isfinite(value).all():
            raise InvalidWeights("non-finite", f"{name}: contains NaN or Inf")


__all__ = ["REASONS", "InvalidWeights", "check_weights"]
