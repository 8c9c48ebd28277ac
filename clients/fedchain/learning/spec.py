"""Task description: dataset, model and training hyperparameters, as canonical JSON (stored on IPFS)."""

from __future__ import annotations

import json
import math
from collections.abc import Set
from dataclasses import dataclass
from typing import Any, ClassVar

from fedchain.protocol.canonical_json import canonical_json, reject_duplicate_keys

SPEC_VERSION = 1
MODEL_KINDS = ("mlp", "cnn1d")


def _check_keys(cls_name: str, data: Any, allowed: Set[str], required: Set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{cls_name}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{cls_name}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"{cls_name}: missing field(s) {missing}")
    return data


def _int(owner: str, name: str, value: Any, minimum: int | None = None) -> int:
    # bool is an int subclass; `true` in JSON must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")
    return value


def _float(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class ModelSpec:
    """An MLP classifier: input_dim -> hidden... -> num_classes logits.

    kind "cnn1d": a 1-D CNN over a signal of input_dim samples; `hidden` lists the channels of its convolutions
    (kernel 7 for the first, 5 after, stride 2, ReLU), then global average pooling and a linear layer to logits.
    `channels` > 1 (cnn1d only): the input row is `channels` signals of input_dim / channels samples laid end to
    end, channel-major (a wrist IMU's 3-D accelerometer and gyroscope: 6 channels).
    """

    kind: str = "mlp"
    input_dim: int = 30
    hidden: tuple[int, ...] = (32, 16)
    num_classes: int = 2
    dropout: float = 0.0
    channels: int = 1

    FIELDS: ClassVar[set[str]] = {"kind", "input_dim", "hidden", "num_classes", "dropout", "channels"}

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"ModelSpec.kind must be one of {list(MODEL_KINDS)}, got {self.kind!r}")
        _int("ModelSpec", "input_dim", self.input_dim, 1)
        _int("ModelSpec", "num_classes", self.num_classes, 2)
        if not isinstance(self.hidden, tuple | list):
            raise ValueError(f"ModelSpec.hidden must be a list of layer widths, got {self.hidden!r}")
        for width in self.hidden:
            _int("ModelSpec", "hidden[]", width, 1)
        if self.kind == "cnn1d" and not self.hidden:
            raise ValueError("ModelSpec.hidden must list at least one convolution's channels for kind 'cnn1d'")
        # Lists from JSON become tuples so the spec stays hashable (it is an lru_cache key).
        object.__setattr__(self, "hidden", tuple(self.hidden))
        dropout = _float("ModelSpec", "dropout", self.dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ModelSpec.dropout must be in [0, 1), got {dropout}")
        object.__setattr__(self, "dropout", dropout)
        _int("ModelSpec", "channels", self.channels, 1)
        if self.channels > 1 and self.kind != "cnn1d":
            raise ValueError("ModelSpec.channels > 1 needs kind 'cnn1d'")
        if self.input_dim % self.channels:
            raise ValueError(f"ModelSpec.input_dim {self.input_dim} is not a multiple of channels {self.channels}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "input_dim": self.input_dim,
            "hidden": list(self.hidden),
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            # Omitted when 1, so descriptions (and their digests) of single-channel models stay as they were.
            **({"channels": self.channels} if self.channels != 1 else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        return cls(**_check_keys("ModelSpec", data, cls.FIELDS))


@dataclass(frozen=True)
class TrainSpec:
    """Local training with SGD (momentum, optional weight decay).

    Defaults tuned on breast cancer: 5 devices x 10 rounds of FedAvg land within ~1 point of centralized training.
    """

    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0

    FIELDS: ClassVar[set[str]] = {"local_epochs", "batch_size", "lr", "momentum", "weight_decay"}

    def __post_init__(self) -> None:
        _int("TrainSpec", "local_epochs", self.local_epochs, 1)
        _int("TrainSpec", "batch_size", self.batch_size, 1)
        lr = _float("TrainSpec", "lr", self.lr)
        if lr <= 0:
            raise ValueError(f"TrainSpec.lr must be > 0, got {lr}")
        momentum = _float("TrainSpec", "momentum", self.momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"TrainSpec.momentum must be in [0, 1), got {momentum}")
        weight_decay = _float("TrainSpec", "weight_decay", self.weight_decay)
        if weight_decay < 0:
            raise ValueError(f"TrainSpec.weight_decay must be >= 0, got {weight_decay}")
        # Stored as floats so JSON bytes do not depend on whether 0 or 0.0 was passed.
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "momentum", momentum)
        object.__setattr__(self, "weight_decay", weight_decay)

    def to_dict(self) -> dict[str, Any]:
        return {
            "local_epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TrainSpec:
        return cls(**_check_keys("TrainSpec", data, cls.FIELDS))


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset, and how its held-out test split is drawn."""

    name: str = "breast_cancer"
    test_fraction: float = 0.25
    seed: int = 0

    FIELDS: ClassVar[set[str]] = {"name", "test_fraction", "seed"}

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"DatasetSpec.name must be a non-empty string, got {self.name!r}")
        test_fraction = _float("DatasetSpec", "test_fraction", self.test_fraction)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"DatasetSpec.test_fraction must be in (0, 1), got {test_fraction}")
        object.__setattr__(self, "test_fraction", test_fraction)
        _int("DatasetSpec", "seed", self.seed, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "test_fraction": self.test_fraction, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Any) -> DatasetSpec:
        return cls(**_check_keys("DatasetSpec", data, cls.FIELDS))


@dataclass(frozen=True)
class PrivacySpec:
    """How updates are kept private (issue 5). The default is no protection beyond IPFS content addressing.

    `secure_aggregation`: devices upload only masked updates (SecAgg, `fedchain.privacy.secagg`); aggregators learn
    only the sum, so the task aggregates the unweighted mean of the devices' deltas (FedAvg family only).
    `seal_updates`: with secure aggregation off, each update is encrypted to the aggregators' registered keys before
    it goes to IPFS (`fedchain.privacy.sealed`). Client-level differential privacy is on when `dp_clip_norm` > 0:
    each device clips its delta to that norm and adds its share of Gaussian noise of multiplier
    `dp_noise_multiplier`, sized so that any `dp_min_survivors` fraction of the devices still carries the central
    noise; `dp_delta` is the accountant's delta. `secagg_threshold` is the Shamir threshold as a fraction of the
    devices (t = ceil(fraction * n), more than half): the round survives 1 - fraction of them dropping out.
    """

    secure_aggregation: bool = False
    seal_updates: bool = False
    dp_clip_norm: float = 0.0
    dp_noise_multiplier: float = 0.0
    dp_delta: float = 1e-5
    dp_min_survivors: float = 0.7
    secagg_threshold: float = 0.6

    FIELDS: ClassVar[set[str]] = {
        "secure_aggregation",
        "seal_updates",
        "dp_clip_norm",
        "dp_noise_multiplier",
        "dp_delta",
        "dp_min_survivors",
        "secagg_threshold",
    }

    def __post_init__(self) -> None:
        for name in ("secure_aggregation", "seal_updates"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"PrivacySpec.{name} must be true or false, got {getattr(self, name)!r}")
        clip = _float("PrivacySpec", "dp_clip_norm", self.dp_clip_norm)
        noise = _float("PrivacySpec", "dp_noise_multiplier", self.dp_noise_multiplier)
        delta = _float("PrivacySpec", "dp_delta", self.dp_delta)
        survivors = _float("PrivacySpec", "dp_min_survivors", self.dp_min_survivors)
        threshold = _float("PrivacySpec", "secagg_threshold", self.secagg_threshold)
        if clip < 0 or noise < 0:
            raise ValueError("PrivacySpec.dp_clip_norm and dp_noise_multiplier must be >= 0")
        if (clip > 0) != (noise > 0):
            raise ValueError("differential privacy needs both dp_clip_norm > 0 and dp_noise_multiplier > 0")
        if not 0.0 < delta < 1.0:
            raise ValueError(f"PrivacySpec.dp_delta must be in (0, 1), got {delta}")
        if not 0.0 < survivors <= 1.0:
            raise ValueError(f"PrivacySpec.dp_min_survivors must be in (0, 1], got {survivors}")
        if not 0.5 < threshold <= 1.0:
            raise ValueError(f"PrivacySpec.secagg_threshold must be in (0.5, 1], got {threshold}")
        if self.secure_aggregation and self.seal_updates:
            raise ValueError("seal_updates is for tasks without secure aggregation (masked updates are not sealed)")
        for name, value in (
            ("dp_clip_norm", clip),
            ("dp_noise_multiplier", noise),
            ("dp_delta", delta),
            ("dp_min_survivors", survivors),
            ("secagg_threshold", threshold),
        ):
            object.__setattr__(self, name, value)

    @property
    def differential_privacy(self) -> bool:
        return self.dp_clip_norm > 0

    def threshold_for(self, devices: int) -> int:
        """The Shamir threshold t for `devices` participants: ceil(fraction * n), and always more than n/2."""
        return max(devices // 2 + 1, math.ceil(self.secagg_threshold * devices - 1e-9))

    def min_survivors_for(self, devices: int) -> int:
        """How many devices' noise shares must add up to the central noise: ceil(fraction * n), at least 1."""
        return max(1, math.ceil(self.dp_min_survivors * devices - 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in sorted(self.FIELDS)}

    @classmethod
    def from_dict(cls, data: Any) -> PrivacySpec:
        return cls(**_check_keys("PrivacySpec", data, cls.FIELDS))


def _strategy_dict(value: Any) -> dict[str, Any]:
    """The canonical {"name", "params"} form of a strategy (a StrategySpec, its dict, or a bare name)."""
    # Imported here: the aggregation package imports the model, which imports this module.
    from fedchain.learning.aggregation.registry import StrategySpec

    if isinstance(value, StrategySpec):
        return value.to_dict()
    if isinstance(value, str) and value.startswith("{"):  # the stored canonical form (e.g. dataclasses.replace)
        return StrategySpec.from_json(value.encode("utf-8")).to_dict()
    if isinstance(value, str):
        return StrategySpec(value).to_dict()
    return StrategySpec.from_dict(value).to_dict()


@dataclass(frozen=True)
class TaskSpec:
    """Everything a device or aggregator needs to rebuild the task's model and data, and how to aggregate it.

    `strategy` is the aggregation strategy and its parameters (a StrategySpec in canonical dict form). It lives in
    the description whose digest is on chain, so every aggregator applies the same rule with the same parameters
    and devices know, for example, FedProx's proximal coefficient.
    """

    dataset: DatasetSpec
    model: ModelSpec
    train: TrainSpec
    seed: int = 0
    version: int = SPEC_VERSION
    strategy: Any = "fedavg"
    privacy: PrivacySpec = PrivacySpec()

    FIELDS: ClassVar[set[str]] = {"dataset", "model", "train", "seed", "version", "strategy", "privacy"}

    def __post_init__(self) -> None:
        for name, kind in (("dataset", DatasetSpec), ("model", ModelSpec), ("train", TrainSpec)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"TaskSpec.{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        _int("TaskSpec", "seed", self.seed, 0)
        _int("TaskSpec", "version", self.version)
        if self.version != SPEC_VERSION:
            raise ValueError(f"TaskSpec.version {self.version} is not supported (this client reads {SPEC_VERSION})")
        try:
            strategy = _strategy_dict(self.strategy)
        except ValueError as exc:
            raise ValueError(f"TaskSpec.strategy: {exc}") from None
        # Kept as canonical JSON text so the frozen spec stays hashable (it is an lru_cache key).
        object.__setattr__(self, "strategy", canonical_json(strategy, ascii_only=True, allow_nan=True).decode())
        if not isinstance(self.privacy, PrivacySpec):
            raise ValueError(f"TaskSpec.privacy must be a PrivacySpec, got {type(self.privacy).__name__}")
        if self.privacy.secure_aggregation:
            parsed = json.loads(self.strategy)
            name = parsed["name"]
            per_update = sorted({"clip_norm", "root_samples"} & set(parsed.get("params", {})))
            if per_update:
                raise ValueError(
                    f"TaskSpec: secure aggregation hides each update, so {per_update} (which look at each update) "
                    "cannot run; with differential privacy on, devices clip their own updates (dp_clip_norm)"
                )
            # Masked updates reveal only their sum: only rules that need nothing but the sum can run on them.
            from fedchain.learning.aggregation.registry import SECURE_AGGREGATION_STRATEGIES  # see _strategy_dict

            if name not in SECURE_AGGREGATION_STRATEGIES:
                raise ValueError(
                    f"TaskSpec: secure aggregation reveals only the sum of the updates, which {name!r} cannot "
                    f"aggregate; use one of {sorted(SECURE_AGGREGATION_STRATEGIES)}"
                )

    def strategy_spec(self) -> Any:
        """The task's aggregation strategy as a StrategySpec."""
        from fedchain.learning.aggregation.registry import StrategySpec

        return StrategySpec.from_dict(json.loads(self.strategy))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "seed": self.seed,
            "dataset": self.dataset.to_dict(),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "strategy": json.loads(self.strategy),
            # Omitted when default, so descriptions (and their digests) of tasks without privacy stay as they were.
            **({"privacy": self.privacy.to_dict()} if self.privacy != PrivacySpec() else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> TaskSpec:
        # version is required: a description without one cannot be trusted to mean what this client thinks.
        data = _check_keys("TaskSpec", data, cls.FIELDS, required={"version"})
        return cls(
            dataset=DatasetSpec.from_dict(data.get("dataset", {})),
            model=ModelSpec.from_dict(data.get("model", {})),
            train=TrainSpec.from_dict(data.get("train", {})),
            seed=data.get("seed", 0),
            version=data["version"],
            strategy=data.get("strategy", "fedavg"),
            privacy=PrivacySpec.from_dict(data.get("privacy", {})),
        )

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no whitespace, UTF-8): equal specs give equal bytes, hence equal CIDs."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> TaskSpec:
        """Parse a task description; ValueError if it is not valid UTF-8 JSON of a known version."""
        try:
            parsed = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=reject_duplicate_keys)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"task spec is not valid UTF-8 JSON: {exc}") from None
        except TypeError as exc:
            raise ValueError(f"task spec must be bytes: {exc}") from None
        return cls.from_dict(parsed)


def default_task_spec() -> TaskSpec:
    """The default task: the MLP on breast cancer with the tuned defaults."""
    return TaskSpec(dataset=DatasetSpec(), model=ModelSpec(), train=TrainSpec())


__all__ = ["MODEL_KINDS", "SPEC_VERSION", "DatasetSpec", "ModelSpec", "TaskSpec", "TrainSpec", "default_task_spec"]
