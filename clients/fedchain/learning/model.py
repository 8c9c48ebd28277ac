"""The model: building it from a spec, and moving its weights in and out as numpy arrays."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn
from torch.nn import functional

# The shapes need no torch (the light device and the work units use them): they live in learning.shapes.
from fedchain.learning.shapes import CNN1D_FIRST_KERNEL, CNN1D_KERNEL, CNN1D_STRIDE, cnn1d_layers, weight_shapes
from fedchain.learning.spec import ModelSpec
from fedchain.learning.types import Weights
from fedchain.learning.weights import REASONS, InvalidWeights, check_weights


class MLP(nn.Module):
    """Linear+ReLU(+Dropout) hidden layers, then a Linear layer to logits.

    Parameter names ("hidden.0.weight", ..., "output.bias") do not depend on dropout, so specs that differ only
    in dropout exchange weights.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        dims = [spec.input_dim, *spec.hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.output = nn.Linear(dims[-1], spec.num_classes)
        self.dropout = spec.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = functional.relu(layer(x))
            if self.dropout > 0:
                x = functional.dropout(x, self.dropout, self.training)
        return self.output(x)


class CNN1d(nn.Module):
    """A 1-D CNN over (n, input_dim) signals: Conv1d+ReLU layers (stride 2), global average pooling, Linear.

    Parameter names: "conv.0.weight", "conv.0.bias", ..., "output.weight", "output.bias". Dropout (if any) is
    applied to the pooled features.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.conv = nn.ModuleList(
            nn.Conv1d(cin, cout, kernel, stride=CNN1D_STRIDE, padding=pad)
            for cin, cout, kernel, pad in cnn1d_layers(spec)
        )
        self.output = nn.Linear(spec.hidden[-1], spec.num_classes)
        self.dropout = spec.dropout
        self.channels = spec.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A row is `channels` signals end to end (channel-major): (n, channels * length) -> (n, channels, length).
        x = x.reshape(x.shape[0], self.channels, -1)
        for layer in self.conv:
            x = functional.relu(layer(x))
        x = x.mean(dim=2)
        if self.dropout > 0:
            x = functional.dropout(x, self.dropout, self.training)
        return self.output(x)


def build_model(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """The spec's model with a deterministic, seeded initialisation (PyTorch's default init scheme)."""
    if spec.kind not in ("mlp", "cnn1d"):
        raise ValueError(f"unknown model kind {spec.kind!r}")
    # A forked RNG: seeding must not disturb the caller's global torch random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CNN1d(spec) if spec.kind == "cnn1d" else MLP(spec)
    return model


def get_weights(model: nn.Module) -> Weights:
    """float32 numpy copies of the model's state_dict, in state_dict order."""
    return {
        name: tensor.detach().cpu().numpy().astype(np.float32, copy=True) for name, tensor in model.state_dict().items()
    }


def set_weights(model: nn.Module, weights: Weights) -> None:
    """Load `weights` into `model` after checking them against the model's own state_dict."""
    state = model.state_dict()
    check_weights(weights, {name: tuple(t.shape) for name, t in state.items()})
    model.load_state_dict({name: torch.from_numpy(np.array(weights[name], copy=True)) for name in state}, strict=True)


__all__ = [
    "CNN1D_FIRST_KERNEL",
    "CNN1D_KERNEL",
    "CNN1D_STRIDE",
    "MLP",
    "REASONS",
    "CNN1d",
    "InvalidWeights",
    "build_model",
    "check_weights",
    "cnn1d_layers",
    "get_weights",
    "set_weights",
    "weight_shapes",
]
