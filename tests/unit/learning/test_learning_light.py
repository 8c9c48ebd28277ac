"""The light device's numpy training (fedchain.learning.light) against the torch path it stands in for.

Not bit-identical, by construction: torch shuffles with its own generator (torch.randperm), which numpy cannot
replay, keeps weights in float32 between steps (the light path in float64, rounded once per round) and sums in
BLAS's order (the light path in a fixed one). So the tests compare what must agree: with one batch per epoch
(order irrelevant) the optimiser's steps (momentum, weight decay, FedProx's proximal term) match torch's to float32
rounding; with the demo's shuffled mini-batches, a federated run reaches about the same accuracy.
"""

from __future__ import annotations

import dataclasses
import gzip

import numpy as np
import pytest

from fedchain.learning import data as data_module
from fedchain.learning.aggregation import fedavg
from fedchain.learning.data import Dataset, device_partition, load_dataset
from fedchain.learning.light import (
    LightModel,
    LightUnsupported,
    evaluate_light,
    initial_weights,
    train_light,
    warm_up_light,
)
from fedchain.learning.model import build_model, get_weights, set_weights
from fedchain.learning.spec import DatasetSpec, ModelSpec, TrainSpec, default_task_spec
from fedchain.learning.train import evaluate, round_seed, train_local


def _torch_trained(model: ModelSpec, weights: dict, data: Dataset, spec: TrainSpec, seed: int, mu: float = 0.0):
    net = build_model(model)
    set_weights(net, weights)
    result = train_local(net, data, spec, seed=seed, proximal_mu=mu, global_weights=weights if mu else None)
    return get_weights(net), result.loss


@pytest.mark.parametrize(
    ("train", "mu"),
    [
        (TrainSpec(local_epochs=3, batch_size=1000, lr=0.1, momentum=0.9), 0.0),
        (TrainSpec(local_epochs=3, batch_size=1000, lr=0.05, momentum=0.5, weight_decay=0.01), 0.0),
        (TrainSpec(local_epochs=4, batch_size=1000, lr=0.1, momentum=0.0, weight_decay=0.001), 0.5),
    ],
)
def test_full_batch_steps_match_torch_sgd(train: TrainSpec, mu: float) -> None:
    """One batch per epoch: the same steps as torch.optim.SGD (+ FedProx), up to float32 rounding."""
    spec = default_task_spec()
    rows = load_dataset(spec.dataset)[0].subset(np.arange(120))
    start = get_weights(build_model(spec.model, seed=3))
    # A proximal term only pulls once the weights have moved: anchor it at a different point than the start.
    anchor = {k: (v + 0.05).astype(np.float32) for k, v in start.items()}
    light = train_light(spec.model, start, rows, train, seed=7, proximal_mu=mu, global_weights=anchor if mu else None)
    net = build_model(spec.model)
    set_weights(net, start)
    torch_loss = train_local(net, rows, train, seed=7, proximal_mu=mu, global_weights=anchor if mu else None).loss
    torch_weights = get_weights(net)
    for name, value in torch_weights.items():
        np.testing.assert_allclose(light.weights[name], value, rtol=1e-4, atol=2e-6, err_msg=name)
    assert light.loss == pytest.approx(torch_loss, rel=1e-5)
    assert light.num_samples == 120 and all(w.dtype == np.float32 for w in light.weights.values())


def test_cnn1d_full_batch_steps_match_torch() -> None:
    model = ModelSpec(kind="cnn1d", input_dim=24, hidden=(4, 3), num_classes=3)
    rng = np.random.default_rng(0)
    rows = Dataset(rng.normal(size=(40, 24)).astype(np.float32), rng.integers(0, 3, size=40))
    start = get_weights(build_model(model, seed=1))
    train = TrainSpec(local_epochs=3, batch_size=64, lr=0.1, momentum=0.9)
    light = train_light(model, start, rows, train, seed=0)
    torch_weights, torch_loss = _torch_trained(model, start, rows, train, seed=0)
    for name, value in torch_weights.items():
        np.testing.assert_allclose(light.weights[name], value, rtol=1e-4, atol=2e-6, err_msg=name)
    assert light.loss == pytest.approx(torch_loss, rel=1e-5)


