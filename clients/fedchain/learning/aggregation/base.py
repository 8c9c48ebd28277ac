"""The strategy interface, its inputs and results, server state, and deterministic array helpers.

Determinism contract (every aggregator must produce bit-identical weights from the same inputs on any x86-64 CPU):

* updates are validated, then sorted by lower-cased device address by the strategy itself (`Strategy.aggregate`),
  so the caller's order cannot matter;
* every reduction runs in float64 numpy element-wise ufuncs or sums along a contiguous axis (numpy's pairwise sum,
  whose order depends only on the length), never through BLAS, einsum or threads; results are cast to float32 once;
* sorting is used only where the sorted *values* are unique (-0.0 is normalised to +0.0 first), so the sort
  algorithm numpy picks for the CPU cannot matter.
The one BLAS use (Krum's Gram matrix) is only a fast path whose outcome is checked against a rigorous error bound,
see `fedchain.learning.aggregation.krum`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedchain.learning.types import Weights
from fedchain.learning.weights import check_weights

# Columns per block for coordinate-wise work: (n, BLOCK) float64 blocks stay in cache and memory stays bounded.
BLOCK = 2048


@dataclass(frozen=True, eq=False)
class Update:
    """One device's model after local training: `weights` (float32), trained on `num_samples` samples."""

    device: str
    weights: Weights
    num_samples: int


@dataclass(frozen=True, eq=False)
class ServerState:
    """State a stateful strategy carries between rounds (momentum, Adam moments), as named float64 arrays.

    Names are "<slot>/<tensor name>", e.g. "m/output.bias". Aggregators are stateless processes that may restart:
    they store `to_tensors()` (a safetensors-compatible dict of contiguous float64 arrays) next to the model and
    pass `ServerState.from_tensors(...)` back in the next round. Float64 is kept so a restart changes no bit.
    """

    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[str, np.ndarray] = {}
        for name in sorted(self.tensors):
            value = self.tensors[name]
            if not isinstance(name, str) or "/" not in name:
                raise ValueError(f"ServerState tensor names look like '<slot>/<name>', got {name!r}")
            if not isinstance(value, np.ndarray) or value.dtype != np.float64:
                raise ValueError(f"ServerState tensor {name!r} must be a float64 numpy array")
            if not np.isfinite(value).all():
                raise ValueError(f"ServerState tensor {name!r} contains NaN or Inf")
            clean[name] = value
        object.__setattr__(self, "tensors", clean)

    @classmethod
    def from_slots(cls, slots: Mapping[str, Mapping[str, np.ndarray]]) -> ServerState:
        """Build from {slot: {tensor name: float64 array}}."""
        return cls({f"{slot}/{name}": arr for slot, arrays in slots.items() for name, arr in arrays.items()})

    @property
    def empty(self) -> bool:
        return not self.tensors

    def slot(self, slot: str, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """The slot's arrays (copies), checked to have exactly `shapes`; ValueError otherwise."""
        prefix = f"{slot}/"
        found = {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        if set(found) != set(shapes):
            raise ValueError(f"server state slot {slot!r} has tensors {sorted(found)}, expected {sorted(shapes)}")
        for name, shape in shapes.items():
            if found[name].shape != tuple(shape):
                raise ValueError(f"server state {slot}/{name}: shape {found[name].shape}, expected {tuple(shape)}")
        return {name: np.array(found[name], dtype=np.float64, copy=True) for name in shapes}

    def slots(self) -> set[str]:
        return {k.split("/", 1)[0] for k in self.tensors}

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Contiguous float64 copies, sorted by name: ready for safetensors.numpy.save."""
        return {name: np.ascontiguousarray(value, dtype=np.float64).copy() for name, value in self.tensors.items()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray]) -> ServerState:
        """Inverse of `to_tensors` (e.g. after safetensors.numpy.load)."""
        return cls({name: np.array(value, copy=True) for name, value in tensors.items()})


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The new global weights (float32), which devices were used and which were left out, and why.

    `accepted` and `clipped` are in aggregation order (sorted by lower-cased address); `state` is the server state
    for the next round (empty for stateless strategies).
    """

    weights: Weights
    accepted: tuple[str, ...]
    excluded: Mapping[str, str] = field(default_factory=dict)
    state: ServerState = field(default_factory=ServerState)
    clipped: tuple[str, ...] = ()


def shapes_of(weights: Weights) -> dict[str, tuple[int, ...]]:
    """Name -> shape, in the mapping's order."""
    return {name: tuple(np.shape(value)) for name, value in weights.items()}


def sorted_names(weights: Mapping[str, Any]) -> list[str]:
    """The fixed key order used for flattening and every cross-tensor reduction: sorted names."""
    return sorted(weights)


def flatten(weights: Weights) -> np.ndarray:
    """All tensors as one float64 vector, tensors in sorted-name order, each in C order."""
    names = sorted_names(weights)
    if not names:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(weights[name], dtype=np.float64).reshape(-1) for name in names])


