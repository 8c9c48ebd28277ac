"""Local training, evaluation, the centralized reference, and per-round seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedchain.learning.data import Dataset
from fedchain.learning.model import build_model, check_weights
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
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
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
                optimizer.zero_grad(set_to_none=True)
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


def round_seed(task_seed: int, round_index: int, device_key: str) -> int:
    """A stable 63-bit seed from sha256 (unlike hash(), the same in every process and Python version)."""
    # JSON keeps the fields unambiguous; lower() so checksummed and lowercase addresses agree.
    payload = json.dumps(["fedchain.round_seed", int(task_seed), int(round_index), device_key.lower()])
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


__all__ = ["EvalResult", "TrainResult", "evaluate", "round_seed", "train_centralized", "train_local"]
