"""The light device's training: what `fedchain.learning.train.train_local` does, in numpy alone (no torch), so a
gateway without a torch wheel (a Raspberry Pi class board, ~1 GB of memory) can be a device.

It reuses the work units' kernels (`fedchain.learning.exact_cnn`: forward and backward of the "mlp" and "cnn1d"
models in float64, every sum in a fixed order, no BLAS) and implements train_local's optimiser step for step:

- torch.optim.SGD semantics: gradient of the mean cross-entropy of the batch, plus FedProx's proximal gradient
  mu·(w - w_global) when the task's strategy is FedProx, plus weight_decay·w; a momentum buffer that starts as the
  first step's gradient (no dampening, no Nesterov), reset every round (train_local builds a new optimiser); then
  w -= lr·buffer;
- `local_epochs` epochs of mini-batches of `batch_size` (the last one shorter), reshuffled every epoch from one
  generator seeded by the round's seed (`fedchain.learning.seeds.round_seed`), so a device's round is the same
  bits in any process;
- the reported loss: the sample-weighted mean cross-entropy over the last epoch.

It is not bit-identical to the torch path, and cannot be: torch draws its shuffles from its own generator
(torch.randperm), which numpy cannot replay, keeps weights in float32 between steps (here float64, rounded to
float32 once at the end of the round, as weights travel) and sums in its own kernels' order (BLAS, vectorised
reductions) where these kernels sum in a fixed one. Both are the same optimiser on the same data; the accuracy
test (tests/unit/learning/test_learning_light.py) checks they land at about the same accuracy.

What it does not implement is refused when the model is built, before the device joins (`LightUnsupported`),
never silently trained differently: dropout (the demo's models have none).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedchain.learning.data import Dataset
from fedchain.learning.exact_cnn import Engine, as_float64, softmax, to_weights
from fedchain.learning.shapes import weight_shapes
from fedchain.learning.spec import ModelSpec, TrainSpec
from fedchain.learning.types import Weights
from fedchain.learning.weights import check_weights


class LightUnsupported(ValueError):
    """A task the light runtime cannot train exactly as the torch runtime would: the device refuses it at start."""


@dataclass(frozen=True)
class LightResult:
    """One local training: the trained float32 weights, samples, last epoch's mean loss and wall seconds."""

    weights: Weights
    num_samples: int
    loss: float
    seconds: float


def check_supported(spec: ModelSpec) -> None:
    """Raise LightUnsupported for a model the light runtime does not train the way torch does."""
    if spec.dropout > 0:
        raise LightUnsupported(
            f"the light runtime does not implement dropout (the task's model has dropout {spec.dropout}); "
            "run this device with --runtime torch"
        )


