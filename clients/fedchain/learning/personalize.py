"""Bespoke models for devices with little data: FedPer's private heads, and local fine-tuning of the global model.

FedPer (Arivazhagan et al. 2019, "Federated Learning with Personalization Layers"): the model is split into a shared
body (every layer but the last) and a head (the last Linear layer, `output.*` in `fedchain.learning.model.MLP`).
Only the body is federated: a device trains body and head together on its data, sends the body (`shared_payload`)
and keeps its head, which never leaves the device. Its bespoke model is the global body with its own head
(`merge_weights`), optionally with the head refitted to the final body (`train_head`).

Fine-tuning: the device takes the global model and trains it further on its own data for up to K epochs, keeping
the epoch (0..K, 0 being the global model itself) with the lowest loss on a held-out validation split of its
training data.

`compare_device` puts the options side by side for one device, all evaluated on that device's own held-out local
test data, i.e. on its own label distribution, which is what a bespoke model is for:

* global: the federated global model as is;
* alone: the same architecture trained from scratch on the device's data only (epochs chosen on validation);
* fine-tuned: the global model fine-tuned as above;
* personalized: the FedPer body with the device's private head.

Everything is deterministic given the seeds (torch single-threaded, as the learning tests run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedchain.learning.data import Dataset
from fedchain.learning.model import build_model, get_weights, set_weights, weight_shapes
from fedchain.learning.spec import ModelSpec, TaskSpec
from fedchain.learning.train import evaluate, round_seed, train_local
from fedchain.learning.types import Weights

# The last Linear layer of fedchain.learning.model.MLP.
HEAD_PREFIX = "output."


def head_names(spec: ModelSpec) -> tuple[str, ...]:
    """Names of the head's tensors (the last Linear layer), in state_dict order."""
    names = tuple(name for name in weight_shapes(spec) if name.startswith(HEAD_PREFIX))
    if not names:
        raise ValueError(f"model spec {spec} has no '{HEAD_PREFIX}*' layer to keep private")
    return names


def body_names(spec: ModelSpec) -> tuple[str, ...]:
    """Names of the shared body's tensors (every layer but the last), in state_dict order."""
    head = set(head_names(spec))
    return tuple(name for name in weight_shapes(spec) if name not in head)


def split_weights(weights: Mapping[str, np.ndarray], spec: ModelSpec) -> tuple[Weights, Weights]:
    """(body, head) of a full set of weights; ValueError unless the names are exactly the model's."""
    expected = set(weight_shapes(spec))
    if set(weights) != expected:
        raise ValueError(f"weights do not match the model: differing tensors {sorted(set(weights) ^ expected)}")
    body = {name: weights[name] for name in body_names(spec)}
    head = {name: weights[name] for name in head_names(spec)}
    return body, head


def shared_payload(weights: Mapping[str, np.ndarray], spec: ModelSpec) -> Weights:
    """What a FedPer device uploads: the body only; the head stays on the device."""
    return split_weights(weights, spec)[0]


def merge_weights(body: Mapping[str, np.ndarray], head: Mapping[str, np.ndarray], spec: ModelSpec) -> Weights:
    """The full model from a (global) body and a (private) head, in state_dict order; checks names and shapes."""
    shapes = weight_shapes(spec)
    for part, names in (("body", body_names(spec)), ("head", head_names(spec))):
        given = body if part == "body" else head
        if set(given) != set(names):
            raise ValueError(f"{part} tensors {sorted(given)} are not the model's {part} {sorted(names)}")
    merged = {**body, **head}
    for name, shape in shapes.items():
        if tuple(np.shape(merged[name])) != shape:
            raise ValueError(f"{name}: shape {np.shape(merged[name])}, expected {shape}")
    return {name: merged[name] for name in shapes}


def split_local(data: Dataset, test_fraction: float, seed: int, min_test: int = 1) -> tuple[Dataset, Dataset]:
    """(train, held-out) split of a device's data, stratified by label (each class gives its share, rounded, and at
    least one sample when it has two or more), seeded. At least `min_test` held out and one sample left to train."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(data)
    if n < 2:
        raise ValueError(f"cannot split {n} sample(s) into train and held-out parts")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for cls in np.unique(data.y):
        idx = rng.permutation(np.flatnonzero(data.y == cls))
        k = round(test_fraction * len(idx))
        k = min(len(idx) - 1, max(1, k)) if len(idx) >= 2 else 0
        held.append(idx[:k])
        rest.append(idx[k:])
    test_idx = np.concatenate(held)
    train_idx = np.concatenate(rest)
    want = min(n - 1, max(min_test, 1))
    if len(test_idx) < want:  # tiny or single-class data: move more from train
        extra = rng.permutation(train_idx)[: want - len(test_idx)]
        test_idx = np.concatenate([test_idx, extra])
        train_idx = np.setdiff1d(train_idx, extra)
    return data.subset(np.sort(train_idx)), data.subset(np.sort(test_idx))


def _train_select(
    model: nn.Module, spec: TaskSpec, train: Dataset, val: Dataset | None, epochs: int, seed: int, label: str
) -> tuple[Weights, int]:
    """Train `model` one epoch at a time for `epochs` epochs; return the weights (and epoch count, 0..epochs) with
    the lowest validation loss, or the last ones when there is no validation data."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    one_epoch = dataclasses.replace(spec.train, local_epochs=1)
    best = get_weights(model)
    best_epoch = 0
    best_loss = evaluate(model, val).loss if val is not None else np.inf
    for epoch in range(1, epochs + 1):
        train_local(model, train, one_epoch, seed=round_seed(seed, epoch, label))
        loss = evaluate(model, val).loss if val is not None else -np.inf
        if not np.isfinite(loss) and val is not None:
            break  # diverged: keep the best so far
        if loss < best_loss or val is None:
            best, best_epoch, best_loss = get_weights(model), epoch, loss
    return best, best_epoch


