"""TaskSpec and friends: validation and canonical JSON."""

from __future__ import annotations

import json

import pytest

from fedchain.learning.spec import DatasetSpec, ModelSpec, TaskSpec, TrainSpec, default_task_spec


def test_json_round_trip() -> None:
    spec = TaskSpec(
        dataset=DatasetSpec(test_fraction=0.2, seed=3),
        model=ModelSpec(hidden=(8,), dropout=0.1),
        train=TrainSpec(local_epochs=2, batch_size=8, lr=0.01, momentum=0.0, weight_decay=1e-4),
        seed=7,
    )
    assert TaskSpec.from_json(spec.to_json()) == spec
    assert TaskSpec.from_dict(spec.to_dict()) == spec


def test_canonical_bytes() -> None:
    data = default_task_spec().to_json()
    assert data == default_task_spec().to_json()
    assert b" " not in data and b"\n" not in data
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    # Re-encoding what was parsed gives the same bytes, and 0 vs 0.0 does not change them.
    assert TaskSpec.from_json(data).to_json() == data
    assert TrainSpec(weight_decay=0).to_dict() == TrainSpec(weight_decay=0.0).to_dict()
    assert json.dumps(TrainSpec(weight_decay=0).to_dict()) == json.dumps(TrainSpec().to_dict())


def test_canonical_bytes_known_value() -> None:
    # Pinned: changing it changes every task's model-description CID.
    assert default_task_spec().to_json() == (
        b'{"dataset":{"name":"breast_cancer","seed":0,"test_fraction":0.25},'
        b'"model":{"dropout":0.0,"hidden":[32,16],"input_dim":30,"kind":"mlp","num_classes":2},'
        b'"seed":0,'
        b'"strategy":{"name":"fedavg","params":{}},'
        b'"train":{"batch_size":16,"local_epochs":1,"lr":0.1,"momentum":0.9,"weight_decay":0.0},'
        b'"version":1}'
    )


def test_hidden_list_becomes_tuple() -> None:
    spec = ModelSpec(hidden=[4, 2])  # type: ignore[arg-type]
    assert spec.hidden == (4, 2)
    hash(spec)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b'"spec"',
        b'{"dataset":{},"model":{},"train":{},"seed":0}',  # no version
        b'{"version":2,"dataset":{},"model":{},"train":{}}',
        b'{"version":1,"extra":1}',
        b'{"version":1,"model":{"layers":3}}',
        b'{"version":1,"train":{"lr":"fast"}}',
        b'{"version":1,"train":{"lr":NaN}}',
        b'{"version":1,"train":{"batch_size":true}}',
        b'{"version":1,"model":[]}',
        b'{"version":"1"}',
        b'{"version":1,"seed":1,"seed":2}',
    ],
)
def test_from_json_rejects(data: bytes) -> None:
    with pytest.raises(ValueError):
        TaskSpec.from_json(data)


def test_unknown_field_message_names_it() -> None:
    with pytest.raises(ValueError, match="layers"):
        TaskSpec.from_json(b'{"version":1,"model":{"layers":3}}')


@pytest.mark.parametrize(
    "make",
    [
        lambda: ModelSpec(kind="cnn"),
        lambda: ModelSpec(input_dim=0),
        lambda: ModelSpec(hidden=(4, 0)),
        lambda: ModelSpec(num_classes=1),
        lambda: ModelSpec(dropout=1.0),
        lambda: ModelSpec(dropout=-0.1),
        lambda: TrainSpec(local_epochs=0),
        lambda: TrainSpec(batch_size=0),
        lambda: TrainSpec(lr=0.0),
        lambda: TrainSpec(lr=float("inf")),
        lambda: TrainSpec(momentum=1.0),
        lambda: TrainSpec(weight_decay=-1.0),
        lambda: TrainSpec(local_epochs=1.5),
        lambda: DatasetSpec(name=""),
        lambda: DatasetSpec(test_fraction=0.0),
        lambda: DatasetSpec(test_fraction=1.0),
        lambda: DatasetSpec(seed=-1),
        lambda: TaskSpec(DatasetSpec(), ModelSpec(), TrainSpec(), seed=-1),
        lambda: TaskSpec(DatasetSpec(), ModelSpec(), TrainSpec(), version=2),
        lambda: TaskSpec(DatasetSpec(), TrainSpec(), TrainSpec()),
    ],
)
def test_bad_values(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_task_spec_carries_its_strategy() -> None:
    from fedchain.learning.aggregation.registry import StrategySpec

    spec = default_task_spec()
    assert spec.strategy_spec() == StrategySpec("fedavg")
    robust = TaskSpec.from_dict({**spec.to_dict(), "strategy": {"name": "trimmed-mean", "params": {"beta": 0.3}}})
    assert robust.strategy_spec() == StrategySpec("trimmed-mean", {"beta": 0.3})
    assert TaskSpec.from_json(robust.to_json()) == robust and robust.to_json() != spec.to_json()
    legacy = {k: v for k, v in spec.to_dict().items() if k != "strategy"}
    assert TaskSpec.from_dict(legacy) == spec  # a description without a strategy means FedAvg
    for bad in ({"name": "krum", "params": {"f": -1}}, {"name": "nope"}, {"name": "fedavg", "extra": 1}):
        with pytest.raises(ValueError, match="strategy"):
            TaskSpec.from_dict({**spec.to_dict(), "strategy": bad})
