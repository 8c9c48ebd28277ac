"""Work units of the compute market (issue 6): a training job cut into stages of replicated, bit-reproducible units.

A requester posts a `JobPlan`: a task (dataset, model, training settings), `num_stages` stages of
`units_per_stage` units each, `steps_per_unit` SGD steps per unit. Unit (stage, index) starts from the stage's
checkpoint and takes `steps_per_unit` steps of mini-batch SGD (momentum, optional weight decay) on shard `index`
of the training split, with mini-batches drawn from the unit's seed. The next checkpoint is the plain mean of the
stage's unit results (local SGD / periodic averaging: every unit does the same number of steps, so FedAvg's
weights are all equal). Two workers compute each unit and the market accepts it when their `result_digest`s
match, so a unit must give the same bits in any process on any x86-64 CPU.

How the bits are pinned (decided by measuring). PyTorch on CPU cannot promise this by itself: with one thread,
deterministic algorithms and oneDNN off, its convolutions and matrix products still run through MKL, whose kernels
are chosen by the CPU (SSE, AVX2, AVX-512), and ATen's own kernels are compiled per instruction set. One 100-step
unit of the demo job trained with torch on one machine gave six different digests under the six combinations of
ATEN_CPU_CAPABILITY (native, default) and MKL_CBWR (unset, COMPATIBLE, AVX2): each knob changes the bits, so two
workers on different CPUs would disagree unless every layer were pinned, and that pinning (ATEN default, MKL's
COMPATIBLE path on Intel and AMD alike, glibc's libm variants) rests on promises nobody here can test on an
AVX-512 machine. So a unit runs in numpy float64 instead (about 5x slower than torch: ~1.8 s for 150 steps of the
demo CNN on one core), built only from operations IEEE 754 defines exactly:

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
`check_deterministic_runtime()` runs a tiny fixed unit and compares its digest with the one recorded here, which
catches a process whose arithmetic differs (another rounding mode, a numpy that fuses or reorders operations).
Workers may still be started with `deterministic_env()` (single-threaded BLAS, torch pinned to its baseline
kernels) so that anything else they do with torch is pinned too, but the unit result does not depend on it.

The data must be the same bits too: `load_dataset` builds them from a simulation and a split, so a plan pins the
digest of the loaded arrays (`data_digest`) and a worker whose data differ refuses to compute.

Encoding for IPFS: fedchain.storage.codec.encode_weights sorts tensor names and rewrites the safetensors header
canonically, so equal weights with equal metadata give equal bytes (hence equal CIDs); a unit's upload must not
carry worker-specific metadata, or the two replicas' CIDs differ although their weights agree.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Final

import numpy as np

from fedchain.learning.data import Dataset, load_dataset
from fedchain.learning.model import CNN1D_STRIDE, check_weights, cnn1d_layers, weight_shapes
from fedchain.learning.spec import DatasetSpec, ModelSpec, PrivacySpec, TaskSpec, TrainSpec, _no_duplicates
from fedchain.learning.train import EvalResult
from fedchain.learning.types import Weights

PLAN_VERSION: Final = 1
SHARD_RULES: Final = ("iid",)
UNIT_MODEL_KINDS: Final = ("mlp", "cnn1d")
# Inner dimensions up to this are summed left to right; longer ones by pairwise halving.
SEQUENTIAL_SUM_MAX: Final = 64

_HEX = frozenset("0123456789abcdef")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"JobPlan.{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class JobPlan:
    """A training job for the compute market; canonical JSON with a sha256 digest, like the task description.

    Mini-batch size, learning rate, momentum and weight decay are the task's `train` settings (`batch_size`,
    `lr`, ... below read them); `train.local_epochs` must be 1, since a unit's length is `steps_per_unit`. The
    task's strategy must be plain FedAvg and its privacy settings the defaults: a stage merges by the plain mean.
    `data_digest` (hex sha256 of the loaded train and test arrays, see `dataset_digest`) is checked by every unit
    when non-empty; `pin_data()` fills it in.
    """

    task: TaskSpec
    num_stages: int = 4
    units_per_stage: int = 4
    steps_per_unit: int = 100
    seed: int = 0
    shard_rule: str = "iid"
    data_digest: str = ""
    version: int = PLAN_VERSION

    FIELDS: ClassVar[set[str]] = {
        "task",
        "num_stages",
        "units_per_stage",
        "steps_per_unit",
        "seed",
        "shard_rule",
        "data_digest",
        "version",
    }

    def __post_init__(self) -> None:
        if not isinstance(self.task, TaskSpec):
            raise ValueError(f"JobPlan.task must be a TaskSpec, got {type(self.task).__name__}")
        _positive_int("num_stages", self.num_stages)
        _positive_int("units_per_stage", self.units_per_stage)
        _positive_int("steps_per_unit", self.steps_per_unit)
        _positive_int("seed", self.seed, 0)
        _positive_int("version", self.version, 0)
        if self.version != PLAN_VERSION:
            raise ValueError(f"JobPlan.version {self.version} is not supported (this client reads {PLAN_VERSION})")
        if self.shard_rule not in SHARD_RULES:
            raise ValueError(f"JobPlan.shard_rule must be one of {list(SHARD_RULES)}, got {self.shard_rule!r}")
        digest = self.data_digest
        if not isinstance(digest, str) or (digest and (len(digest) != 64 or not set(digest) <= _HEX)):
            raise ValueError(f"JobPlan.data_digest must be '' or 64 lowercase hex digits, got {digest!r}")
        model, train = self.task.model, self.task.train
        if model.kind not in UNIT_MODEL_KINDS:
            raise ValueError(f"JobPlan: model kind {model.kind!r} has no unit trainer; known: {list(UNIT_MODEL_KINDS)}")
        if model.dropout != 0.0:
            raise ValueError("JobPlan: units train without dropout; the task's model.dropout must be 0")
        if train.local_epochs != 1:
            raise ValueError("JobPlan: a unit's length is steps_per_unit; the task's train.local_epochs must be 1")
        if json.loads(self.task.strategy) != {"name": "fedavg", "params": {}}:
            raise ValueError(
                f"JobPlan: a stage merges by the plain mean; the task's strategy must be plain fedavg, "
                f"got {self.task.strategy}"
            )
        if self.task.privacy != PrivacySpec():
            raise ValueError("JobPlan: units do not implement secure aggregation or differential privacy")

    @property
    def batch_size(self) -> int:
        return self.task.train.batch_size

    @property
    def lr(self) -> float:
        return self.task.train.lr

    @property
    def momentum(self) -> float:
        return self.task.train.momentum

    @property
    def weight_decay(self) -> float:
        return self.task.train.weight_decay

    @property
    def num_units(self) -> int:
        return self.num_stages * self.units_per_stage

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "task": self.task.to_dict(),
            "num_stages": self.num_stages,
            "units_per_stage": self.units_per_stage,
            "steps_per_unit": self.steps_per_unit,
            "seed": self.seed,
            "shard_rule": self.shard_rule,
            "data_digest": self.data_digest,
        }

    @classmethod
    def from_dict(cls, data: Any) -> JobPlan:
        if not isinstance(data, dict):
            raise ValueError(f"JobPlan: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - cls.FIELDS)
        if unknown:
            raise ValueError(f"JobPlan: unknown field(s) {unknown}; allowed: {sorted(cls.FIELDS)}")
        missing = sorted({"version", "task"} - set(data))
        if missing:
            raise ValueError(f"JobPlan: missing field(s) {missing}")
        fields = {k: v for k, v in data.items() if k != "task"}
        return cls(task=TaskSpec.from_dict(data["task"]), **fields)

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no whitespace, UTF-8): equal plans give equal bytes."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> JobPlan:
        """Parse a plan; ValueError if it is not valid UTF-8 JSON of a known version."""
        try:
            parsed = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"job plan is not valid UTF-8 JSON: {exc}") from None
        except TypeError as exc:
            raise ValueError(f"job plan must be bytes: {exc}") from None
        return cls.from_dict(parsed)

    def digest(self) -> bytes:
        """sha256 of the canonical JSON (32 bytes: fits a bytes32)."""
        return hashlib.sha256(self.to_json()).digest()

    def pin_data(self) -> JobPlan:
        """This plan with `data_digest` set to the digest of the data as loaded here."""
        train, test = load_dataset(self.task.dataset)
        return replace(self, data_digest=dataset_digest(train, test))


class DataMismatch(ValueError):
    """The task's data as loaded in this process are not the bits the plan pinned."""


