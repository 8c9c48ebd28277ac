"""Bespoke models (FedPer private heads, fine-tuning), in small deterministic runs."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.learning.data import Dataset, load_dataset
from fedchain.learning.model import build_model, get_weights, weight_shapes
from fedchain.learning.personalize import (
    body_names,
    compare_device,
    fedper_local_round,
    fine_tune,
    head_names,
    merge_weights,
    shared_payload,
    split_local,
    split_weights,
    train_alone,
    train_head,
)
from fedchain.learning.spec import default_task_spec

SPEC = default_task_spec()


def small_device(n: int = 20, seed: int = 0) -> Dataset:
    train, _ = load_dataset(SPEC.dataset)
    return train.subset(np.random.default_rng(seed).choice(len(train), size=n, replace=False))


def test_split_names_for_the_default_model() -> None:
    assert head_names(SPEC.model) == ("output.weight", "output.bias")
    assert body_names(SPEC.model) == ("hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "hidden.1.bias")


def test_split_merge_round_trip() -> None:
    weights = get_weights(build_model(SPEC.model, seed=3))
    body, head = split_weights(weights, SPEC.model)
    assert set(body).isdisjoint(head) and set(body) | set(head) == set(weights)
    merged = merge_weights(body, head, SPEC.model)
    assert list(merged) == list(weight_shapes(SPEC.model))  # state_dict order
    for name in weights:
        np.testing.assert_array_equal(merged[name], weights[name])
    with pytest.raises(ValueError, match="head"):
        merge_weights(body, {"output.weight": head["output.weight"]}, SPEC.model)
    with pytest.raises(ValueError, match="body"):
        merge_weights({**body, "output.bias": head["output.bias"]}, head, SPEC.model)
    with pytest.raises(ValueError, match="shape"):
        merge_weights(body, {**head, "output.bias": np.zeros(5, np.float32)}, SPEC.model)
    with pytest.raises(ValueError):
        split_weights(body, SPEC.model)


def test_payload_is_body_only_and_the_head_stays() -> None:
    weights = get_weights(build_model(SPEC.model, seed=0))
    assert set(shared_payload(weights, SPEC.model)) == set(body_names(SPEC.model))
    body, head = split_weights(weights, SPEC.model)
    sent, new_head = fedper_local_round(SPEC, body, head, small_device(), seed=1)
    assert set(sent) == set(body_names(SPEC.model)) and set(new_head) == set(head_names(SPEC.model))
    assert not np.array_equal(new_head["output.weight"], head["output.weight"])  # trained, and kept


def test_split_local_is_stratified_disjoint_and_seeded() -> None:
    data = small_device(40, seed=2)
    train, held = split_local(data, 0.25, seed=5)
    assert len(train) + len(held) == 40 and len(held) == pytest.approx(10, abs=1)
    rows = {tuple(r) for r in data.x.tolist()}
    assert {tuple(r) for r in train.x.tolist()} | {tuple(r) for r in held.x.tolist()} == rows
    assert {tuple(r) for r in train.x.tolist()}.isdisjoint({tuple(r) for r in held.x.tolist()})
    assert set(np.unique(held.y)) == set(np.unique(data.y))
    again = split_local(data, 0.25, seed=5)[1]
    np.testing.assert_array_equal(again.x, held.x)


def test_fine_tune_keeps_the_best_validation_epoch() -> None:
    global_weights = get_weights(build_model(SPEC.model, seed=0))
    data = small_device()
    none = fine_tune(SPEC, global_weights, data, epochs=0)
    assert none.epochs == 0
    for name in global_weights:
        np.testing.assert_array_equal(none.weights[name], global_weights[name])
    tuned = fine_tune(SPEC, global_weights, data, epochs=5, seed=1)
    assert 0 <= tuned.epochs <= 5
    assert all(
        np.array_equal(tuned.weights[k], v) for k, v in fine_tune(SPEC, global_weights, data, 5, seed=1).weights.items()
    )


def test_train_head_leaves_the_body_alone() -> None:
    body, head = split_weights(get_weights(build_model(SPEC.model, seed=0)), SPEC.model)
    new_head = train_head(SPEC, body, head, small_device(), epochs=2, seed=0)
    assert not np.array_equal(new_head["output.weight"], head["output.weight"])
    unchanged = train_head(SPEC, body, head, small_device(), epochs=0, seed=0)
    assert all(np.array_equal(unchanged[k], head[k]) for k in head)


def test_compare_device_is_deterministic() -> None:
    weights = get_weights(build_model(SPEC.model, seed=0))
    body, head = split_weights(weights, SPEC.model)
    local, held = split_local(small_device(30), 0.3, seed=0)
    args = (SPEC, weights, body, head, local, held)
    first = compare_device(*args, seed=4, fine_tune_epochs=2, alone_epochs=3, head_epochs=1)
    assert first == compare_device(*args, seed=4, fine_tune_epochs=2, alone_epochs=3, head_epochs=1)
    for value in (first.global_model, first.alone, first.fine_tuned, first.personalized):
        assert 0.0 <= value <= 1.0
    assert first.test_samples == len(held)
    assert set(train_alone(SPEC, local, epochs=1)) == set(weights)
