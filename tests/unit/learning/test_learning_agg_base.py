"""Strategy plumbing: update validation and ordering, flatten/unflatten, server state serialisation."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load, save

from fedchain.learning.aggregation import FedAvg, ServerState, Update, flatten, unflatten
from fedchain.learning.aggregation.base import iter_blocks, prepare, shapes_of
from fedchain.learning.model import InvalidWeights

GLOBAL = {"w": np.zeros((2, 3), np.float32), "a": np.zeros(2, np.float32)}


def _update(device: str, value: float, num_samples: int = 1) -> Update:
    return Update(device, {name: np.full(v.shape, value, np.float32) for name, v in GLOBAL.items()}, num_samples)


def test_prepare_sorts_by_lowercased_address() -> None:
    updates = [_update("0xB", 1), _update("0xa", 2), _update("0x0C", 3)]
    assert [u.device for u in prepare(GLOBAL, updates)] == ["0x0C", "0xa", "0xB"]


def test_result_does_not_depend_on_input_order() -> None:
    rng = np.random.default_rng(0)
    updates = [
        Update(f"0x{i:x}", {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in GLOBAL.items()}, i + 1)
        for i in range(9)
    ]
    a = FedAvg().aggregate(GLOBAL, updates)
    b = FedAvg().aggregate(GLOBAL, updates[::-1])
    assert a.accepted == b.accepted == tuple(f"0x{i:x}" for i in range(9))
    assert all(a.weights[k].tobytes() == b.weights[k].tobytes() for k in GLOBAL)
    assert list(a.weights) == list(GLOBAL)


@pytest.mark.parametrize(
    ("updates", "match"),
    [
        ([], "no updates"),
        ([_update("0xA", 1), _update("0xa", 2)], "two updates"),
        ([_update("", 1)], "non-empty"),
        ([_update("0xA", 1, 0)], "num_samples"),
        ([_update("0xA", 1, True)], "num_samples"),  # type: ignore[arg-type]
    ],
)
def test_prepare_rejects(updates: list[Update], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prepare(GLOBAL, updates)


def test_prepare_rejects_misfit_weights() -> None:
    bad = Update("0xA", {"w": np.zeros((2, 3), np.float32), "a": np.zeros(3, np.float32)}, 1)
    with pytest.raises(InvalidWeights) as info:
        prepare(GLOBAL, [_update("0xB", 1), bad])
    assert info.value.reason == "shape-mismatch"


def test_flatten_uses_sorted_names_and_round_trips() -> None:
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([10, 11], np.float32)}
    flat = flatten(weights)
    assert flat.dtype == np.float64
    np.testing.assert_array_equal(flat, [10, 11, 0, 1, 2, 3, 4, 5])
    back = unflatten(flat, shapes_of(weights))
    assert list(back) == ["w", "a"]
    assert all(back[k].dtype == np.float32 and np.array_equal(back[k], weights[k]) for k in weights)
    with pytest.raises(ValueError):
        unflatten(flat[:-1], shapes_of(weights))


def test_iter_blocks_covers_every_coordinate_once() -> None:
    arrays = [{"x": np.arange(10, dtype=np.float32) + i, "y": np.ones((2, 2), np.float32) * i} for i in range(3)]
    seen = []
    for name, span, block in iter_blocks(arrays, ["x", "y"], block=4):
        assert block.shape == (3, span.stop - span.start)
        seen.append((name, span.start, span.stop))
        np.testing.assert_array_equal(block[1], arrays[1][name].reshape(-1)[span])
    assert seen == [("x", 0, 4), ("x", 4, 8), ("x", 8, 10), ("y", 0, 4)]


def test_server_state_round_trips_through_safetensors() -> None:
    state = ServerState.from_slots({"m": {"w": np.full((2, 3), 0.1)}, "v": {"w": np.full((2, 3), 1e-300)}})
    loaded = ServerState.from_tensors(load(save(state.to_tensors())))
    assert sorted(loaded.tensors) == ["m/w", "v/w"]
    for name, value in state.tensors.items():
        assert loaded.tensors[name].dtype == np.float64
        assert loaded.tensors[name].tobytes() == value.tobytes()
    np.testing.assert_array_equal(loaded.slot("m", {"w": (2, 3)})["w"], state.slot("m", {"w": (2, 3)})["w"])


@pytest.mark.parametrize(
    "tensors",
    [{"w": np.zeros(2)}, {"m/w": np.zeros(2, np.float32)}, {"m/w": np.array([np.inf])}],
    ids=["no-slot", "float32", "non-finite"],
)
def test_server_state_validation(tensors: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        ServerState(tensors)


def test_server_state_slot_checks_shapes() -> None:
    state = ServerState.from_slots({"m": {"w": np.zeros(3)}})
    with pytest.raises(ValueError):
        state.slot("m", {"w": (4,)})
    with pytest.raises(ValueError):
        state.slot("m", {"w": (3,), "b": (1,)})