def unflatten(vector: np.ndarray, shapes: Mapping[str, tuple[int, ...]], dtype: Any = np.float32) -> Weights:
    """Inverse of `flatten`: slices in sorted-name order, returned in `shapes`' order, cast to `dtype`."""
    vector = np.asarray(vector)
    sizes = {name: int(np.prod(shape, dtype=np.int64)) for name, shape in shapes.items()}
    if vector.ndim != 1 or vector.shape[0] != sum(sizes.values()):
        raise ValueError(f"vector of shape {vector.shape} does not hold {sum(sizes.values())} parameters")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name in sorted_names(shapes):
        out[name] = vector[offset : offset + sizes[name]].reshape(shapes[name]).astype(dtype)
        offset += sizes[name]
    return {name: out[name] for name in shapes}


def iter_blocks(
    arrays: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], block: int = BLOCK, rows_are_updates: bool = True
) -> Iterator[tuple[str, slice, np.ndarray]]:
    """Yield (name, coordinate slice, block) over every tensor of every input, tensors in `names` order.

    The block is (len(arrays), c) if `rows_are_updates`, else (c, len(arrays)), in the inputs' dtype.
    """
    for name in names:
        flats = [np.asarray(a[name]).reshape(-1) for a in arrays]
        size = flats[0].shape[0]
        for start in range(0, size, block):
            stop = min(start + block, size)
            yield name, slice(start, stop), np.stack([f[start:stop] for f in flats], axis=0 if rows_are_updates else 1)


def _check_num_samples(device: str, num_samples: Any) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise ValueError(f"{device}: num_samples must be an integer, got {num_samples!r}")
    if num_samples <= 0:
        raise ValueError(f"{device}: num_samples must be > 0, got {num_samples}")


def prepare(global_weights: Weights, updates: Sequence[Update]) -> tuple[Update, ...]:
    """Validate the global model and every update against it; return the updates sorted by lower-cased device.

    Raises InvalidWeights (a ValueError) for an update that does not fit the model, ValueError for an empty list,
    duplicate devices or bad sample counts. Callers wanting to skip bad updates validate them first.
    """
    shapes = shapes_of(global_weights)
    if not shapes:
        raise ValueError("the global model has no tensors")
    check_weights(global_weights, shapes)
    if not updates:
        raise ValueError("no updates to aggregate")
    seen: dict[str, str] = {}
    for update in updates:
        if not isinstance(update, Update):
            raise ValueError(f"expected Update, got {type(update).__name__}")
        if not isinstance(update.device, str) or not update.device:
            raise ValueError(f"device must be a non-empty string, got {update.device!r}")
        key = update.device.lower()
        if key in seen:
            raise ValueError(f"two updates from device {update.device!r} (and {seen[key]!r})")
        seen[key] = update.device
        _check_num_samples(update.device, update.num_samples)
        check_weights(update.weights, shapes)
    return tuple(sorted(updates, key=lambda u: u.device.lower()))


def weighted_mean64(global_weights: Weights, updates: Sequence[Update]) -> dict[str, np.ndarray]:
    """Sample-weighted mean in float64, accumulated in the given order (the same arithmetic as StreamingFedAvg)."""
    total = np.float64(sum(int(u.num_samples) for u in updates))
    out: dict[str, np.ndarray] = {}
    for name, ref in global_weights.items():
        acc = np.zeros(np.shape(ref), dtype=np.float64)
        term = np.empty_like(acc)
        for u in updates:
            # float32 * float64 scalar computed in float64 (the dd->d loop): the bits of factor * w.astype(float64).
            np.multiply(u.weights[name], np.float64(u.num_samples), out=term, dtype=np.float64)
            acc += term
        out[name] = acc / total
    return out


def plain_mean(global_weights: Weights, updates: Sequence[Update]) -> Weights:
    """Unweighted mean (float64, in the given order) cast to float32: robust rules ignore self-reported counts."""
    count = np.float64(len(updates))
    out: Weights = {}
    for name, ref in global_weights.items():
        acc = np.zeros(np.shape(ref), dtype=np.float64)
        for u in updates:
            np.add(acc, u.weights[name], out=acc, dtype=np.float64)
        out[name] = (acc / count).astype(np.float32)
    return out


