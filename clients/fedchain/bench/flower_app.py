"""The Flower side of `fedchain bench flower`: the task `fedchain demo` trains, run in Flower's own simulation.

Every piece of learning is fedchain's: device i trains on `device_partition(train, i, n, alpha, data_seed)` through
`OnlineStream(..., seed=data_seed + i)` (the data seen by round r-1), seeded by `round_seed(spec.seed, r, address_i)`,
from `build_model(spec.model, seed=spec.seed)`; the server's `aggregate_fit` is fedchain's `StreamingFedAvg` over
the updates sorted by device address (what the aggregator does), and every round's global model is evaluated on the
test split as the demo does. So the accuracies after each round must equal the demo's bit for bit.

This module runs where Flower is installed: `python -m fedchain.bench.flower_app --task task.json --out result.json`
(the driver, `fedchain.bench.flower`, starts it in its own interpreter, which has flwr from the `bench` extra).
It needs only fedchain.learning (torch, numpy, scikit-learn) and flwr;
flwr is imported lazily, so the pure parts below import without it. Everything stays on loopback: see LOOPBACK_ENV.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedchain.learning.aggregation.fedavg import StreamingFedAvg
from fedchain.learning.data import Dataset, OnlineStream, device_partition, load_dataset
from fedchain.learning.model import build_model, get_weights, set_weights, weight_shapes
from fedchain.learning.spec import TaskSpec
from fedchain.learning.train import evaluate, round_seed, train_local
from fedchain.learning.types import Weights

# Set before flwr or ray is imported (TOOLCHAIN.md, "Ray" and "Flower"): no usage stats, no telemetry or update
# check, node address 127.0.0.1 without the route probe, and any stray HTTP request sent to a dead local port.
# no_proxy keeps loopback traffic (Ray's gRPC, local HTTP) off that dead proxy.
LOOPBACK_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost",
    "NO_PROXY": "127.0.0.1,localhost",
}


@dataclass(frozen=True)
class FlowerTask:
    """What one Flower run trains: the demo's task spec, devices and their addresses, data split and stream."""

    spec: TaskSpec
    devices: int
    rounds: int
    addresses: tuple[str, ...]
    non_iid_alpha: float | None = None
    data_seed: int = 0
    online: bool = True
    initial_fraction: float = 0.3
    per_round_fraction: float = 0.1
    # Flower simulation resources: Ray's CPUs, and CPUs per ClientApp actor (Flower's default is 2; 1 = most actors).
    num_cpus: int = 2
    client_cpus: float = 1.0
    scratch: str = ".fedchain/bench-flower"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.devices < 1 or self.rounds < 1:
            raise ValueError("need at least one device and one round")
        if len(self.addresses) != self.devices:
            raise ValueError(f"{self.devices} devices need {self.devices} addresses, got {len(self.addresses)}")
        object.__setattr__(self, "addresses", tuple(self.addresses))

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "devices": self.devices,
            "rounds": self.rounds,
            "addresses": list(self.addresses),
            "non_iid_alpha": self.non_iid_alpha,
            "data_seed": self.data_seed,
            "online": self.online,
            "initial_fraction": self.initial_fraction,
            "per_round_fraction": self.per_round_fraction,
            "num_cpus": self.num_cpus,
            "client_cpus": self.client_cpus,
            "scratch": self.scratch,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowerTask:
        values = dict(data)
        values["spec"] = TaskSpec.from_dict(values["spec"])
        values["addresses"] = tuple(values["addresses"])
        return cls(**values)


# ---------------------------------------------------------------------------------------------------------------
# The learning: pure fedchain code, shared by the Flower client, the Flower strategy and the in-process reference.


_LOCAL: dict[tuple[Any, ...], tuple[Dataset, OnlineStream | None]] = {}


