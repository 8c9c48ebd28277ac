"""Fixed-point quantisation of model updates into the ring Z_{2^32}, for secure aggregation.

An update (a dict of tensors, or an already flat vector) is flattened in sorted tensor-name order to float64,
clipped to [-clip_range, clip_range], scaled by 2^scale_bits and rounded to the nearest integer (round half to even,
deterministic: `np.rint`). The integer is stored in two's complement as uint32, so that sums wrap around modulo 2^32
exactly as the masks do. After unmasking, the uint32 sum is read back as int32 and divided by 2^scale_bits.

Error bound (deterministic rounding). For one value x with |x| <= clip_range, |x * 2^s - rint(x * 2^s)| <= 1/2, so the
dequantised value is within 2^-(s+1) of x. Multiplying by 2^s is exact in float64 (a power of two), and rint is
exact, so no other error enters. The sum of n dequantised values therefore differs from the sum of the clipped values
by at most n * 2^-(s+1) per coordinate: `sum_error_bound(n)`. Values outside [-clip_range, clip_range] are clipped
first; that error is not bounded (choose clip_range above the largest update coordinate you expect).

No overflow (the signed range). Let Q = ceil(clip_range * 2^s). Every quantised value q satisfies |q| <= Q (rint of a
number in [-c 2^s, c 2^s] stays in [-ceil(c 2^s), ceil(c 2^s)]). The true integer sum of n such values lies in
[-n Q, n Q]. Reading the wrapped uint32 sum as int32 recovers the true sum iff it lies in [-2^31, 2^31 - 1], which is
guaranteed when n Q <= 2^31 - 1. `QuantParams.check_capacity(n)` raises ValueError otherwise.
With the defaults (clip_range = 2.0, scale_bits = 20): Q = 2 * 2^20 = 2^21, and for n = 1000,
n Q = 1000 * 2^21 = 2,097,152,000 <= 2,147,483,647 = 2^31 - 1; the largest safe n is floor((2^31 - 1) / 2^21) = 1023.
Resolution 2^-20 ~ 9.5e-7; the sum of 1000 updates is within 1000 * 2^-21 ~ 4.8e-4 per coordinate, i.e. the mean is
within 2^-21 ~ 4.8e-7.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

RING_BITS = 32
RING_MODULUS = 2**RING_BITS
# The largest absolute value a sum may have and still be read back from the ring without ambiguity.
SIGNED_MAX = 2 ** (RING_BITS - 1) - 1

DEFAULT_SCALE_BITS = 20
DEFAULT_CLIP_RANGE = 2.0
# Design target: the defaults must admit this many devices (see the module docstring for the proof).
DESIGN_MAX_DEVICES = 1000


@dataclass(frozen=True)
class QuantParams:
    """Fixed-point parameters: values are clipped to [-clip_range, clip_range] and scaled by 2^scale_bits."""

    scale_bits: int = DEFAULT_SCALE_BITS
    clip_range: float = DEFAULT_CLIP_RANGE

    def __post_init__(self) -> None:
        if not isinstance(self.scale_bits, int) or isinstance(self.scale_bits, bool):
            raise ValueError(f"scale_bits must be an int, got {self.scale_bits!r}")
        if not 0 <= self.scale_bits <= RING_BITS - 2:
            raise ValueError(f"scale_bits must be in [0, {RING_BITS - 2}], got {self.scale_bits}")
        if not (isinstance(self.clip_range, int | float) and math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ValueError(f"clip_range must be a positive finite number, got {self.clip_range!r}")
        if self.max_abs_int > SIGNED_MAX:
            raise ValueError(f"clip_range * 2^scale_bits = {self.max_abs_int} does not fit the signed ring range")

    @property
    def scale(self) -> float:
        """2^scale_bits."""
        return float(2**self.scale_bits)

    @property
    def max_abs_int(self) -> int:
        """Q = ceil(clip_range * 2^scale_bits): the largest |q| one quantised value can have."""
        return math.ceil(self.clip_range * 2**self.scale_bits)

    @property
    def max_devices(self) -> int:
        """The largest n for which a sum of n quantised values cannot overflow the signed ring range."""
        return SIGNED_MAX // self.max_abs_int

    def check_capacity(self, n: int) -> None:
        """Raise ValueError unless n values in [-clip_range, clip_range] can be summed without overflow."""
        if n < 1:
            raise ValueError(f"the number of summands must be at least 1, got {n}")
        if n * self.max_abs_int > SIGNED_MAX:
            raise ValueError(
                f"{n} devices x {self.max_abs_int} (clip_range {self.clip_range} x 2^{self.scale_bits}) may overflow "
                f"the signed 32-bit ring (max {self.max_devices} devices): lower scale_bits or clip_range"
            )

    def sum_error_bound(self, n: int) -> float:
        """Max |dequantised sum - true sum| per coordinate for n unclipped values: n * 2^-(scale_bits+1)."""
        return n * 2.0 ** -(self.scale_bits + 1)


@dataclass(frozen=True)
class VectorLayout:
    """How a flat vector maps back to named tensors: (name, shape) in sorted name order."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for _, shape in self.entries)

    @classmethod
    def of(cls, weights: Mapping[str, np.ndarray]) -> VectorLayout:
        return cls(tuple((name, tuple(int(d) for d in np.shape(weights[name]))) for name in sorted(weights)))


