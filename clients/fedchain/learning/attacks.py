"""Attacks for evaluating robust aggregation: pure functions turning an honest update into a malicious one.

Model-poisoning attacks act on the delta d = w - x of a trained model w from the global model x it started from,
computed in float64 and returned as float32 weights of the same shapes (so they pass `check_weights`):

* `sign_flip`: w' = x - factor·d (Damaskinos et al. 2018; Allen-Zhu et al. 2020 "Byzantine-Resilient Non-Convex
  SGD"), pushing the model up the loss instead of down.
* `scale`: w' = x + factor·d, factor 10 by default (model replacement / boosting, Bagdasaryan et al. 2020 "How To
  Backdoor Federated Learning"; Bhagoji et al. 2019).
* `gaussian_noise`: w' = w + N(0, sigma²) per parameter, seeded (the Gaussian attack of Fang et al. 2020, "Local
  Model Poisoning Attacks to Byzantine-Robust Federated Learning").
* `constant`: every coordinate of the delta set to `value`: w' = x + value (Li et al. 2019, "RSA").
Data poisoning:
* `flip_labels`: label flipping, y -> num_classes - 1 - y (Tolpegin et al. 2020, "Data Poisoning Attacks Against
  Federated Learning Systems"); the device then trains honestly on the poisoned data.
"""

from __future__ import annotations

import numpy as np

from fedchain.learning.data import Dataset
from fedchain.learning.types import Weights
from fedchain.learning.weights import check_weights


def _shapes(global_weights: Weights) -> dict[str, tuple[int, ...]]:
    return {name: tuple(np.shape(value)) for name, value in global_weights.items()}


def _affine(global_weights: Weights, weights: Weights, factor: float) -> Weights:
    """x + factor·(w - x), float64 then float32, in the global model's key order."""
    check_weights(weights, _shapes(global_weights))
    out: Weights = {}
    for name, ref in global_weights.items():
        x = ref.astype(np.float64)
        out[name] = (x + factor * (weights[name].astype(np.float64) - x)).astype(np.float32)
    return out


def sign_flip(global_weights: Weights, weights: Weights, factor: float = 1.0) -> Weights:
    """Flip the delta: x - factor·(w - x). factor > 1 also boosts it."""
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    return _affine(global_weights, weights, -float(factor))


def scale(global_weights: Weights, weights: Weights, factor: float = 10.0) -> Weights:
    """Boost the delta: x + factor·(w - x)."""
    if not np.isfinite(factor):
        raise ValueError(f"factor must be finite, got {factor}")
    return _affine(global_weights, weights, float(factor))


def gaussian_noise(weights: Weights, sigma: float, seed: int) -> Weights:
    """w + N(0, sigma²) noise, drawn with numpy's default_rng(seed) over the tensors in sorted-name order."""
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    check_weights(weights, _shapes(weights))
    rng = np.random.default_rng(seed)
    noisy = {
        name: (weights[name].astype(np.float64) + rng.normal(0.0, sigma, np.shape(weights[name]))).astype(np.float32)
        for name in sorted(weights)
    }
    return {name: noisy[name] for name in weights}


def constant(global_weights: Weights, value: float) -> Weights:
    """The update whose delta is `value` in every coordinate: x + value."""
    if not np.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    check_weights(global_weights, _shapes(global_weights))
    return {name: (ref.astype(np.float64) + float(value)).astype(np.float32) for name, ref in global_weights.items()}


def flip_labels(dataset: Dataset, num_classes: int | None = None) -> Dataset:
    """A copy of `dataset` with label y replaced by num_classes - 1 - y (0 <-> 1 for binary tasks).

    num_classes defaults to max(y) + 1 (at least 2).
    """
    y = dataset.y
    if num_classes is None:
        num_classes = max(int(y.max()) + 1 if len(y) else 0, 2)
    if num_classes < 2 or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return Dataset(np.array(dataset.x, copy=True), (num_classes - 1) - y)


# Named attacks a malicious device can run (`fedchain device --attack NAME`, `fedchain demo --attackers P`).
# "label-flip" poisons the data before training; the others rewrite the trained model.
DEVICE_ATTACKS = ("sign-flip", "sign-flip-x10", "scale", "gaussian", "constant", "label-flip")


def check_attack(name: str) -> str:
    """`name` if it is a known device attack; ValueError listing the known ones otherwise."""
    if name not in DEVICE_ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(DEVICE_ATTACKS)}")
    return name


def poison_model(name: str, global_weights: Weights, weights: Weights, seed: int) -> Weights:
    """The malicious model a device running attack `name` submits instead of its honestly trained `weights`.

    Data attacks (label-flip) leave the model as trained: the poison went into the training data.
    """
    check_attack(name)
    if name == "sign-flip":
        return sign_flip(global_weights, weights)
    if name == "sign-flip-x10":
        return sign_flip(global_weights, weights, 10.0)
    if name == "scale":
        return scale(global_weights, weights, 10.0)
    if name == "gaussian":
        return gaussian_noise(weights, sigma=1.0, seed=seed)
    if name == "constant":
        return constant(global_weights, 1.0)
    return weights


__all__ = [
    "DEVICE_ATTACKS",
    "check_attack",
    "constant",
    "flip_labels",
    "gaussian_noise",
    "poison_model",
    "scale",
    "sign_flip",
]