def canonical_block(block: np.ndarray) -> np.ndarray:
    """Turn -0.0 into +0.0 in place (x + 0.0), so sorted values are unique bit patterns whatever the sort."""
    block += block.dtype.type(0.0)
    return block


def coordinatewise(
    global_weights: Weights, weights: Sequence[Weights], reducer: Callable[[np.ndarray], np.ndarray]
) -> Weights:
    """Apply `reducer` to (c, n) float32 blocks whose rows are one coordinate's n values sorted ascending.

    `reducer` returns the c results (any float dtype; cast to float32). Each coordinate is reduced on its own, so
    the block size cannot change results.
    """
    out = {name: np.empty(np.shape(ref), dtype=np.float32) for name, ref in global_weights.items()}
    for name, span, block in iter_blocks(weights, sorted_names(global_weights), rows_are_updates=False):
        block = canonical_block(block)
        block.sort(axis=1)
        out[name].reshape(-1)[span] = reducer(block)
    return out


class Strategy(ABC):
    """An aggregation rule. Subclasses implement `_aggregate` over validated updates sorted by device address."""

    name: ClassVar[str]
    # The facts about a rule, read by the registry (fedchain.learning.aggregation.registry), the aggregator and the
    # explorer. The on-chain id (uint16 in the task config) is stable forever: a task created with id 7 must mean
    # Krum to every future client. None for wrappers (clipping, reference filter) that are not strategies of their own.
    strategy_id: ClassVar[int | None] = None
    label: ClassVar[str] = ""  # display name ("Trimmed mean")
    # Every parameter with its default; a default's type (int or float) is the parameter's type.
    defaults: ClassVar[Mapping[str, float | int]] = {}
    # Capabilities. stateful: carries ServerState (momentum, moments) from round to round. weighted_mean: the result
    # is exactly the sample-weighted mean of the updates, so it can be computed streaming. secure_aggregation: needs
    # nothing but the sum of the updates, so it runs on what secure aggregation reveals.
    stateful: ClassVar[bool] = False
    weighted_mean: ClassVar[bool] = False
    secure_aggregation: ClassVar[bool] = False

    def aggregate(
        self, global_weights: Weights, updates: Sequence[Update], state: ServerState | None = None
    ) -> AggregateResult:
        """The new global model from `updates` (any order); `state` is the previous round's `result.state`."""
        ordered = prepare(global_weights, updates)
        return self._aggregate(global_weights, ordered, state if state is not None else ServerState())

    @abstractmethod
    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        """Aggregate validated `updates`, already sorted by lower-cased device address."""

    @abstractmethod
    def params(self) -> dict[str, float | int]:
        """The strategy's parameters, as they appear in its StrategySpec."""

    def within(self, n: int) -> Strategy:
        """This strategy as it must run on `n` updates when a filter in front left fewer than it was set up for.

        Rules with a Byzantine bound f that needs enough inputs (Krum, Multi-Krum, Bulyan) return a copy with the
        largest f that n allows (never a larger f); every other rule returns itself.
        """
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class UnweightedMean(Strategy):
    """The plain mean of every update: what Krum-type rules reduce to when too few updates are left for any f."""

    name = "mean"

    def params(self) -> dict[str, float | int]:
        return {}

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        return AggregateResult(plain_mean(global_weights, updates), devices(updates))


def devices(updates: Sequence[Update]) -> tuple[str, ...]:
    return tuple(u.device for u in updates)


def number(owner: str, name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """A finite float within [low, high] (bounds inclusive); ValueError naming the parameter otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{owner}.{name} must be a finite number in [{low}, {high}], got {value}")
    return value


def integer(owner: str, name: str, value: Any, low: int = 0) -> int:
    """An integer >= low (bool refused); ValueError naming the parameter otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{owner}.{name} must be >= {low}, got {value}")
    return int(value)


__all__ = [
    "BLOCK",
    "AggregateResult",
    "ServerState",
    "Strategy",
    "UnweightedMean",
    "Update",
    "canonical_block",
    "coordinatewise",
    "devices",
    "flatten",
    "integer",
    "iter_blocks",
    "number",
    "plain_mean",
    "prepare",
    "shapes_of",
    "sorted_names",
    "unflatten",
    "weighted_mean64",
]