def _derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from sha256 over a JSON list (the same in every process and Python version)."""
    payload = json.dumps(["fedchain.units", *parts], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(payload.encode("utf-8")).digest()[:8], "big") >> 1


def unit_seed(plan: JobPlan, stage: int, index: int) -> int:
    """The seed of unit (stage, index): its mini-batch order."""
    _check_unit(plan, stage, index)
    return _derive_seed("unit", plan.seed, stage, index)


def _check_unit(plan: JobPlan, stage: int, index: int) -> None:
    for name, value, bound in (("stage", stage, plan.num_stages), ("index", index, plan.units_per_stage)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < bound:
            raise ValueError(f"unit {name} must be an integer in 0..{bound - 1}, got {value!r}")


def _permutation(seed: int, n: int) -> np.ndarray:
    """A permutation of range(n) from PCG64's raw stream (stable across numpy versions): argsort of random keys."""
    keys = np.random.PCG64(seed).random_raw(n)
    return np.argsort(keys, kind="stable").astype(np.int64)


def canonical_digest(arrays: Mapping[str, np.ndarray], domain: str = "fedchain.weights.v1") -> bytes:
    """sha256 over sorted names, each with its dtype and shape, then its little-endian C-order bytes."""
    h = hashlib.sha256(domain.encode("utf-8") + b"\n")
    for name in sorted(arrays):
        arr = np.asarray(arrays[name])
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(json.dumps([name, little.dtype.str, list(arr.shape)], separators=(",", ":")).encode("utf-8") + b"\n")
        h.update(np.ascontiguousarray(little).tobytes(order="C"))
    return h.digest()


