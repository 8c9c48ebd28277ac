"""Work units of the compute market (issue 6): a training job cut into stages of replicated, bit-reproducible units.

A requester posts a `JobPlan`: a task (dataset, model, training settings), `num_stages` stages of
`units_per_stage` units each, `steps_per_unit` SGD steps per unit. Unit (stage, index) starts from the stage's
checkpoint and takes `steps_per_unit` steps of mini-batch SGD (momentum, optional weight decay) on shard `index`
of the training split, with mini-batches drawn from the unit's seed. The next checkpoint is the plain mean of the
stage's unit results (local SGD / periodic averaging: every unit does the same number of steps, so FedAvg's
weights are all equal). Two workers compute each unit and the market accepts it when their `result_digest`s
match, so a unit must give the same bits in any process on any x86-64 CPU.

How the bits are pinned, and why numpy float64 rather than torch: `fedchain.learning.exact_cnn`, the engine a unit
trains with. `check_deterministic_runtime()` runs a tiny fixed unit and compares its digest with the one recorded
here, which catches a process whose arithmetic differs (another rounding mode, a numpy that fuses or reorders
operations). Workers may still be started with `fedchain.protocol.worker_env.WORKER_ENV` (single-threaded BLAS,
torch pinned to its baseline kernels) so that anything else they do with torch is pinned too, but the unit result
does not depend on it.

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
from fedchain.learning.exact_cnn import Engine, as_float64, sgd, softmax, to_weights
from fedchain.learning.model import check_weights, weight_shapes
from fedchain.learning.spec import DatasetSpec, ModelSpec, PrivacySpec, TaskSpec, TrainSpec
from fedchain.learning.train import EvalResult
from fedchain.learning.types import Weights
from fedchain.protocol.canonical_json import canonical_json, reject_duplicate_keys
from fedchain.protocol.worker_env import WORKER_ENV

PLAN_VERSION: Final = 1
SHARD_RULES: Final = ("iid",)
UNIT_MODEL_KINDS: Final = ("mlp", "cnn1d")

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
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> JobPlan:
        """Parse a plan; ValueError if it is not valid UTF-8 JSON of a known version."""
        try:
            parsed = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=reject_duplicate_keys)
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
    payload = canonical_json(["fedchain.units", *parts], ascii_only=True)
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 1


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
        h.update(canonical_json([name, little.dtype.str, list(arr.shape)], ascii_only=True) + b"\n")
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
    params = as_float64(checkpoint_weights, spec)
    train, _ = plan_data(plan)
    shard = shards(plan)[index]
    batches = _batches(unit_seed(plan, stage, index), len(shard), plan.steps_per_unit, plan.batch_size)
    with np.errstate(all="ignore"):
        params = sgd(Engine(spec), params, train.x[shard], train.y[shard], batches, plan.task.train)
    return to_weights(params, spec)


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
    params = as_float64(weights, spec)
    _, test = plan_data(plan)
    engine = Engine(spec)
    correct, loss = 0, 0.0
    with np.errstate(all="ignore"):
        for start in range(0, len(test), 256):
            x, y = test.x[start : start + 256].astype(np.float64), test.y[start : start + 256]
            logits, _ = engine.forward(params, x)
            probs = softmax(logits)
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
        params = as_float64(initial_checkpoint(plan), spec)
        raw = np.random.PCG64(_derive_seed("canary", prefix)).random_raw(70 * spec.input_dim + 70)
        x = ((raw[: 70 * spec.input_dim] >> np.uint64(11)).astype(np.float64) * 2.0**-50 - 4.0).reshape(70, -1)
        y = (raw[70 * spec.input_dim :] % np.uint64(3)).astype(np.int64)
        batches = _batches(_derive_seed("canary-batches", prefix), 70, 5, 6)
        with np.errstate(all="ignore"):
            params = sgd(Engine(spec), params, x.astype(np.float32), y, batches, task.train)
        out.update({f"{prefix}/{name}": arr for name, arr in to_weights(params, spec).items()})
    return out


@dataclass(frozen=True)
class RuntimeReport:
    """What check_deterministic_runtime found.

    canary_ok: the fixed canary unit gave the recorded digest, i.e. this process computes units bit-identically.
    torch_capability: torch's active CPU kernel set ("DEFAULT" when pinned by ATEN_CPU_CAPABILITY=default).
    torch_pinned: torch runs its baseline kernels. env: the WORKER_ENV variables as this process sees them.
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
        env={name: os.environ.get(name) for name in WORKER_ENV},
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
