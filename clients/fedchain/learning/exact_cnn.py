"""The bit-exact numpy CNN: forward, backward and SGD of the "mlp" and "cnn1d" models in float64, the same bits in
any process on any x86-64 CPU. The compute market's work units (`fedchain.learning.units`) train with it.

How the bits are pinned (decided by measuring). PyTorch on CPU cannot promise this by itself: with one thread,
deterministic algorithms and oneDNN off, its convolutions and matrix products still run through MKL, whose kernels
are chosen by the CPU (SSE, AVX2, AVX-512), and ATen's own kernels are compiled per instruction set. One 100-step
unit of the demo job trained with torch on one machine gave six different digests under the six combinations of
ATEN_CPU_CAPABILITY (native, default) and MKL_CBWR (unset, COMPATIBLE, AVX2): each knob changes the bits, so two
workers on different CPUs would disagree unless every layer were pinned, and that pinning (ATEN default, MKL's
COMPATIBLE path on Intel and AMD alike, glibc's libm variants) rests on promises nobody here can test on an
AVX-512 machine. So a unit (`fedchain.learning.units`) runs in numpy float64 instead (about 5x slower than torch:
~1.8 s for 150 steps of the demo CNN on one core), built only from operations IEEE 754 defines exactly:

- elementwise +, -, *, /, max and comparisons (correctly rounded, so SIMD width and instruction set do not
  matter; each is a separate numpy call, so nothing is fused into an FMA);
- every sum in a fixed order that depends only on the shapes: products of a matrix product are added left to
  right when the inner dimension is small and by pairwise halving otherwise (`_dot`, `_tree_sum`); no BLAS;
- exp (softmax) from Cody–Waite range reduction, a degree-13 polynomial and `ldexp`, not the C library's exp,
  whose implementation varies with glibc version and CPU;
- random numbers from PCG64's raw 64-bit stream (stable across numpy versions, unlike Generator methods).

Weights travel as float32; a unit widens them to float64 (exact), and rounds its result to float32 once at the end.
Checked here: a unit gives the same digest in fresh processes, also with numpy's SIMD dispatch cut to its
baseline (NPY_DISABLE_CPU_FEATURES) and OpenBLAS forced to its oldest kernels (OPENBLAS_CORETYPE=Prescott), which
change numpy's own results in the last bit (tests/unit/learning/test_units_determinism.py). Values only reach the
subnormal range if logits differ by hundreds, so flush-to-zero modes would not matter in practice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from fedchain.learning.shapes import CNN1D_STRIDE, cnn1d_layers, weight_shapes
from fedchain.learning.spec import ModelSpec, TrainSpec
from fedchain.learning.types import Weights
from fedchain.learning.weights import check_weights

# Inner dimensions up to this are summed left to right; longer ones by pairwise halving.
SEQUENTIAL_SUM_MAX: Final = 64


def _tree_sum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 by pairwise halving (the odd one out is carried); the order depends only on the length."""
    while a.shape[0] > 1:
        n = a.shape[0]
        half = n // 2
        paired = a[:half] + a[half : 2 * half]
        a = paired if n % 2 == 0 else np.concatenate([paired, a[2 * half :]])
    return a[0]


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (m, k) @ b (k, n) with a fixed summation order: left to right for small k, pairwise halving otherwise."""
    k = a.shape[1]
    if k <= SEQUENTIAL_SUM_MAX:
        out = a[:, 0:1] * b[0:1, :]
        for i in range(1, k):
            out += a[:, i : i + 1] * b[i : i + 1, :]
        return out
    return _tree_sum(a.T[:, :, None] * b[:, None, :])


# Cody–Waite split of ln 2 (fdlibm's constants) and Taylor coefficients 1/n! (exact integer, one rounding).
_LN2_HI: Final = 6.93147180369123816490e-01
_LN2_LO: Final = 1.90821492927058770002e-10
_INV_LN2: Final = 1.44269504088896338700e00
_EXP_COEFFS: Final = tuple(1.0 / math.factorial(n) for n in range(14))


def _exp_nonpositive(x: np.ndarray) -> np.ndarray:
    """exp(x) for x <= 0 from basic operations only (relative error ~1e-16); below -700 it returns exp(-700)."""
    x = np.maximum(x, -700.0)
    k = np.rint(x * _INV_LN2)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = np.full_like(r, _EXP_COEFFS[-1])
    for c in reversed(_EXP_COEFFS[:-1]):
        p = p * r + c
    return np.ldexp(p, k.astype(np.int32))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # max is exact in any order
    e = _exp_nonpositive(shifted)
    return e / _tree_sum(e.T)[:, None]


@dataclass(frozen=True)
class _Conv:
    name: str
    kernel: int
    padding: int


class Engine:
    """The model of a ModelSpec as numpy float64 functions; parameters are passed in, never held."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.convs = [_Conv(f"conv.{i}", k, p) for i, (_, _, k, p) in enumerate(cnn1d_layers(spec))]

    def forward(self, params: Mapping[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """Logits for x (float64) and what backward needs."""
        tape: list[Any] = []
        if self.spec.kind == "cnn1d":
            h = x.reshape(x.shape[0], self.spec.channels, -1)
            for conv in self.convs:
                cols, shape = _im2col(h, conv.kernel, conv.padding)
                w = params[f"{conv.name}.weight"]
                z = _dot(cols, w.reshape(w.shape[0], -1).T) + params[f"{conv.name}.bias"]
                batch, steps = shape[0], shape[2]
                z = z.reshape(batch, steps, w.shape[0]).transpose(0, 2, 1)
                tape.append((cols, h.shape, z))
                h = np.maximum(z, 0.0)
            tape.append(h.shape[2])
            h = _tree_sum(h.transpose(2, 0, 1)) / h.shape[2]
        else:
            h = x
            for i in range(len(self.spec.hidden)):
                z = _dot(h, params[f"hidden.{i}.weight"].T) + params[f"hidden.{i}.bias"]
                tape.append((h, z))
                h = np.maximum(z, 0.0)
        tape.append(h)
        return _dot(h, params["output.weight"].T) + params["output.bias"], tape

    def backward(self, params: Mapping[str, np.ndarray], tape: list[Any], grad: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of every parameter, given d(loss)/d(logits)."""
        grads: dict[str, np.ndarray] = {}
        h = tape.pop()
        grads["output.weight"] = _dot(grad.T, h)
        grads["output.bias"] = _tree_sum(grad)
        g = _dot(grad, params["output.weight"])
        if self.spec.kind == "cnn1d":
            steps = tape.pop()
            g = np.broadcast_to((g / steps)[:, :, None], (*g.shape, steps))
            for i in reversed(range(len(self.convs))):
                conv = self.convs[i]
                cols, in_shape, z = tape.pop()
                g = np.where(z > 0.0, g, 0.0)
                w = params[f"{conv.name}.weight"]
                g2 = g.transpose(0, 2, 1).reshape(-1, w.shape[0])
                grads[f"{conv.name}.weight"] = _dot(g2.T, cols).reshape(w.shape)
                grads[f"{conv.name}.bias"] = _tree_sum(g2)
                if i > 0:
                    gcols = _dot(g2, w.reshape(w.shape[0], -1))
                    g = _col2im(gcols, in_shape, conv.kernel, conv.padding, z.shape[2])
        else:
            for i in reversed(range(len(self.spec.hidden))):
                h_in, z = tape.pop()
                g = np.where(z > 0.0, g, 0.0)
                grads[f"hidden.{i}.weight"] = _dot(g.T, h_in)
                grads[f"hidden.{i}.bias"] = _tree_sum(g)
                if i > 0:
                    g = _dot(g, params[f"hidden.{i}.weight"])
        return grads


def _im2col(h: np.ndarray, kernel: int, padding: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(batch * out_len, channels * kernel) patches of a stride-CNN1D_STRIDE convolution, and (b, c, out_len, k)."""
    batch, channels, length = h.shape
    padded = np.pad(h, ((0, 0), (0, 0), (padding, padding)))
    out_len = (length + 2 * padding - kernel) // CNN1D_STRIDE + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=2)
    windows = windows[:, :, : CNN1D_STRIDE * (out_len - 1) + 1 : CNN1D_STRIDE, :]
    cols = windows.transpose(0, 2, 1, 3).reshape(batch * out_len, channels * kernel)
    return cols, (batch, channels, out_len, kernel)


def _col2im(gcols: np.ndarray, in_shape: tuple[int, int, int], kernel: int, padding: int, out_len: int) -> np.ndarray:
    """The input gradient from patch gradients: kernel taps added in order 0..kernel-1."""
    batch, channels, length = in_shape
    g = gcols.reshape(batch, out_len, channels, kernel)
    padded = np.zeros((batch, channels, length + 2 * padding))
    stop = CNN1D_STRIDE * (out_len - 1) + 1
    for j in range(kernel):
        padded[:, :, j : j + stop : CNN1D_STRIDE] += g[:, :, :, j].transpose(0, 2, 1)
    return padded[:, :, padding : padding + length]


def sgd(
    engine: Engine,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    batches: np.ndarray,
    train: TrainSpec,
) -> dict[str, np.ndarray]:
    """PyTorch's SGD (momentum buffer starts as the first gradient; no dampening, no Nesterov) on cross-entropy."""
    buffers: dict[str, np.ndarray] = {}
    classes = engine.spec.num_classes
    for batch in batches:
        xb = x[batch].astype(np.float64)
        onehot = (y[batch][:, None] == np.arange(classes)[None, :]).astype(np.float64)
        logits, tape = engine.forward(params, xb)
        grads = engine.backward(params, tape, (softmax(logits) - onehot) / len(batch))
        for name in sorted(params):
            d = grads[name]
            if train.weight_decay != 0.0:
                d = d + train.weight_decay * params[name]
            if train.momentum != 0.0:
                buffers[name] = d.copy() if name not in buffers else train.momentum * buffers[name] + d
                d = buffers[name]
            params[name] = params[name] - train.lr * d
    return params


def as_float64(weights: Weights, spec: ModelSpec) -> dict[str, np.ndarray]:
    check_weights(weights, weight_shapes(spec))
    return {name: np.array(weights[name], dtype=np.float64) for name in weight_shapes(spec)}


def to_weights(params: Mapping[str, np.ndarray], spec: ModelSpec) -> Weights:
    out = {name: params[name].astype(np.float32) for name in weight_shapes(spec)}
    bad = sorted(name for name, arr in out.items() if not np.isfinite(arr).all())
    if bad:
        raise ValueError(f"training diverged: non-finite weights in {bad}; lower the learning rate")
    return out


__all__ = ["SEQUENTIAL_SUM_MAX", "Engine", "as_float64", "sgd", "softmax", "to_weights"]
