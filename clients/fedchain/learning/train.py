"""Local training, evaluation, the centralized reference, and per-round seeds."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.optim.sgd import sgd

from fedchain.learning.data import Dataset
from fedchain.learning.model import build_model, check_weights
from fedchain.learning.seeds import round_seed
from fedchain.learning.spec import TaskSpec, TrainSpec
from fedchain.learning.types import Weights


@dataclass(frozen=True)
class TrainResult:
    """num_samples trained on; loss: mean cross-entropy over the last epoch; seconds: wall time."""

    num_samples: int
    loss: float
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    num_samples: int


def _tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    # Copies: cached datasets are read-only, and torch must not share memory with them.
    return torch.from_numpy(np.array(data.x, dtype=np.float32)), torch.from_numpy(np.array(data.y, dtype=np.int64))


class _SGD:
    """`torch.optim.SGD(params, lr, momentum, weight_decay)` (no dampening, no Nesterov), step for step.

    torch.optim.Optimizer imports torch._dynamo the first time it is constructed and on every `step()` (its
    `_disable_dynamo` and `_use_grad_for_differentiable` wrappers): about 1 s and 70 MiB (sympy, mpmath) that a
    process which never compiles pays in its first round. This class skips the Optimizer machinery and calls the
    kernel SGD.step calls, `torch.optim.sgd.sgd`, with the arguments SGD.step passes (foreach and fused left to
    torch's defaults, as SGD leaves them), so updates are bit-identical (tests/unit/learning compares the two).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float) -> None:
        self.params = list(params)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        buffers: list[torch.Tensor | None] = []
        slots: list[int] = []
        has_sparse_grad = False
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            params.append(p)
            grads.append(p.grad)
            has_sparse_grad = has_sparse_grad or p.grad.is_sparse
            if self.momentum != 0:
                buffers.append(self.momentum_buffers[i])
                slots.append(i)
        sgd(
            params,
            grads,
            buffers,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0,
            nesterov=False,
            maximize=False,
            has_sparse_grad=has_sparse_grad,
            foreach=None,
            fused=None,
            grad_scale=None,
            found_inf=None,
        )
        for i, buffer in zip(slots, buffers, strict=True):
            self.momentum_buffers[i] = buffer


def train_local(
    model: nn.Module,
    data: Dataset,
    spec: TrainSpec,
    seed: int,
    proximal_mu: float = 0.0,
    global_weights: Weights | None = None,
) -> TrainResult:
    """SGD with momentum on cross-entropy over seeded shuffled mini-batches; deterministic for a seed (one thread).

    With proximal_mu > 0 adds FedProx's (mu/2)·||w - w_global||², w_global being `global_weights` or, if None,
    the model's weights on entry.
    """
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    if proximal_mu < 0:
        raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}")
    started = time.perf_counter()
    x, y = _tensors(data)
    params = dict(model.named_parameters())
    anchor: dict[str, torch.Tensor] = {}
    if proximal_mu > 0:
        if global_weights is not None:
            check_weights(global_weights, {name: tuple(p.shape) for name, p in model.state_dict().items()})
            anchor = {name: torch.from_numpy(np.array(global_weights[name], copy=True)) for name in params}
        else:
            anchor = {name: p.detach().clone() for name, p in params.items()}
    optimizer = _SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n = len(data)
    model.train()
    epoch_loss = 0.0
    # Dropout draws from the global RNG: seed a forked copy so results depend on `seed` only.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(spec.local_epochs):
            total = 0.0
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, spec.batch_size):
                batch = order[start : start + spec.batch_size]
                optimizer.zero_grad()
                loss = functional.cross_entropy(model(x[batch]), y[batch])
                objective = loss
                if anchor:
                    prox = sum(((params[k] - anchor[k]) ** 2).sum() for k in anchor)
                    objective = loss + 0.5 * proximal_mu * prox
                objective.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            epoch_loss = total / n
    return TrainResult(num_samples=n, loss=epoch_loss, seconds=time.perf_counter() - started)


def warm_up(model: nn.Module, data: Dataset, spec: TrainSpec, proximal_mu: float = 0.0) -> float:
    """Pay training's first-call costs now (allocator, kernel selection, autograd set-up): one local epoch over
    at most two batches of `data`, on a copy of `model`. Returns the seconds it took.

    Leaves `model`'s weights, torch's global RNG and numpy's untouched (train_local draws from its own generator and
    a forked global RNG), so the rounds that follow are bit-identical to rounds without a warm-up. A device calls it
    once, after building its model and before waiting for round 1.
    """
    started = time.perf_counter()
    if len(data) == 0:
        return 0.0
    rows = data.subset(np.arange(min(len(data), 2 * spec.batch_size)))
    scratch = copy.deepcopy(model)
    train_local(scratch, rows, dataclasses.replace(spec, local_epochs=1), seed=0, proximal_mu=proximal_mu)
    return time.perf_counter() - started


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset) -> EvalResult:
    """Accuracy and mean cross-entropy of `model` on `data` (eval mode)."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    x, y = _tensors(data)
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        model.train(was_training)
    loss = functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).double().mean().item()
    return EvalResult(accuracy=float(accuracy), loss=float(loss), num_samples=len(data))


def train_centralized(spec: TaskSpec, train: Dataset, test: Dataset, epochs: int) -> EvalResult:
    """The task's model trained on all of `train` for `epochs` epochs: the reference for a federated run."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    model = build_model(spec.model, seed=spec.seed)
    train_spec = dataclasses.replace(spec.train, local_epochs=epochs)
    train_local(model, train, train_spec, seed=round_seed(spec.seed, 0, "centralized"))
    return evaluate(model, test)


__all__ = ["EvalResult", "TrainResult", "evaluate", "round_seed", "train_centralized", "train_local", "warm_up"]