def test_federated_demo_reaches_the_torch_accuracy() -> None:
    """The demo's task (5 devices, FedAvg, its shuffled mini-batches and momentum) for 8 rounds, each round's
    devices seeded as devices seed them: the light model's test accuracy ends within 2 points of torch's (measured:
    0.951 vs 0.958 after 10 rounds) and its loss within 10%."""
    spec = default_task_spec()
    train, test = load_dataset(spec.dataset)
    parts = [device_partition(train, i, 5, None, 0) for i in range(5)]
    light = torch_model = get_weights(build_model(spec.model, seed=spec.seed))
    for round_index in range(1, 9):
        light_updates, torch_updates = [], []
        for i, part in enumerate(parts):
            seed = round_seed(spec.seed, round_index, f"device-{i}")
            light_updates.append((train_light(spec.model, light, part, spec.train, seed).weights, len(part)))
            torch_updates.append((_torch_trained(spec.model, torch_model, part, spec.train, seed)[0], len(part)))
        light, torch_model = fedavg(light_updates), fedavg(torch_updates)
    light_accuracy, light_loss = evaluate_light(spec.model, light, test)
    net = build_model(spec.model)
    set_weights(net, torch_model)
    reference = evaluate(net, test)
    assert light_accuracy >= 0.93
    assert abs(light_accuracy - reference.accuracy) <= 0.02
    assert light_loss == pytest.approx(reference.loss, rel=0.1)


def test_same_seed_same_bits_other_seed_other_bits() -> None:
    spec = default_task_spec()
    rows = load_dataset(spec.dataset)[0].subset(np.arange(100))
    start = initial_weights(spec.model, seed=0)
    a, b = (train_light(spec.model, start, rows, spec.train, seed=5) for _ in range(2))
    c = train_light(spec.model, start, rows, spec.train, seed=6)
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert not all(np.array_equal(a.weights[k], c.weights[k]) for k in a.weights)


def test_initial_weights_have_torch_shapes_and_bounds() -> None:
    spec = default_task_spec().model
    light = initial_weights(spec, seed=0)
    reference = get_weights(build_model(spec))
    assert list(light) == list(reference)
    for name, value in reference.items():
        fan_in = 30 if name.startswith("hidden.0") else (32 if name.startswith("hidden.1") else 16)
        assert light[name].shape == value.shape and light[name].dtype == np.float32
        assert np.abs(light[name]).max() <= 1 / np.sqrt(fan_in)


def test_dropout_is_refused_not_ignored() -> None:
    with pytest.raises(LightUnsupported, match="dropout"):
        LightModel(ModelSpec(dropout=0.2))
    with pytest.raises(LightUnsupported, match="--runtime torch"):
        train_light(ModelSpec(dropout=0.2), initial_weights(ModelSpec(), 0), _rows(), TrainSpec(), seed=0)


def _rows() -> Dataset:
    return load_dataset(DatasetSpec())[0].subset(np.arange(40))


def test_bad_input_is_refused() -> None:
    spec = ModelSpec()
    with pytest.raises(ValueError, match="empty"):
        train_light(spec, initial_weights(spec, 0), _rows().subset(np.arange(0)), TrainSpec(), seed=0)
    with pytest.raises(ValueError, match="proximal_mu"):
        train_light(spec, initial_weights(spec, 0), _rows(), TrainSpec(), seed=0, proximal_mu=-1.0)
    wrong = {**initial_weights(spec, 0), "output.bias": np.zeros(3, dtype=np.float32)}
    with pytest.raises(ValueError, match="shape"):
        LightModel(spec).set_weights(wrong)
    with pytest.raises(ValueError, match="diverged"), np.errstate(all="ignore"):
        train_light(spec, initial_weights(spec, 0), _rows(), TrainSpec(lr=1e300), seed=0)


def test_model_keeps_trained_weights_and_warm_up_leaves_nothing_behind() -> None:
    spec = default_task_spec()
    model = LightModel(spec.model, seed=1)
    before = dict(model.weights)
    assert warm_up_light(spec.model, spec.train, _rows()) > 0
    assert all(np.array_equal(before[k], model.weights[k]) for k in before)
    result = model.train(_rows(), dataclasses.replace(spec.train, local_epochs=2), seed=3)
    assert model.weights is result.weights
    assert not all(np.array_equal(before[k], model.weights[k]) for k in before)


def test_breast_cancer_without_scikit_learn_is_the_same_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A light install has no scikit-learn: fedchain's gzipped copy gives the same arrays (and is the same bytes)."""
    sklearn_file = data_module._sklearn_data_file("breast_cancer.csv")
    assert sklearn_file is not None
    assert gzip.decompress(data_module.BREAST_CANCER_COPY.read_bytes()) == sklearn_file.read_bytes()
    x_ref, y_ref = data_module._breast_cancer()
    monkeypatch.setattr(data_module, "_sklearn_data_file", lambda name: None)
    x, y = data_module._breast_cancer()
    assert x.dtype == x_ref.dtype and np.array_equal(x, x_ref) and np.array_equal(y, y_ref)