def _local_data(task: FlowerTask, index: int) -> tuple[Dataset, OnlineStream | None]:
    """Device `index`'s partition and stream, as `DeviceRunner.__init__` builds them (cached per process)."""
    key = (task.spec.dataset, task.devices, task.non_iid_alpha, task.data_seed, index, task.online)
    key += (task.initial_fraction, task.per_round_fraction)
    if key not in _LOCAL:
        train, _ = load_dataset(task.spec.dataset)
        local = device_partition(train, index, task.devices, task.non_iid_alpha, task.data_seed)
        stream = (
            OnlineStream(local, task.initial_fraction, task.per_round_fraction, seed=task.data_seed + index)
            if task.online
            else None
        )
        _LOCAL[key] = (local, stream)
    return _LOCAL[key]


def device_data(task: FlowerTask, index: int, round_index: int) -> Dataset:
    """What device `index` trains on in `round_index` (`DeviceRunner.data_for_round`)."""
    local, stream = _local_data(task, index)
    return stream.seen(round_index - 1) if stream is not None else local


def train_device(task: FlowerTask, index: int, round_index: int, global_weights: Weights) -> tuple[Weights, int]:
    """Device `index`'s update in `round_index` from `global_weights`, exactly as `DeviceRunner.train_round` makes
    it (FedAvg: no proximal term). Returns the trained weights and the number of samples."""
    import torch

    data = device_data(task, index, round_index)
    model = build_model(task.spec.model, seed=task.spec.seed)
    set_weights(model, global_weights)
    seed = round_seed(task.spec.seed, round_index, task.addresses[index])
    torch.manual_seed(seed)
    train_local(model, data, task.spec.train, seed=seed, proximal_mu=0.0, global_weights=global_weights)
    return get_weights(model), len(data)


def initial_weights(task: FlowerTask) -> Weights:
    """The round-1 global model (`create_task` publishes the same)."""
    return get_weights(build_model(task.spec.model, seed=task.spec.seed))


def weight_names(task: FlowerTask) -> list[str]:
    """The model's tensors in state_dict order: the order of Flower's list of arrays."""
    return list(weight_shapes(task.spec.model))


def to_arrays(weights: Weights, names: Sequence[str]) -> list[np.ndarray]:
    return [weights[name] for name in names]


def to_weights(arrays: Sequence[np.ndarray], names: Sequence[str]) -> Weights:
    if len(arrays) != len(names):
        raise ValueError(f"expected {len(names)} arrays, got {len(arrays)}")
    return {name: np.asarray(arr) for name, arr in zip(names, arrays, strict=True)}


def fedchain_aggregate(
    shapes: dict[str, tuple[int, ...]], updates: Sequence[tuple[str, Weights, int]]
) -> tuple[Weights, list[str]]:
    """The aggregator's FedAvg (`AggregatorWorker._aggregate`, streaming): `StreamingFedAvg` over (device, weights,
    num_samples) added in lower-cased device-address order. Returns the weights and the order used."""
    if not updates:
        raise ValueError("no updates to aggregate")
    fedavg = StreamingFedAvg(shapes)
    order = sorted(updates, key=lambda u: u[0].lower())
    for _, weights, num_samples in order:
        fedavg.add(weights, int(num_samples))
    return fedavg.result(), [device for device, _, _ in order]


def evaluate_global(task: FlowerTask, weights: Weights) -> tuple[float, float]:
    """Accuracy and loss of a global model on the test split, as the demo evaluates each round's model."""
    _, test = load_dataset(task.spec.dataset)
    model = build_model(task.spec.model, seed=task.spec.seed)
    set_weights(model, weights)
    result = evaluate(model, test)
    return result.accuracy, result.loss


def simulate_reference(task: FlowerTask) -> list[float]:
    """The same rounds in this process with no framework at all: every device trains, the aggregator averages, the
    model is evaluated. The accuracy after each round."""
    shapes = weight_shapes(task.spec.model)
    weights = initial_weights(task)
    accuracies = []
    for r in range(1, task.rounds + 1):
        updates = []
        for i in range(task.devices):
            trained, n = train_device(task, i, r, weights)
            updates.append((task.addresses[i], trained, n))
        weights, _ = fedchain_aggregate(shapes, updates)
        accuracies.append(evaluate_global(task, weights)[0])
    return accuracies


