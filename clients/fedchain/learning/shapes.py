"""The models' tensor names and shapes, without torch: the light device (`fedchain.learning.light`), the work units
(`fedchain.learning.exact_cnn`) and `fedchain.learning.model` (which re-exports these) share them."""

from __future__ import annotations

import itertools
from typing import Final

from fedchain.learning.spec import ModelSpec

# The "cnn1d" kind's fixed geometry: the first convolution's kernel, the later ones', and every stride.
CNN1D_FIRST_KERNEL: Final = 7
CNN1D_KERNEL: Final = 5
CNN1D_STRIDE: Final = 2


def cnn1d_layers(spec: ModelSpec) -> list[tuple[int, int, int, int]]:
    """(in_channels, out_channels, kernel, padding) of each convolution of a "cnn1d" spec; stride is CNN1D_STRIDE."""
    layers: list[tuple[int, int, int, int]] = []
    in_channels = spec.channels
    for i, out_channels in enumerate(spec.hidden):
        kernel = CNN1D_FIRST_KERNEL if i == 0 else CNN1D_KERNEL
        layers.append((in_channels, out_channels, kernel, kernel // 2))
        in_channels = out_channels
    return layers


def weight_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the spec's state_dict, without building the model."""
    if spec.kind == "cnn1d":
        conv: dict[str, tuple[int, ...]] = {}
        for i, (cin, cout, kernel, _) in enumerate(cnn1d_layers(spec)):
            conv[f"conv.{i}.weight"] = (cout, cin, kernel)
            conv[f"conv.{i}.bias"] = (cout,)
        return {**conv, "output.weight": (spec.num_classes, spec.hidden[-1]), "output.bias": (spec.num_classes,)}
    dims = [spec.input_dim, *spec.hidden]
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        shapes[f"hidden.{i}.weight"] = (b, a)
        shapes[f"hidden.{i}.bias"] = (b,)
    shapes["output.weight"] = (spec.num_classes, dims[-1])
    shapes["output.bias"] = (spec.num_classes,)
    return shapes


__all__ = ["CNN1D_FIRST_KERNEL", "CNN1D_KERNEL", "CNN1D_STRIDE", "cnn1d_layers", "weight_shapes"]