def initial_weights(spec: ModelSpec, seed: int) -> Weights:
    """PyTorch's default initialisation scheme (nn.Linear, nn.Conv1d: weight and bias uniform in
    ±1/sqrt(fan_in)), drawn from numpy: the same distribution as `fedchain.learning.model.build_model`, not the
    same numbers. A device trains from the round's global model, so this only seeds the warm-up."""
    rng = np.random.Generator(np.random.PCG64(seed))
    weights: Weights = {}
    for name, shape in weight_shapes(spec).items():
        weight_shape = shape if name.endswith(".weight") else weight_shapes(spec)[name[: -len("bias")] + "weight"]
        fan_in = math.prod(weight_shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        weights[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return weights


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of `logits` (n, classes) against labels `y`, and its gradient with respect to the logits."""
    probabilities = softmax(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(len(y))
    loss = float((log_norm - shifted[rows, y]).mean())
    onehot = np.zeros_like(probabilities)
    onehot[rows, y] = 1.0
    return loss, (probabilities - onehot) / len(y)


def train_light(
    model: ModelSpec,
    weights: Weights,
    data: Dataset,
    spec: TrainSpec,
    seed: int,
    proximal_mu: float = 0.0,
    global_weights: Weights | None = None,
) -> LightResult:
    """Train `weights` of `model` on `data` as `train_local` does (see the module's docstring); returns new weights.

    With proximal_mu > 0 adds FedProx's proximal term towards `global_weights` (or, if None, `weights`).
    """
    check_supported(model)
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    if proximal_mu < 0:
        raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}")
    started = time.perf_counter()
    engine = Engine(model)
    params = as_float64(weights, model)
    anchor: dict[str, np.ndarray] = {}
    if proximal_mu > 0:
        anchor = as_float64(global_weights, model) if global_weights is not None else dict(params)
    x, y = data.x, data.y
    n = len(data)
    rng = np.random.Generator(np.random.PCG64(seed))
    buffers: dict[str, np.ndarray] = {}
    epoch_loss = 0.0
    for _ in range(spec.local_epochs):
        total = 0.0
        order = rng.permutation(n)
        for start in range(0, n, spec.batch_size):
            batch = order[start : start + spec.batch_size]
            logits, tape = engine.forward(params, x[batch].astype(np.float64))
            loss, grad_logits = cross_entropy(logits, y[batch])
            grads = engine.backward(params, tape, grad_logits)
            for name, param in params.items():
                step = grads[name]
                if anchor:  # d/dw of (mu/2)·||w - w_global||²
                    step = step + proximal_mu * (param - anchor[name])
                if spec.weight_decay != 0.0:
                    step = step + spec.weight_decay * param
                if spec.momentum != 0.0:
                    step = step.copy() if name not in buffers else spec.momentum * buffers[name] + step
                    buffers[name] = step
                params[name] = param - spec.lr * step
            total += loss * len(batch)
        epoch_loss = total / n
    return LightResult(to_weights(params, model), n, epoch_loss, time.perf_counter() - started)


class LightModel:
    """The light runtime's stand-in for the torch module a device holds: the model's spec and current weights."""

    def __init__(self, spec: ModelSpec, seed: int = 0) -> None:
        check_supported(spec)
        self.spec = spec
        self.weights = initial_weights(spec, seed)

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        check_weights(dict(weights), weight_shapes(self.spec))
        self.weights = {name: np.array(weights[name], copy=True) for name in weight_shapes(self.spec)}

    def train(
        self,
        data: Dataset,
        spec: TrainSpec,
        seed: int,
        proximal_mu: float = 0.0,
        global_weights: Weights | None = None,
    ) -> LightResult:
        """One local training from the current weights; the model keeps the trained weights."""
        result = train_light(self.spec, self.weights, data, spec, seed, proximal_mu, global_weights)
        self.weights = result.weights
        return result


def evaluate_light(spec: ModelSpec, weights: Weights, data: Dataset) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of `weights` on `data`."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    logits, _ = Engine(spec).forward(as_float64(weights, spec), data.x.astype(np.float64))
    loss, _ = cross_entropy(logits, data.y)
    return float((logits.argmax(axis=1) == data.y).mean()), loss


def warm_up_light(spec: ModelSpec, train: TrainSpec, data: Dataset, seed: int = 0, proximal_mu: float = 0.0) -> float:
    """Pay the first call's costs now (numpy's lazy imports and allocations): one epoch over at most two batches of
    `data`, on throwaway weights. Returns the seconds it took."""
    started = time.perf_counter()
    if len(data) == 0:
        return 0.0
    rows = data.subset(np.arange(min(len(data), 2 * train.batch_size)))
    once = dataclasses.replace(train, local_epochs=1)
    train_light(spec, initial_weights(spec, seed), rows, once, seed=0, proximal_mu=proximal_mu)
    return time.perf_counter() - started


__all__ = [
    "LightModel",
    "LightResult",
    "LightUnsupported",
    "check_supported",
    "cross_entropy",
    "evaluate_light",
    "initial_weights",
    "train_light",
    "warm_up_light",
]
