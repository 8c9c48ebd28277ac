"""`fedchain device --runtime light`: a device whose imports and training never load torch (issue 12, a light
device for gateways without a torch wheel), and how `auto` chooses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fedchain.device.runner import RUNTIMES, build_device_model, resolve_runtime, train_for_round
from fedchain.learning.data import load_dataset
from fedchain.learning.light import LightModel, LightUnsupported, initial_weights
from fedchain.learning.spec import ModelSpec, TaskSpec, default_task_spec

SPEC = default_task_spec()
A = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

# Everything a light device does before and during a round, short of chain and IPFS: the CLI's modules, the
# device's module, the dataset and its partition, the warm-up, one round, and the update's bytes and their decoding.
LIGHT_DEVICE_PATH = """
import fedchain.cli
import fedchain.device.runner as runner
from fedchain.learning.data import device_partition, load_dataset
from fedchain.learning.spec import default_task_spec
from fedchain.storage.codec import decode_weights, encode_weights
import fedchain.storage.kubo_rpc, fedchain.chain.notify
spec = default_task_spec()
train, _ = load_dataset(spec.dataset)
runner.warm_up_training(spec, train, "light")
model = runner.build_device_model(spec, "light")
data = device_partition(train, 0, 5, None, 0)
local = runner.train_for_round(model, model.weights, data, spec, 1, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
blob = encode_weights(local.weights, {"fedchain.kind": "update"})
assert all((decode_weights(blob)[k] == v).all() for k, v in local.weights.items())
import json, sys
print(json.dumps(sorted(sys.modules)))
"""


def test_a_light_device_never_imports_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", LIGHT_DEVICE_PATH], capture_output=True, text=True, check=True, timeout=180
    )
    loaded = {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}
    assert "fedchain" in loaded and "numpy" in loaded  # the probe ran
    assert sorted(loaded & {"torch", "sklearn", "scipy", "pandas", "matplotlib", "opacus", "ray", "brownie"}) == []


def test_a_light_device_runs_where_torch_cannot_be_imported() -> None:
    """As on a gateway without a torch wheel: any `import torch` fails, `auto` picks light and the round trains."""
    hide_torch = "import sys\nsys.modules['torch'] = None\n"
    check = "\nassert runner.resolve_runtime('auto') == 'light'\nassert local.loss > 0\n"
    probe = hide_torch + LIGHT_DEVICE_PATH.replace("import json, sys\n", check + "import json, sys\n")
    subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=180)


def test_auto_is_torch_where_torch_is_installed_else_light(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RUNTIMES == ("auto", "torch", "light")
    assert resolve_runtime("auto") == "torch"
    assert resolve_runtime("light") == "light" and resolve_runtime("torch") == "torch"
    monkeypatch.setitem(sys.modules, "torch", None)  # what find_spec reports when torch is not installed
    assert resolve_runtime("auto") == "light"
    with pytest.raises(ValueError, match="unknown runtime 'tensorflow'"):
        resolve_runtime("tensorflow")


def test_light_rounds_are_seeded_by_task_round_and_device() -> None:
    data = load_dataset(SPEC.dataset)[0].subset(np.arange(64))
    global_weights = initial_weights(SPEC.model, seed=0)
    first = train_for_round(LightModel(SPEC.model, seed=1), global_weights, data, SPEC, 3, A)
    again = train_for_round(LightModel(SPEC.model, seed=2), global_weights, data, SPEC, 3, A.lower())
    assert all(np.array_equal(first.weights[k], again.weights[k]) for k in global_weights) and first.loss == again.loss
    other_round = train_for_round(LightModel(SPEC.model), global_weights, data, SPEC, 4, A)
    assert not all(np.array_equal(first.weights[k], other_round.weights[k]) for k in global_weights)
    flipped = train_for_round(LightModel(SPEC.model), global_weights, data, SPEC, 3, A, attack="sign-flip")
    name = next(iter(global_weights))
    honest_delta, flipped_delta = (w.weights[name] - global_weights[name] for w in (first, flipped))
    assert float(np.sum(honest_delta * flipped_delta)) < 0


def test_the_device_model_follows_the_runtime_and_refuses_what_light_cannot_train() -> None:
    assert isinstance(build_device_model(SPEC, "light"), LightModel)
    assert not isinstance(build_device_model(SPEC, "torch"), LightModel)
    dropout = TaskSpec(SPEC.dataset, ModelSpec(dropout=0.1), SPEC.train)
    with pytest.raises(LightUnsupported, match="dropout"):
        build_device_model(dropout, "light")


def test_a_streaming_wearable_light_device_trains_without_torch() -> None:
    """`--stream-buffer` on the light runtime: a wearable task's cnn1d trained from the sensor's buffer, in an
    interpreter where torch cannot be imported."""
    probe = """
import sys
sys.modules['torch'] = None
from fedchain.device.runner import build_device_model, train_for_round
from fedchain.device.sensor import DeviceSensor
from fedchain.learning.data import device_partition, load_dataset
from fedchain.learning.wearables import wearable_task_spec
spec = wearable_task_spec("basic_motions")
share = device_partition(load_dataset(spec.dataset)[0], 0, 6, None, seed=0)
sensor = DeviceSensor(spec, share, capacity=20, speed=10_000.0)
model = build_device_model(spec, "light")
start = dict(model.weights)
local = train_for_round(model, start, sensor.data_now(), spec, 1, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
assert spec.model.kind == "cnn1d" and local.loss > 0
assert any((local.weights[k] != start[k]).any() for k in start)
print("trained")
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip().endswith("trained"), out.stderr[-3000:]
