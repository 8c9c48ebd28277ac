"""JobPlan: canonical JSON and digest, validation, shards, seeds, pinned data, and the single-process baseline."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from fedchain.learning.model import InvalidWeights, build_model, set_weights, weight_shapes
from fedchain.learning.spec import DatasetSpec, ModelSpec, TaskSpec, TrainSpec
from fedchain.learning.train import evaluate
from fedchain.learning.units import (
    DataMismatch,
    JobPlan,
    default_ecg_task,
    default_plan,
    evaluate_plan_model,
    initial_checkpoint,
    merge_stage,
    plan_data,
    result_digest,
    run_unit,
    shards,
    train_single_process,
    unit_seed,
)


def small_plan(**changes: object) -> JobPlan:
    plan = JobPlan(task=default_ecg_task(), num_stages=2, units_per_stage=3, steps_per_unit=10, seed=5)
    return dataclasses.replace(plan, **changes)  # type: ignore[arg-type]


def test_json_round_trip_and_canonical_bytes() -> None:
    plan = small_plan(data_digest="ab" * 32)
    data = plan.to_json()
    assert JobPlan.from_json(data) == plan
    assert JobPlan.from_json(data).to_json() == data
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    # Key order in the input does not matter; the canonical bytes do not change.
    shuffled = json.dumps(dict(reversed(list(json.loads(data).items())))).encode()
    assert JobPlan.from_json(shuffled).to_json() == data
    assert plan.digest() == hashlib.sha256(data).digest()
    assert plan.batch_size == 32 and plan.lr == 0.1 and plan.momentum == 0.9 and plan.num_units == 6


def test_digest_known_value() -> None:
    # Pinned: a change here changes every posted job's plan digest.
    plan = small_plan()
    assert plan.to_json() == (
        b'{"data_digest":"","num_stages":2,"seed":5,"shard_rule":"iid","steps_per_unit":10,'
        b'"task":{"dataset":{"name":"ecg","seed":0,"test_fraction":0.25},'
        b'"model":{"dropout":0.0,"hidden":[8,16],"input_dim":250,"kind":"cnn1d","num_classes":4},'
        b'"seed":0,"strategy":{"name":"fedavg","params":{}},'
        b'"train":{"batch_size":32,"local_epochs":1,"lr":0.1,"momentum":0.9,"weight_decay":0.0},"version":1},'
        b'"units_per_stage":3,"version":1}'
    )
    assert plan.digest().hex() == hashlib.sha256(plan.to_json()).hexdigest()
    assert small_plan(seed=6).digest() != plan.digest()


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        b'{"task":{}}',  # no version
        b'{"version":1}',  # no task
        b'{"version":1,"version":1,"task":{"version":1}}',  # duplicate key
        b'{"version":2,"task":{"version":1}}',
        b'{"version":1,"task":{"version":1},"extra":1}',
        b'{"version":1,"task":{"version":1},"num_stages":true}',
        b'{"version":1,"task":{"version":1},"units_per_stage":0}',
        b'{"version":1,"task":{"version":1},"shard_rule":"dirichlet"}',
        b'{"version":1,"task":{"version":1},"data_digest":"ABC"}',
    ],
)
def test_from_json_rejects(text: bytes) -> None:
    with pytest.raises(ValueError):
        JobPlan.from_json(text)


@pytest.mark.parametrize(
    "task",
    [
        dataclasses.replace(default_ecg_task(), train=TrainSpec(local_epochs=2)),
        dataclasses.replace(default_ecg_task(), strategy="median"),
        dataclasses.replace(default_ecg_task(), model=ModelSpec(kind="cnn1d", input_dim=250, hidden=(4,), dropout=0.1)),
    ],
)
def test_plan_rejects_tasks_units_cannot_run(task: TaskSpec) -> None:
    with pytest.raises(ValueError):
        JobPlan(task=task)


def test_shards_disjoint_covering_and_seeded() -> None:
    plan = small_plan(units_per_stage=7)
    train, _ = plan_data(plan)
    parts = shards(plan)
    assert len(parts) == 7
    joined = np.concatenate(parts)
    assert len(joined) == len(train) and np.array_equal(np.sort(joined), np.arange(len(train)))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(np.array_equal(p, np.sort(p)) for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, shards(plan), strict=True))
    other = shards(small_plan(units_per_stage=7, seed=6))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))
    # Each shard sees every class.
    assert all(len(np.unique(train.y[p])) == 4 for p in parts)


def test_unit_seeds_stable_and_distinct() -> None:
    plan = small_plan()
    seeds = {unit_seed(plan, s, i) for s in range(plan.num_stages) for i in range(plan.units_per_stage)}
    assert len(seeds) == plan.num_units and all(0 <= s < 2**63 for s in seeds)
    assert unit_seed(plan, 1, 2) == unit_seed(small_plan(), 1, 2)
    assert unit_seed(plan, 1, 2) == 2796489958240156931
    for stage, index in ((2, 0), (0, 3), (-1, 0), (True, 0)):
        with pytest.raises(ValueError):
            unit_seed(plan, stage, index)  # type: ignore[arg-type]


def test_initial_checkpoint_deterministic_and_in_bounds() -> None:
    plan = small_plan()
    start = initial_checkpoint(plan)
    assert {k: v.shape for k, v in start.items()} == weight_shapes(plan.task.model)
    assert all(v.dtype == np.float32 for v in start.values())
    assert result_digest(start) == result_digest(initial_checkpoint(small_plan()))
    assert result_digest(start) != result_digest(initial_checkpoint(small_plan(seed=6)))
    assert np.abs(start["conv.1.weight"]).max() <= 1 / np.sqrt(8 * 5)
    assert np.abs(start["output.bias"]).max() <= 1 / np.sqrt(16)
    set_weights(build_model(plan.task.model), start)  # fits the registered torch model


def test_run_unit_rejects_bad_input() -> None:
    plan = small_plan()
    start = initial_checkpoint(plan)
    with pytest.raises(InvalidWeights):
        run_unit(plan, {k: v for k, v in start.items() if k != "output.bias"}, 0, 0)
    with pytest.raises(InvalidWeights):
        run_unit(plan, {**start, "output.bias": start["output.bias"].astype(np.float64)}, 0, 0)
    with pytest.raises(ValueError):
        run_unit(plan, start, 0, 3)
    with pytest.raises(DataMismatch):
        run_unit(small_plan(data_digest="00" * 32), start, 0, 0)


def test_pin_data_digest_is_stable() -> None:
    pinned = small_plan().pin_data()
    assert len(pinned.data_digest) == 64 and pinned.pin_data() == pinned
    # Pinned: the ECG dataset's bits (shipped beat bank + generator + split). A change here strands posted jobs.
    assert pinned.data_digest == "3716c355b82ad12c39060a8fb91d14a61b68abeb4a2808b51724a34192b411f2"


def test_single_process_equals_units_in_any_order_and_learns() -> None:
    """The market's schedule (units finishing in any order, merged by index) gives the baseline's bits."""
    plan = small_plan(num_stages=2, units_per_stage=2, steps_per_unit=40).pin_data()
    final, accuracies = train_single_process(plan)
    assert len(accuracies) == 2 and accuracies[-1] > 0.5  # chance is 0.25
    checkpoint = initial_checkpoint(plan)
    for stage in range(plan.num_stages):
        done = {index: run_unit(plan, checkpoint, stage, index) for index in reversed(range(plan.units_per_stage))}
        checkpoint = merge_stage(checkpoint, [done[i] for i in range(plan.units_per_stage)])
    assert result_digest(checkpoint) == result_digest(final)
    result = evaluate_plan_model(plan, final)
    assert result.accuracy == accuracies[-1] and result.num_samples == 500 and result.loss > 0
    # The torch model with the same weights agrees on the test split (float32 vs float64 logits).
    model = build_model(plan.task.model)
    set_weights(model, final)
    assert abs(evaluate(model, plan_data(plan)[1]).accuracy - result.accuracy) <= 0.004


def test_default_plan_shape() -> None:
    plan = default_plan(pin_data=False)
    assert (plan.num_stages, plan.units_per_stage, plan.steps_per_unit) == (4, 4, 150)
    assert plan.task.dataset == DatasetSpec(name="ecg", test_fraction=0.25, seed=0)
    assert plan.task.model.kind == "cnn1d" and plan.task.model.num_classes == 4
    assert JobPlan.from_json(plan.to_json()) == plan