def result_digest(weights: Weights) -> bytes:
    """sha256 of a canonical serialisation of `weights`: equal digests exactly when names, dtypes, shapes and
    bits agree (0.0 and -0.0 differ; so would two NaN payloads)."""
    return canonical_digest(weights)


def dataset_digest(train: Dataset, test: Dataset) -> str:
    """Hex sha256 of the train and test arrays (as `load_dataset` returns them)."""
    arrays = {"train.x": train.x, "train.y": train.y, "test.x": test.x, "test.y": test.y}
    return canonical_digest(arrays, domain="fedchain.dataset.v1").hex()


_DATA_CHECKED: dict[tuple[DatasetSpec, str], bool] = {}


def plan_data(plan: JobPlan) -> tuple[Dataset, Dataset]:
    """The task's (train, test) split; DataMismatch when it differs from the plan's pinned digest."""
    train, test = load_dataset(plan.task.dataset)
    if plan.data_digest:
        key = (plan.task.dataset, plan.data_digest)
        if key not in _DATA_CHECKED:
            found = dataset_digest(train, test)
            if found != plan.data_digest:
                raise DataMismatch(
                    f"dataset {plan.task.dataset.name!r} loads as {found} here, the plan pins {plan.data_digest}"
                )
            _DATA_CHECKED[key] = True
    return train, test


def shards(plan: JobPlan) -> list[np.ndarray]:
    """Sorted training-split indices of each unit index: a seeded permutation cut into `units_per_stage` parts
    whose sizes differ by at most one (disjoint, covering). The same shards serve every stage."""
    train, _ = plan_data(plan)
    n = len(train)
    if n < plan.units_per_stage:
        raise ValueError(f"cannot cut {n} training samples into {plan.units_per_stage} shards")
    perm = _permutation(_derive_seed("shards", plan.seed, plan.shard_rule), n)
    return [np.sort(part) for part in np.array_split(perm, plan.units_per_stage)]


