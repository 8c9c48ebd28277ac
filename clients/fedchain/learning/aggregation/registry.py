"""Strategy ids (uint16, in the task config on chain), names, labels and capabilities, and parameters as canonical
JSON.

The facts live on the strategy classes (`Strategy.strategy_id`, `name`, `label`, `defaults`, the capability flags);
this module only derives tables from them. Ids are stable forever: a task created with id 7 must mean Krum to every
future client. fedavg is 0. Importing this module loads numpy, never torch: the explorer reads STRATEGY_NAMES and
STRATEGY_LABELS from here.
Every parameter has a default; the canonical form fills defaults in, so equal strategies give equal bytes.
Clipping is not a strategy of its own: the optional parameter `clip_norm` (> 0) wraps any strategy in NormClipping.
Nor is reference filtering: the optional parameter `root_samples` (>= 1) puts a ReferenceFilter in front (outermost),
which needs a root-set trainer from the caller (`fedchain.learning.root.root_reference_trainer`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedchain.learning.aggregation.base import Strategy, integer, number
from fedchain.learning.aggregation.bulyan import Bulyan
from fedchain.learning.aggregation.clipping import NormClipping
from fedchain.learning.aggregation.fedadam import FedAdam
from fedchain.learning.aggregation.fedavg import FedAvg
from fedchain.learning.aggregation.fedavgm import FedAvgM
from fedchain.learning.aggregation.fedprox import FedProx
from fedchain.learning.aggregation.fedyogi import FedYogi
from fedchain.learning.aggregation.krum import Krum, MultiKrum
from fedchain.learning.aggregation.median import Median
from fedchain.learning.aggregation.reference import ReferenceFilter, ReferenceTrainer
from fedchain.learning.aggregation.trimmed_mean import TrimmedMean
from fedchain.protocol.canonical_json import canonical_json, reject_duplicate_keys

# Every strategy a task can name, in id order. Each class carries its own facts (id, name, label, parameters,
# capabilities: see `Strategy`); the tables below are derived from them.
STRATEGY_CLASSES: Final[tuple[type[Strategy], ...]] = (
    FedAvg,
    FedAvgM,
    FedAdam,
    FedYogi,
    FedProx,
    Median,
    TrimmedMean,
    Krum,
    MultiKrum,
    Bulyan,
)


def _ids(classes: tuple[type[Strategy], ...]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for cls in classes:
        if cls.strategy_id is None or cls.name in ids or cls.strategy_id in ids.values():
            raise ValueError(
                f"{cls.__name__}: expected a unique strategy name and id, got {cls.name}/{cls.strategy_id}"
            )
        ids[cls.name] = cls.strategy_id
    return ids


# name -> on-chain id; id -> canonical name; id -> display label.
STRATEGY_IDS: Final[Mapping[str, int]] = _ids(STRATEGY_CLASSES)
STRATEGY_NAMES: Final[Mapping[int, str]] = {sid: name for name, sid in STRATEGY_IDS.items()}
STRATEGY_LABELS: Final[Mapping[int, str]] = {STRATEGY_IDS[cls.name]: cls.label for cls in STRATEGY_CLASSES}
# name -> (constructor, defaults). A default's type (int or float) is the parameter's type.
STRATEGIES: Final[Mapping[str, tuple[Callable[..., Strategy], Mapping[str, float | int]]]] = {
    cls.name: (cls, cls.defaults) for cls in STRATEGY_CLASSES
}
# Names by capability (see `Strategy`).
STATEFUL_STRATEGIES: Final = frozenset(cls.name for cls in STRATEGY_CLASSES if cls.stateful)
WEIGHTED_MEAN_STRATEGIES: Final = frozenset(cls.name for cls in STRATEGY_CLASSES if cls.weighted_mean)
SECURE_AGGREGATION_STRATEGIES: Final = frozenset(cls.name for cls in STRATEGY_CLASSES if cls.secure_aggregation)
CLIP_PARAM: Final = "clip_norm"
ROOT_PARAM: Final = "root_samples"
OPTIONAL_PARAMS: Final = (CLIP_PARAM, ROOT_PARAM)


def strategy_id(name: str) -> int:
    """The on-chain id of a strategy name; ValueError for an unknown name."""
    if name not in STRATEGY_IDS:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGY_IDS)}")
    return STRATEGY_IDS[name]


def strategy_name(sid: int) -> str:
    """The strategy name of an on-chain id; ValueError for an unknown id."""
    if sid in STRATEGY_NAMES:
        return STRATEGY_NAMES[sid]
    raise ValueError(f"unknown strategy id {sid!r}; known: {sorted(STRATEGY_IDS.values())}")


@dataclass(frozen=True)
class StrategySpec:
    """A strategy name and its parameters, normalised: defaults filled in, ints as int, floats as float."""

    name: str = "fedavg"
    params: Mapping[str, float | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r}; known: {sorted(STRATEGIES)}")
        if not isinstance(self.params, Mapping):
            raise ValueError(f"StrategySpec.params must be a mapping, got {type(self.params).__name__}")
        _, defaults = STRATEGIES[self.name]
        unknown = sorted(set(self.params) - set(defaults) - set(OPTIONAL_PARAMS))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {unknown}; allowed: {sorted(defaults)} + {list(OPTIONAL_PARAMS)}"
            )
        params: dict[str, float | int] = {}
        for key, default in defaults.items():
            value = self.params.get(key, default)
            params[key] = integer(self.name, key, value) if isinstance(default, int) else number(self.name, key, value)
        if CLIP_PARAM in self.params:
            params[CLIP_PARAM] = number(self.name, CLIP_PARAM, self.params[CLIP_PARAM], 0.0)
        if ROOT_PARAM in self.params:
            params[ROOT_PARAM] = integer(self.name, ROOT_PARAM, self.params[ROOT_PARAM], 1)
        object.__setattr__(self, "params", dict(sorted(params.items())))
        build_strategy(self)  # range checks live in the constructors

    def __hash__(self) -> int:
        return hash(self.to_json())

    @property
    def id(self) -> int:
        return strategy_id(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Any) -> StrategySpec:
        if not isinstance(data, dict) or set(data) - {"name", "params"} or "name" not in data:
            raise ValueError(f"a strategy spec is an object with 'name' and optional 'params', got {data!r}")
        return cls(data["name"], data.get("params", {}))

    def to_json(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, UTF-8, floats in shortest round-trip form."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> StrategySpec:
        try:
            parsed = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=reject_duplicate_keys)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"strategy spec is not valid UTF-8 JSON: {exc}") from None
        return cls.from_dict(parsed)

    @property
    def root_samples(self) -> int:
        """Size of the trusted root set the strategy filters by (0: no reference filter)."""
        return int(self.params.get(ROOT_PARAM, 0))

    def digest(self) -> bytes:
        """sha256 of the canonical JSON: 32 bytes a contract can store next to the id."""
        return hashlib.sha256(self.to_json()).digest()


def build_strategy(spec: StrategySpec, reference: ReferenceTrainer | None = None) -> Strategy:
    """The Strategy a spec describes, wrapped in NormClipping when it has clip_norm and, outermost, in a
    ReferenceFilter when it has root_samples. `reference` trains the global model on the task's root set; a
    filtering strategy built without it raises MissingReference when it aggregates."""
    constructor, defaults = STRATEGIES[spec.name]
    strategy = constructor(**{k: spec.params[k] for k in defaults if k in spec.params})
    if CLIP_PARAM in spec.params:
        strategy = NormClipping(strategy, spec.params[CLIP_PARAM])
    if ROOT_PARAM in spec.params:
        strategy = ReferenceFilter(strategy, int(spec.params[ROOT_PARAM]), reference)
    return strategy


__all__ = [
    "CLIP_PARAM",
    "OPTIONAL_PARAMS",
    "ROOT_PARAM",
    "SECURE_AGGREGATION_STRATEGIES",
    "STATEFUL_STRATEGIES",
    "STRATEGIES",
    "STRATEGY_CLASSES",
    "STRATEGY_IDS",
    "STRATEGY_LABELS",
    "STRATEGY_NAMES",
    "WEIGHTED_MEAN_STRATEGIES",
    "StrategySpec",
    "build_strategy",
    "strategy_id",
    "strategy_name",
]
