"""In-process federated runs: FedAvg over simulated devices against the centralized reference."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fedchain.learning
from fedchain.learning.aggregation import StreamingFedAvg
from fedchain.learning.data import OnlineStream, device_partition, load_dataset
from fedchain.learning.model import build_model, get_weights, set_weights, weight_shapes
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.learning.train import evaluate, round_seed, train_centralized, train_local

DEVICES = 5
ROUNDS = 10


def simulate(spec: TaskSpec, alpha: float | None, online: bool, devices: int = DEVICES, rounds: int = ROUNDS) -> float:
    """What the device runner and aggregator do, minus chain and IPFS; returns the final test accuracy."""
    train, test = load_dataset(spec.dataset)
    model = build_model(spec.model, seed=spec.seed)
    global_weights = get_weights(model)
    parts = [device_partition(train, i, devices, alpha, seed=0) for i in range(devices)]
    streams = [OnlineStream(part, seed=i) for i, part in enumerate(parts)]
    for round_index in range(1, rounds + 1):
        aggregator = StreamingFedAvg(weight_shapes(spec.model))
        for i in range(devices):
            set_weights(model, global_weights)
            data = streams[i].seen(round_index - 1) if online else parts[i]
            train_local(model, data, spec.train, seed=round_seed(spec.seed, round_index, f"device-{i}"))
            aggregator.add(get_weights(model), len(data))
        global_weights = aggregator.result()
    set_weights(model, global_weights)
    return evaluate(model, test).accuracy


@pytest.fixture(scope="module")
def centralized() -> float:
    spec = default_task_spec()
    train, test = load_dataset(spec.dataset)
    return train_centralized(spec, train, test, epochs=ROUNDS * spec.train.local_epochs).accuracy


@pytest.mark.parametrize("alpha", [None, 0.5], ids=["iid", "dirichlet-0.5"])
def test_fedavg_close_to_centralized(centralized: float, alpha: float | None) -> None:
    accuracy = simulate(default_task_spec(), alpha, online=False)
    assert accuracy >= centralized - 0.03, f"FedAvg {accuracy:.4f} vs centralized {centralized:.4f}"


@pytest.mark.parametrize("alpha", [None, 0.5], ids=["iid", "dirichlet-0.5"])
def test_online_devices(alpha: float | None) -> None:
    assert simulate(default_task_spec(), alpha, online=True) >= 0.90


def test_simulation_is_reproducible() -> None:
    spec = default_task_spec()
    assert simulate(spec, 0.5, online=True, rounds=3) == simulate(spec, 0.5, online=True, rounds=3)


FORBIDDEN = ("fedchain.chain", "fedchain.storage", "fedchain.device", "fedchain.aggregator")


def test_learning_imports_nothing_of_chain_or_storage() -> None:
    root = Path(fedchain.learning.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            bad = [n for n in names if n.startswith(FORBIDDEN)]
            assert not bad, f"{path.name} imports {bad}"