def _batches(seed: int, shard_size: int, steps: int, batch_size: int) -> np.ndarray:
    """(steps, batch_size) positions in the shard: successive seeded passes over it, cut into full batches."""
    bitgen = np.random.PCG64(seed)
    need = steps * batch_size
    passes: list[np.ndarray] = []
    while sum(len(p) for p in passes) < need:
        passes.append(np.argsort(bitgen.random_raw(shard_size), kind="stable"))
    return np.concatenate(passes)[:need].reshape(steps, batch_size).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# The reproducible float64 engine: forward and backward of the "mlp" and "cnn1d" models.


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


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # max is exact in any order
    e = _exp_nonpositive(shifted)
    return e / _tree_sum(e.T)[:, None]


@dataclass(frozen=True)
class _Conv:
    name: str
    kernel: int
    padding: int


class _Engine:
    """The model of a ModelSpec as numpy float64 functions; parameters are passed in, never held."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.convs = [_Conv(f"conv.{i}", k, p) for i, (_, _, k, p) in enumerate(cnn1d_layers(spec))]

    def forward(self, params: Mapping[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """Logits for x (float64) and what backward needs."""
        tape: list[Any] = []
        if self.spec.kind == "cnn1d":
            h = x[:, None, :]
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


def _sgd(
    engine: _Engine,
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
        grads = engine.backward(params, tape, (_softmax(logits) - onehot) / len(batch))
        for name in sorted(params):
            d = grads[name]
            if train.weight_decay != 0.0:
                d = d + train.weight_decay * params[name]
            if train.momentum != 0.0:
                buffers[name] = d.copy() if name not in buffers else train.momentum * buffers[name] + d
                d = buffers[name]
            params[name] = params[name] - train.lr * d
    return params


def _as_float64(weights: Weights, spec: ModelSpec) -> dict[str, np.ndarray]:
    check_weights(weights, weight_shapes(spec))
    return {name: np.array(weights[name], dtype=np.float64) for name in weight_shapes(spec)}


def _to_weights(params: Mapping[str, np.ndarray], spec: ModelSpec) -> Weights:
    out = {name: params[name].astype(np.float32) for name in weight_shapes(spec)}
    bad = sorted(name for name, arr in out.items() if not np.isfinite(arr).all())
    if bad:
        raise ValueError(f"training diverged: non-finite weights in {bad}; lower the learning rate")
    return out


def initial_checkpoint(plan: JobPlan) -> Weights:
    """The job's starting weights: PyTorch's default scheme (uniform in ±1/sqrt(fan_in) for weights and biases),
    drawn from PCG64's raw stream per tensor, so any machine with any numpy version makes the same bits."""
    shapes = weight_shapes(plan.task.model)
    weights: Weights = {}
    for name, shape in shapes.items():
        weight_shape = shapes[name.rsplit(".", 1)[0] + ".weight"]
        fan_in = math.prod(weight_shape[1:])
        bound = 1.0 / np.sqrt(np.float64(fan_in))
        raw = np.random.PCG64(_derive_seed("init", plan.seed, name)).random_raw(math.prod(shape))
        unit = (raw >> np.uint64(11)).astype(np.float64) * (2.0**-53)
        weights[name] = ((2.0 * unit - 1.0) * bound).astype(np.float32).reshape(shape)
    return weights


def run_unit(plan: JobPlan, checkpoint_weights: Weights, stage: int, index: int) -> Weights:
    """Unit (stage, index): from the checkpoint, `steps_per_unit` SGD steps on shard `index` with the unit's seed.

    Bit-identical in any process on any IEEE 754 machine (see the module docstring). Raises InvalidWeights for a
    checkpoint that does not fit the model, DataMismatch when the data differ from the plan's pinned digest.
    """
    _check_unit(plan, stage, index)
    spec = plan.task.model
    params = _as_float64(checkpoint_weights, spec)
    train, _ = plan_data(plan)
    shard = shards(plan)[index]
    batches = _batches(unit_seed(plan, stage, index), len(shard), plan.steps_per_unit, plan.batch_size)
    with np.errstate(all="ignore"):
        params = _sgd(_Engine(spec), params, train.x[shard], train.y[shard], batches, plan.task.train)
    return _to_weights(params, spec)