# ---------------------------------------------------------------------------------------------------------------
# Flower: a NumPyClient per device and a Strategy whose aggregate_fit is fedchain's FedAvg.


def apply_loopback_env(scratch: Path) -> None:
    """The environment that keeps Flower and Ray on loopback; FLWR_HOME inside the scratch space."""
    os.environ.update(LOOPBACK_ENV)
    os.environ["FLWR_HOME"] = str((scratch / "flwr-home").resolve())
    (scratch / "flwr-home").mkdir(parents=True, exist_ok=True)


def make_strategy(task: FlowerTask, clock: dict[str, Any]) -> Any:
    """A Flower Strategy (legacy API) whose server step is fedchain's FedAvg; it records each round's start
    (configure_fit) and end (aggregate_fit returned) and the accuracy of each round's model into `clock`."""
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import Strategy

    names = weight_names(task)
    shapes = weight_shapes(task.spec.model)

    class FedchainFedAvg(Strategy):  # type: ignore[misc]
        def initialize_parameters(self, client_manager: Any) -> Any:
            return ndarrays_to_parameters(to_arrays(initial_weights(task), names))

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            clock["round_start"][server_round] = time.time()
            # Every device trains every round, as in the demo (a round closes when all devices submitted).
            clients = client_manager.sample(num_clients=task.devices, min_num_clients=task.devices)
            fit_ins = FitIns(parameters, {"round": server_round})
            return [(client, fit_ins) for client in clients]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            if failures:
                clock["failures"][server_round] = [repr(f)[:300] for f in failures]
            updates = [
                (
                    str(res.metrics["device"]),
                    to_weights(parameters_to_ndarrays(res.parameters), names),
                    res.num_examples,
                )
                for _, res in results
            ]
            if not updates:
                clock["round_end"][server_round] = time.time()
                return None, {}
            weights, _ = fedchain_aggregate(shapes, updates)
            clock["updates"][server_round] = len(updates)
            clock["round_end"][server_round] = time.time()
            return ndarrays_to_parameters(to_arrays(weights, names)), {}

        def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            return []  # the global model is evaluated centrally, as the demo does

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            return None, {}

        def evaluate(self, server_round: int, parameters: Any) -> Any:
            if server_round == 0:
                return None  # the demo does not evaluate the initial model
            started = time.time()
            accuracy, loss = evaluate_global(task, to_weights(parameters_to_ndarrays(parameters), names))
            clock["accuracy"][server_round] = accuracy
            clock["loss"][server_round] = loss
            clock["eval_seconds"][server_round] = time.time() - started
            return loss, {"accuracy": accuracy}

    return FedchainFedAvg()


def make_client_app(task: FlowerTask) -> Any:
    """A ClientApp whose node with partition-id i is device i."""
    from flwr.client import ClientApp, NumPyClient

    names = weight_names(task)

    class DeviceClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(self, parameters: Any, config: Any) -> Any:
            import torch

            torch.set_num_threads(1)  # as `fedchain device` does
            round_index = int(config["round"])
            trained, n = train_device(task, self.index, round_index, to_weights(parameters, names))
            return to_arrays(trained, names), n, {"device": task.addresses[self.index]}

    def client_fn(context: Any) -> Any:
        return DeviceClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn)


# Ray puts "<temp dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store" (63 characters after the temp dir)
# into an AF_UNIX address, which holds 107 bytes.
RAY_TEMP_DIR_MAX = 107 - 63


def ray_temp_dir(scratch: Path) -> Path:
    """Ray's temp dir: inside the scratch space if its sockets' paths fit there, else .fedchain/ray in the working
    directory, else a short folder in the system's temp dir."""
    import tempfile

    for candidate in (scratch / "ray", Path(".fedchain") / "ray"):
        path = candidate.resolve()
        if len(str(path)) <= RAY_TEMP_DIR_MAX:
            return path
    return Path(tempfile.gettempdir()) / f"fedchain-ray-{os.getuid()}"


