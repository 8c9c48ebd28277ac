"""The Flower side trains and aggregates exactly as fedchain does: bit-for-bit checks on the pure parts, the
Flower strategy itself when flwr is importable, and a real Flower simulation (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fedchain.bench.flower_app import (
    FlowerTask,
    device_data,
    evaluate_global,
    fedchain_aggregate,
    initial_weights,
    simulate_reference,
    to_arrays,
    to_weights,
    train_device,
    weight_names,
)
from fedchain.learning.aggregation import FedAvg, ServerState, StreamingFedAvg, Update
from fedchain.learning.data import OnlineStream, device_partition, load_dataset
from fedchain.learning.model import build_model, get_weights, set_weights, weight_shapes
from fedchain.learning.spec import default_task_spec
from fedchain.learning.train import round_seed, train_local

ADDRESSES = (
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
)
SHAPES = {"w": (3, 4), "b": (4,)}


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


def _task(devices: int = 3, rounds: int = 2, **kw: object) -> FlowerTask:
    return FlowerTask(default_task_spec(), devices=devices, rounds=rounds, addresses=ADDRESSES[:devices], **kw)


def _random_updates(seed: int, count: int = 5) -> list[tuple[str, dict[str, np.ndarray], int]]:
    rng = np.random.default_rng(seed)
    return [
        (
            f"0x{rng.integers(1 << 60):040x}",
            {
                name: rng.standard_normal(shape).astype(np.float32) * np.float32(10.0 ** rng.integers(-3, 3))
                for name, shape in SHAPES.items()
            },
            int(rng.integers(1, 500)),
        )
        for _ in range(count)
    ]


def _same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregation_is_fedchains_fedavg_bit_for_bit(seed: int) -> None:
    updates = _random_updates(seed)
    ours, order = fedchain_aggregate(SHAPES, updates)
    assert order == sorted(order, key=str.lower)
    # the aggregator's streaming path: StreamingFedAvg in lower-cased address order
    streaming = StreamingFedAvg(SHAPES)
    for _, weights, n in sorted(updates, key=lambda u: u[0].lower()):
        streaming.add(weights, n)
    assert _same_bits(ours, streaming.result())
    # and the FedAvg strategy (what a non-streaming aggregator runs)
    global_weights = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}
    strategy = FedAvg().aggregate(global_weights, [Update(d, w, n) for d, w, n in updates], ServerState())
    assert _same_bits(ours, strategy.weights)
    # the order in which Flower hands results over does not matter
    assert _same_bits(ours, fedchain_aggregate(SHAPES, list(reversed(updates)))[0])


def test_arrays_round_trip_in_state_dict_order() -> None:
    task = _task()
    names = weight_names(task)
    weights = initial_weights(task)
    assert names == list(build_model(task.spec.model).state_dict())
    assert _same_bits(to_weights(to_arrays(weights, names), names), weights)
    with pytest.raises(ValueError):
        to_weights(to_arrays(weights, names)[:-1], names)


def test_task_round_trips_through_json() -> None:
    task = _task(non_iid_alpha=0.5, data_seed=3)
    again = FlowerTask.from_dict(task.to_dict())
    assert again == task
    with pytest.raises(ValueError):
        _task(devices=3).__class__(default_task_spec(), devices=3, rounds=1, addresses=ADDRESSES[:2])


def test_device_training_is_the_device_runners() -> None:
    """train_device against DeviceRunner's steps written out: partition, stream, seed, train_local."""
    task = _task()
    train, _ = load_dataset(task.spec.dataset)
    start = initial_weights(task)
    for index in range(3):
        local = device_partition(train, index, 3, None, 0)
        stream = OnlineStream(local, 0.3, 0.1, seed=0 + index)
        model = build_model(task.spec.model, seed=task.spec.seed)
        set_weights(model, start)
        seed = round_seed(task.spec.seed, 2, ADDRESSES[index])
        torch.manual_seed(seed)
        train_local(model, stream.seen(1), task.spec.train, seed=seed, proximal_mu=0.0, global_weights=start)
        ours, n = train_device(task, index, 2, start)
        assert n == len(stream.seen(1)) == len(device_data(task, index, 2))
        assert _same_bits(ours, get_weights(model))