def merge_stage(checkpoint: Weights, unit_results: Sequence[Weights]) -> Weights:
    """The next checkpoint: the plain mean of the unit results, summed in float64 in the given (unit-index) order,
    divided once, rounded to float32. `checkpoint` fixes the expected names and shapes."""
    if len(unit_results) == 0:
        raise ValueError("a stage needs at least one unit result to merge")
    shapes = {name: tuple(np.shape(arr)) for name, arr in checkpoint.items()}
    check_weights(checkpoint, shapes)
    for result in unit_results:
        check_weights(result, shapes)
    merged: Weights = {}
    for name in checkpoint:
        total = unit_results[0][name].astype(np.float64)
        for result in unit_results[1:]:
            total = total + result[name].astype(np.float64)
        merged[name] = (total / len(unit_results)).astype(np.float32)
    return merged


def evaluate_plan_model(plan: JobPlan, weights: Weights) -> EvalResult:
    """Accuracy (exact: argmax of the reproducible forward pass) and mean cross-entropy on the task's test split."""
    spec = plan.task.model
    params = _as_float64(weights, spec)
    _, test = plan_data(plan)
    engine = _Engine(spec)
    correct, loss = 0, 0.0
    with np.errstate(all="ignore"):
        for start in range(0, len(test), 256):
            x, y = test.x[start : start + 256].astype(np.float64), test.y[start : start + 256]
            logits, _ = engine.forward(params, x)
            probs = _softmax(logits)
            correct += int((logits.argmax(axis=1) == y).sum())
            loss -= float(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300)).sum())
    return EvalResult(accuracy=correct / len(test), loss=loss / len(test), num_samples=len(test))


def train_single_process(
    plan: JobPlan,
    initial: Weights | None = None,
    on_stage: Callable[[int, Weights, float], None] | None = None,
) -> tuple[Weights, list[float]]:
    """The whole plan in this process: every unit once, merged per stage (the baseline the market must match).

    Starts from `initial` (default `initial_checkpoint(plan)`); returns the final weights and the test accuracy
    after each stage. `on_stage(stage, weights, accuracy)` is called after each stage.
    """
    checkpoint = initial_checkpoint(plan) if initial is None else initial
    accuracies: list[float] = []
    for stage in range(plan.num_stages):
        results = [run_unit(plan, checkpoint, stage, index) for index in range(plan.units_per_stage)]
        checkpoint = merge_stage(checkpoint, results)
        accuracies.append(evaluate_plan_model(plan, checkpoint).accuracy)
        if on_stage is not None:
            on_stage(stage, checkpoint, accuracies[-1])
    return checkpoint, accuracies


# ---------------------------------------------------------------------------------------------------------------
# Worker processes.


def deterministic_env() -> dict[str, str]:
    """Environment variables for a worker process (merge into os.environ before starting it): single-threaded
    BLAS/OpenMP, MKL's reproducible code path, torch's baseline CPU kernels (read when torch is imported, so they
    must be set at process start). Units do not depend on them (see the module docstring); torch code in the same
    worker does."""
    return {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }


# The digest of `_canary_weights()` as computed when this module was written; any IEEE 754 process must agree.
CANARY_DIGEST: Final = "f0e53fe0df6ba88b271af93ca30ae07a3c5f43ec0e02e77b403818f5d8dd02bd"