@dataclass(frozen=True)
class FineTuned:
    """A device's fine-tuned weights, the epochs kept (0 = the global model was best on validation)."""

    weights: Weights
    epochs: int


def fine_tune(
    spec: TaskSpec,
    global_weights: Weights,
    data: Dataset,
    epochs: int = 10,
    val_fraction: float = 0.25,
    seed: int = 0,
    lr: float | None = None,
) -> FineTuned:
    """The global model trained on the device's data for up to `epochs` epochs (learning rate `lr`, default the
    task's), keeping the epoch with the lowest loss on a held-out `val_fraction` of `data`."""
    train, val = split_local(data, val_fraction, seed) if len(data) >= 2 else (data, None)
    task = spec if lr is None else dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr=lr))
    model = build_model(spec.model, seed=spec.seed)
    set_weights(model, global_weights)
    weights, kept = _train_select(model, task, train, val, epochs, seed, "fine-tune")
    return FineTuned(weights, kept)


def train_alone(spec: TaskSpec, data: Dataset, epochs: int = 30, val_fraction: float = 0.25, seed: int = 0) -> Weights:
    """The task's model trained from scratch on `data` only, epochs (up to `epochs`) chosen on a held-out
    `val_fraction` of it: what a device could do without federation."""
    train, val = split_local(data, val_fraction, seed) if len(data) >= 2 else (data, None)
    model = build_model(spec.model, seed=round_seed(spec.seed, seed, "alone"))
    weights, _ = _train_select(model, spec, train, val, epochs, seed, "alone")
    return weights


def fedper_local_round(
    spec: TaskSpec, global_body: Weights, head: Weights, data: Dataset, seed: int
) -> tuple[Weights, Weights]:
    """A FedPer device's round: global body + own head, trained on local data; returns (body to send, new head)."""
    model = build_model(spec.model, seed=spec.seed)
    set_weights(model, merge_weights(global_body, head, spec.model))
    train_local(model, data, spec.train, seed=seed)
    return split_weights(get_weights(model), spec.model)


def train_head(spec: TaskSpec, body: Weights, head: Weights, data: Dataset, epochs: int, seed: int) -> Weights:
    """The head refitted to a fixed body on local data (body frozen) for `epochs` epochs: the private head after
    the last round was trained against that round's local body, not the final global one."""
    model = build_model(spec.model, seed=spec.seed)
    set_weights(model, merge_weights(body, head, spec.model))
    private = set(head_names(spec.model))
    for name, param in model.named_parameters():
        param.requires_grad_(name in private)  # frozen parameters get no gradient, so SGD leaves them as they are
    if epochs > 0:
        train_local(model, data, dataclasses.replace(spec.train, local_epochs=epochs), seed=seed)
    return split_weights(get_weights(model), spec.model)[1]


@dataclass(frozen=True)
class DeviceAccuracies:
    """Accuracies on one device's held-out local test data (its own distribution), and that data's size."""

    global_model: float
    alone: float
    fine_tuned: float
    personalized: float
    test_samples: int


def compare_device(
    spec: TaskSpec,
    global_weights: Weights,
    fedper_body: Weights,
    fedper_head: Weights,
    train: Dataset,
    test: Dataset,
    seed: int = 0,
    fine_tune_epochs: int = 10,
    alone_epochs: int = 30,
    head_epochs: int = 0,
    val_fraction: float = 0.25,
    fine_tune_lr: float | None = None,
) -> DeviceAccuracies:
    """One device's accuracies on its held-out `test` data: the global model, training alone on `train`, the global
    model fine-tuned on `train`, and FedPer's global body with this device's head (refitted for `head_epochs`)."""
    if len(test) == 0:
        raise ValueError("the device has no held-out test data")
    model = build_model(spec.model, seed=spec.seed)

    def accuracy(weights: Weights) -> float:
        set_weights(model, weights)
        return evaluate(model, test).accuracy

    tuned = fine_tune(spec, global_weights, train, fine_tune_epochs, val_fraction, seed, fine_tune_lr)
    alone = train_alone(spec, train, alone_epochs, val_fraction, seed)
    head = train_head(spec, fedper_body, fedper_head, train, head_epochs, round_seed(seed, 0, "head"))
    return DeviceAccuracies(
        global_model=accuracy(global_weights),
        alone=accuracy(alone),
        fine_tuned=accuracy(tuned.weights),
        personalized=accuracy(merge_weights(fedper_body, head, spec.model)),
        test_samples=len(test),
    )


__all__ = [
    "HEAD_PREFIX",
    "DeviceAccuracies",
    "FineTuned",
    "body_names",
    "compare_device",
    "fedper_local_round",
    "fine_tune",
    "head_names",
    "merge_weights",
    "shared_payload",
    "split_local",
    "split_weights",
    "train_alone",
    "train_head",
]
