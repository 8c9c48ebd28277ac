"""The update norm bound: 1e30 weights and gross attacks are refused with a reason, honest demo updates never are,
and the verdict is deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedchain.learning.aggregation import FedAvg
from fedchain.learning.aggregation.base import Update
from fedchain.learning.aggregation.bound import (
    DEFAULT_MAX_RELATIVE_DISTANCE,
    MIN_REFERENCE_NORM,
    REASON_TOO_LARGE,
    UpdateBound,
    UpdateTooLarge,
    weights_norm,
)
from fedchain.learning.attacks import poison_model
from fedchain.learning.data import OnlineStream, device_partition, load_dataset
from fedchain.learning.model import build_model, get_weights, set_weights
from fedchain.learning.spec import default_task_spec
from fedchain.learning.train import round_seed, train_local


def initial() -> dict[str, np.ndarray]:
    spec = default_task_spec()
    return get_weights(build_model(spec.model, seed=spec.seed))


def test_weights_of_1e30_are_refused_with_the_reason() -> None:
    x = initial()
    huge = {name: np.full_like(value, 1e30) for name, value in x.items()}
    with pytest.raises(UpdateTooLarge, match="update-too-large") as caught:
        UpdateBound().check(x, huge)
    assert caught.value.reason == REASON_TOO_LARGE
    assert isinstance(caught.value, ValueError)  # recorded by the aggregator's per-update handler


def test_the_limit_is_relative_to_the_global_model_with_a_floor() -> None:
    x = initial()
    assert UpdateBound().limit(x) == DEFAULT_MAX_RELATIVE_DISTANCE * weights_norm(x)
    assert 4.0 < weights_norm(x) < 4.5  # the figure the module docstring quotes (4.22)
    zeros = {name: np.zeros_like(value) for name, value in x.items()}
    assert UpdateBound(2.0).limit(zeros) == 2.0 * MIN_REFERENCE_NORM
    assert UpdateBound(0).limit(x) == math.inf  # 0 turns the bound off
    assert UpdateBound(0).check(x, {name: np.full_like(v, 1e30) for name, v in x.items()}) > 1e30


def test_the_boundary_is_inclusive() -> None:
    x = {"w": np.zeros(4, np.float32)}
    at = {"w": np.array([3.0, 4.0, 0.0, 0.0], np.float32)}  # distance 5 = 5 x max(0, 1)
    assert UpdateBound(5.0).check(x, at) == 5.0
    with pytest.raises(UpdateTooLarge):
        UpdateBound(4.999).check(x, at)


@pytest.mark.parametrize("attack", ["gaussian", "constant"])
def test_gross_attacks_exceed_the_default(attack: str) -> None:
    x = initial()
    with pytest.raises(UpdateTooLarge):
        UpdateBound().check(x, poison_model(attack, x, x, seed=1))


def test_the_verdict_does_not_depend_on_tensor_order() -> None:
    x = initial()
    rng = np.random.default_rng(0)
    w = {name: (value + rng.normal(0, 0.1, value.shape)).astype(np.float32) for name, value in x.items()}
    shuffled = dict(reversed(list(w.items())))
    assert UpdateBound().check(x, w) == UpdateBound().check(dict(reversed(list(x.items()))), shuffled)


@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan, True, "5"])
def test_bad_bounds_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        UpdateBound(value)  # type: ignore[arg-type]


def test_honest_demo_updates_stay_far_below_the_default() -> None:
    """The demo's setting (5 IID devices, online data, FedAvg), trained as the devices train: the largest honest
    step is 0.105 x ||x|| (the module docstring's figure), a margin of more than 40 to the default of 5."""
    torch.set_num_threads(1)
    spec = default_task_spec()
    train, _ = load_dataset(spec.dataset)
    x = initial()
    streams = [OnlineStream(device_partition(train, i, 5, None, 0), 0.3, 0.1, seed=i) for i in range(5)]
    worst = 0.0
    for r in range(1, 11):
        updates = []
        for i, stream in enumerate(streams):
            device = f"0x{i + 2:040x}"
            model = build_model(spec.model, seed=spec.seed)
            set_weights(model, x)
            seed = round_seed(spec.seed, r, device)
            train_local(model, stream.seen(r - 1), spec.train, seed=seed)
            w = get_weights(model)
            distance = UpdateBound().check(x, w)
            worst = max(worst, distance / weights_norm(x))
            updates.append(Update(device, w, len(stream.seen(r - 1))))
        x = FedAvg().aggregate(x, updates).weights
    assert 0.05 < worst < 0.12, worst
    assert worst * 40 < DEFAULT_MAX_RELATIVE_DISTANCE