def _canary_weights() -> Weights:
    """A tiny fixed unit (a cnn1d and an mlp, a few SGD steps on fixed random data) exercising every operation."""
    out: Weights = {}
    for prefix, spec in (
        ("cnn1d", ModelSpec(kind="cnn1d", input_dim=19, hidden=(3, 4), num_classes=3)),
        ("mlp", ModelSpec(kind="mlp", input_dim=5, hidden=(4,), num_classes=3)),
    ):
        task = TaskSpec(dataset=DatasetSpec(), model=spec, train=TrainSpec(batch_size=6, lr=0.3, momentum=0.9))
        plan = JobPlan(task=task, seed=7)
        params = _as_float64(initial_checkpoint(plan), spec)
        raw = np.random.PCG64(_derive_seed("canary", prefix)).random_raw(70 * spec.input_dim + 70)
        x = ((raw[: 70 * spec.input_dim] >> np.uint64(11)).astype(np.float64) * 2.0**-50 - 4.0).reshape(70, -1)
        y = (raw[70 * spec.input_dim :] % np.uint64(3)).astype(np.int64)
        batches = _batches(_derive_seed("canary-batches", prefix), 70, 5, 6)
        with np.errstate(all="ignore"):
            params = _sgd(_Engine(spec), params, x.astype(np.float32), y, batches, task.train)
        out.update({f"{prefix}/{name}": arr for name, arr in _to_weights(params, spec).items()})
    return out


@dataclass(frozen=True)
class RuntimeReport:
    """What check_deterministic_runtime found.

    canary_ok: the fixed canary unit gave the recorded digest, i.e. this process computes units bit-identically.
    torch_capability: torch's active CPU kernel set ("DEFAULT" when pinned by ATEN_CPU_CAPABILITY=default).
    torch_pinned: torch runs its baseline kernels. env: the deterministic_env() variables as this process sees them.
    """

    canary_ok: bool
    canary_digest: str
    torch_capability: str
    torch_pinned: bool
    env: dict[str, str | None]

    @property
    def ok(self) -> bool:
        """Units computed here match every other honest worker's (torch pinning is not needed for that)."""
        return self.canary_ok


def check_deterministic_runtime() -> RuntimeReport:
    """Run the canary unit and look at torch's kernel dispatch; a few milliseconds."""
    import torch  # already imported by the model module; here for the capability query

    digest = result_digest(_canary_weights()).hex()
    capability = str(torch.backends.cpu.get_cpu_capability())
    return RuntimeReport(
        canary_ok=digest == CANARY_DIGEST,
        canary_digest=digest,
        torch_capability=capability,
        torch_pinned=capability == "DEFAULT",
        env={name: os.environ.get(name) for name in deterministic_env()},
    )


# ---------------------------------------------------------------------------------------------------------------
# The demo job.


def default_ecg_task() -> TaskSpec:
    """Rhythm classification of simulated 2.5 s ECG segments (4 classes) with a small 1-D CNN."""
    return TaskSpec(
        dataset=DatasetSpec(name="ecg", test_fraction=0.25, seed=0),
        model=ModelSpec(kind="cnn1d", input_dim=250, hidden=(8, 16), num_classes=4),
        train=TrainSpec(local_epochs=1, batch_size=32, lr=0.1, momentum=0.9),
    )


def default_plan(pin_data: bool = True) -> JobPlan:
    """The demo job: 4 stages x 4 units x 150 steps on the ECG task (data digest pinned unless told not to)."""
    plan = JobPlan(task=default_ecg_task(), num_stages=4, units_per_stage=4, steps_per_unit=150, seed=0)
    return plan.pin_data() if pin_data else plan


__all__ = [
    "CANARY_DIGEST",
    "PLAN_VERSION",
    "SHARD_RULES",
    "DataMismatch",
    "JobPlan",
    "RuntimeReport",
    "canonical_digest",
    "check_deterministic_runtime",
    "dataset_digest",
    "default_ecg_task",
    "default_plan",
    "deterministic_env",
    "evaluate_plan_model",
    "initial_checkpoint",
    "merge_stage",
    "plan_data",
    "result_digest",
    "run_unit",
    "shards",
    "train_single_process",
    "unit_seed",
]