def test_reference_is_deterministic_and_learns() -> None:
    task = _task()
    first = simulate_reference(task)
    assert first == simulate_reference(task)
    assert len(first) == 2 and all(0.5 < a <= 1.0 for a in first)
    accuracy, loss = evaluate_global(task, initial_weights(task))
    assert 0.0 <= accuracy <= 1.0 and loss > 0


def _require_flwr() -> None:
    """flwr is the `bench` extra, installed by `make setup`: under `make test` (FEDCHAIN_REQUIRE_FLOWER) or in CI its
    absence is a failure, elsewhere (an environment without the extra) a skip."""
    import importlib.util

    if importlib.util.find_spec("flwr") is not None:
        return
    reason = "flwr[simulation]==1.41.0 is the `bench` extra: pip install -e '.[bench]' (make setup)"
    if os.environ.get("CI") or os.environ.get("FEDCHAIN_REQUIRE_FLOWER"):
        pytest.fail(reason)
    pytest.skip(reason)


def test_flower_strategy_aggregate_fit_is_fedchains() -> None:
    _require_flwr()
    from flwr import common

    from fedchain.bench.flower_app import make_strategy

    task = _task()
    names = weight_names(task)
    shapes = weight_shapes(task.spec.model)
    rng = np.random.default_rng(7)
    updates = [
        (address, {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}, int(rng.integers(1, 99)))
        for address in ADDRESSES
    ]
    results = [
        (
            None,
            common.FitRes(
                status=common.Status(code=common.Code.OK, message=""),
                parameters=common.ndarrays_to_parameters(to_arrays(w, names)),
                num_examples=n,
                metrics={"device": d},
            ),
        )
        for d, w, n in reversed(updates)
    ]
    clock = {k: {} for k in ("round_start", "round_end", "accuracy", "loss", "eval_seconds", "updates", "failures")}
    parameters, _ = make_strategy(task, clock).aggregate_fit(1, results, [])
    flower = to_weights(common.parameters_to_ndarrays(parameters), names)
    assert _same_bits(flower, fedchain_aggregate(shapes, updates)[0])
    assert clock["updates"][1] == 3


@pytest.mark.parametrize("has_flwr", [True, False])
def test_the_flower_side_runs_in_this_interpreter_when_it_has_flwr(
    has_flwr: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import sys

    from fedchain.bench import flower

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        if name == "flwr":  # this interpreter with or without the `bench` extra
            return real_find_spec("json") if has_flwr else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert flower.find_flower_python("/opt/other/python") == "/opt/other/python"
    assert flower.find_flower_python() == (sys.executable if has_flwr else None)
    if not has_flwr:
        assert ".[bench]" in flower.run_flower_side(_task(), None, Path("unused"), timeout=1)["error"]


@pytest.mark.slow
def test_flower_simulation_matches_fedchain_learning(tmp_path: Path) -> None:
    """3 devices x 2 rounds in Flower's own simulation (Ray, loopback only), started as `fedchain bench flower` starts
    it (this interpreter, a subprocess): the same accuracy and loss after every round as the rounds simulated here
    with fedchain's learning code alone."""
    from fedchain.bench.flower import find_flower_python, run_flower_side

    _require_flwr()
    task = _task(num_cpus=2, scratch=str(tmp_path / "scratch"))
    expected = simulate_reference(task)
    result = run_flower_side(task, find_flower_python(), tmp_path / "flower", timeout=300)
    assert result.get("error") is None, result.get("error")
    assert [a.hex() for a in result["accuracy_per_round"]] == [a.hex() for a in expected]
    assert result["updates_per_round"] == [3, 3]
    assert len(result["round_seconds"]) == 2 and result["startup_in_process_seconds"] > 0