def flatten(update: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
    """A float64 1-D copy of `update`: tensors concatenated in sorted name order, or a flat array as is."""
    if isinstance(update, np.ndarray):
        if update.ndim != 1:
            raise ValueError(f"a flat update must be 1-D, got shape {update.shape}")
        vec = update.astype(np.float64, copy=True)
    elif isinstance(update, Mapping):
        if not update:
            raise ValueError("the update has no tensors")
        parts = [np.asarray(update[name], dtype=np.float64).reshape(-1) for name in sorted(update)]
        vec = np.concatenate(parts)
    else:
        raise TypeError(f"expected a dict of arrays or a 1-D array, got {type(update).__name__}")
    if vec.size == 0:
        raise ValueError("the update is empty")
    return vec


def unflatten(vector: np.ndarray, layout: VectorLayout, dtype: np.dtype | type = np.float64) -> dict[str, np.ndarray]:
    """Named tensors from a flat vector laid out by `layout` (the inverse of `flatten`)."""
    if vector.ndim != 1 or vector.size != layout.size:
        raise ValueError(f"vector of shape {vector.shape} does not match a layout of {layout.size} values")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in layout.entries:
        count = math.prod(shape)
        out[name] = vector[offset : offset + count].reshape(shape).astype(dtype, copy=True)
        offset += count
    return out


def quantize(update: Mapping[str, np.ndarray] | np.ndarray, params: QuantParams | None = None) -> np.ndarray:
    """uint32 ring elements for `update`: flatten, clip, scale by 2^scale_bits, round half to even, two's complement.

    Raises ValueError on NaN or infinite values (they have no place in the ring and would poison the sum).
    """
    params = params or QuantParams()
    vec = flatten(update)
    if not np.all(np.isfinite(vec)):
        raise ValueError("the update contains NaN or infinite values")
    np.clip(vec, -params.clip_range, params.clip_range, out=vec)
    vec *= params.scale
    np.rint(vec, out=vec)
    # |vec| <= Q < 2^31, so the int64 values are exact; the uint32 cast is reduction modulo 2^32.
    return (vec.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)


def dequantize(ring: np.ndarray, params: QuantParams | None = None, n: int = 1) -> np.ndarray:
    """float64 values of a ring vector holding the sum of `n` quantised updates (checks n against the capacity)."""
    params = params or QuantParams()
    params.check_capacity(n)
    if ring.dtype != np.uint32 or ring.ndim != 1:
        raise ValueError(f"expected a 1-D uint32 ring vector, got {ring.dtype} {ring.shape}")
    return ring.view(np.int32).astype(np.float64) / params.scale


__all__ = [
    "DEFAULT_CLIP_RANGE",
    "DEFAULT_SCALE_BITS",
    "DESIGN_MAX_DEVICES",
    "RING_BITS",
    "RING_MODULUS",
    "SIGNED_MAX",
    "QuantParams",
    "VectorLayout",
    "dequantize",
    "flatten",
    "quantize",
    "unflatten",
]