def run_flower(task: FlowerTask, launched_at: float | None = None) -> dict[str, Any]:
    """Run the task in Flower's simulation (Ray backend, loopback only) and return its timings and accuracies.

    `launched_at` (time.time() of the process start, from the driver) makes startup = round 1's start - launch."""
    scratch = Path(task.scratch)
    apply_loopback_env(scratch)
    import_started = time.time()
    import ray
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    clock: dict[str, Any] = {
        k: {} for k in ("round_start", "round_end", "accuracy", "loss", "eval_seconds", "updates", "failures")
    }
    ray_dir = ray_temp_dir(scratch)
    ray_dir.mkdir(parents=True, exist_ok=True)
    ray_started = time.time()
    # Flower's RayBackend leaves an initialised Ray alone: start it ourselves with the loopback recipe.
    ray.init(
        num_cpus=task.num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(ray_dir),
        logging_level="WARNING",
        log_to_driver=True,
    )
    ray_seconds = time.time() - ray_started

    def server_fn(context: Any) -> Any:
        return ServerAppComponents(strategy=make_strategy(task, clock), config=ServerConfig(num_rounds=task.rounds))

    started = time.time()
    try:
        run_simulation(
            server_app=ServerApp(server_fn=server_fn),
            client_app=make_client_app(task),
            num_supernodes=task.devices,
            backend_config={"client_resources": {"num_cpus": task.client_cpus, "num_gpus": 0.0}},
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
    finished = time.time()
    rounds = sorted(clock["round_end"])
    round_seconds = [round(clock["round_end"][r] - clock["round_start"][r], 4) for r in rounds]
    first_start = clock["round_start"].get(1)
    result = {
        "framework": "flower",
        "flwr_version": _version("flwr"),
        "ray_version": _version("ray"),
        "devices": task.devices,
        "rounds": task.rounds,
        "accuracy_per_round": [clock["accuracy"].get(r) for r in rounds],
        "loss_per_round": [clock["loss"].get(r) for r in rounds],
        "updates_per_round": [clock["updates"].get(r) for r in rounds],
        "round_seconds": round_seconds,
        "eval_seconds_per_round": [round(clock["eval_seconds"].get(r, 0.0), 4) for r in rounds],
        "failures": {str(r): v for r, v in clock["failures"].items()},
        "import_seconds": round(ray_started - import_started, 3),
        "ray_init_seconds": round(ray_seconds, 3),
        "simulation_seconds": round(finished - started, 3),
        "startup_seconds": round(first_start - launched_at, 3)
        if (first_start is not None and launched_at is not None)
        else None,
        "startup_in_process_seconds": round(first_start - import_started, 3) if first_start is not None else None,
        "round1_seconds": round_seconds[0] if round_seconds else None,
        "total_seconds": round(finished - (launched_at if launched_at is not None else import_started), 3),
        "num_cpus": task.num_cpus,
        "client_cpus": task.client_cpus,
    }
    return result


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, required=True, help="FlowerTask as JSON (from fedchain.bench.flower)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the result JSON")
    parser.add_argument("--launched-at", type=float, default=None, help="time.time() when this process was started")
    parser.add_argument("--reference", action="store_true", help="also simulate the rounds without Flower")
    args = parser.parse_args(argv)
    task = FlowerTask.from_dict(json.loads(args.task.read_text()))
    try:
        result = run_flower(task, args.launched_at)
        if args.reference:
            result["reference_accuracy_per_round"] = simulate_reference(task)
    except Exception as exc:  # the driver records the error in its report and carries on
        result = {"framework": "flower", "devices": task.devices, "error": f"{type(exc).__name__}: {exc}"}
        result["traceback"] = traceback.format_exc()[-4000:]
        args.out.write_text(json.dumps(result, indent=2))
        return 1
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
