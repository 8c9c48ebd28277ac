"""Strategy ids and the canonical parameter encoding."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from fedchain.learning.aggregation import (
    STRATEGY_IDS,
    Bulyan,
    FedAvg,
    MultiKrum,
    NormClipping,
    StrategySpec,
    build_strategy,
    strategy_id,
    strategy_name,
)
from fedchain.learning.aggregation.base import Strategy
from fedchain.learning.aggregation.registry import (
    SECURE_AGGREGATION_STRATEGIES,
    STATEFUL_STRATEGIES,
    STRATEGIES,
    STRATEGY_CLASSES,
    STRATEGY_LABELS,
    STRATEGY_NAMES,
    WEIGHTED_MEAN_STRATEGIES,
    _ids,
)


def test_ids_are_stable() -> None:
    assert dict(STRATEGY_IDS) == {
        "fedavg": 0,
        "fedavgm": 1,
        "fedadam": 2,
        "fedyogi": 3,
        "fedprox": 4,
        "median": 5,
        "trimmed-mean": 6,
        "krum": 7,
        "multi-krum": 8,
        "bulyan": 9,
    }
    assert set(STRATEGIES) == set(STRATEGY_IDS)
    for name, sid in STRATEGY_IDS.items():
        assert strategy_id(name) == sid and strategy_name(sid) == name and 0 <= sid < 2**16
    with pytest.raises(ValueError):
        strategy_id("fedsgd")
    with pytest.raises(ValueError):
        strategy_name(10)


def test_tables_derive_from_the_classes() -> None:
    assert {cls.strategy_id: cls.name for cls in STRATEGY_CLASSES} == STRATEGY_NAMES
    assert {v: k for k, v in STRATEGY_IDS.items()} == STRATEGY_NAMES
    assert STRATEGY_LABELS == {
        0: "FedAvg",
        1: "FedAvgM",
        2: "FedAdam",
        3: "FedYogi",
        4: "FedProx",
        5: "Median",
        6: "Trimmed mean",
        7: "Krum",
        8: "Multi-Krum",
        9: "Bulyan",
    }
    for cls in STRATEGY_CLASSES:
        constructor, defaults = STRATEGIES[cls.name]
        assert constructor is cls and defaults is cls.defaults
        assert build_strategy(StrategySpec(cls.name)).params() == dict(cls.defaults)  # the constructor's defaults
    assert {"fedavgm", "fedadam", "fedyogi"} == STATEFUL_STRATEGIES
    assert {"fedavg", "fedprox"} == WEIGHTED_MEAN_STRATEGIES
    assert {"fedavg", "fedavgm", "fedadam", "fedyogi", "fedprox"} == SECURE_AGGREGATION_STRATEGIES


def test_duplicate_or_missing_ids_are_refused() -> None:
    class Twin(Strategy):
        name = "twin"
        strategy_id = 0

    class Wrapper(Strategy):
        name = "wrapper"

    with pytest.raises(ValueError, match="unique"):
        _ids((*STRATEGY_CLASSES, Twin))
    with pytest.raises(ValueError, match="unique"):
        _ids((Wrapper,))


def test_registry_imports_without_torch() -> None:
    """The explorer reads STRATEGY_NAMES and STRATEGY_LABELS from the registry: importing it must not load torch."""
    code = "import sys; import fedchain.learning.aggregation.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_strategy_builds_with_defaults_and_round_trips() -> None:
    for name in STRATEGY_IDS:
        spec = StrategySpec(name)
        strategy = build_strategy(spec)
        assert strategy.name == name
        assert strategy.params() == dict(spec.params)
        assert StrategySpec.from_json(spec.to_json()) == spec
        assert spec.id == STRATEGY_IDS[name]


def test_canonical_json() -> None:
    spec = StrategySpec("multi-krum", {"m": 5, "f": 2})
    assert spec.to_json() == b'{"name":"multi-krum","params":{"f":2,"m":5}}'
    assert spec.digest() == hashlib.sha256(spec.to_json()).digest()
    # Defaults filled in, ints for floats normalised: equal strategies, equal bytes.
    assert StrategySpec("fedavgm", {"server_lr": 1}).to_json() == StrategySpec("fedavgm").to_json()
    assert StrategySpec("fedavgm").to_json() == b'{"name":"fedavgm","params":{"momentum":0.9,"server_lr":1.0}}'
    assert StrategySpec().to_json() == b'{"name":"fedavg","params":{}}'
    assert hash(StrategySpec("krum", {"f": 1})) == hash(StrategySpec("krum"))


def test_clip_norm_wraps_any_strategy() -> None:
    spec = StrategySpec("bulyan", {"f": 2, "clip_norm": 5})
    strategy = build_strategy(spec)
    assert isinstance(strategy, NormClipping) and isinstance(strategy.inner, Bulyan)
    assert strategy.max_norm == 5.0 and strategy.inner.f == 2
    assert spec.to_json() == b'{"name":"bulyan","params":{"clip_norm":5.0,"f":2}}'
    assert isinstance(build_strategy(StrategySpec("multi-krum")), MultiKrum)
    assert isinstance(build_strategy(StrategySpec("fedavg")), FedAvg)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("nope", {}),
        ("krum", {"f": 1.0}),
        ("krum", {"f": True}),
        ("krum", {"f": -1}),
        ("krum", {"m": 3}),
        ("trimmed-mean", {"beta": 0.5}),
        ("fedadam", {"beta1": 1.0}),
        ("fedadam", {"tau": 0}),
        ("fedavgm", {"momentum": float("inf")}),
        ("median", {"clip_norm": 0}),
        ("median", {"clip_norm": "1"}),
    ],
)
def test_bad_specs_rejected(name: str, params: dict) -> None:
    with pytest.raises(ValueError):
        StrategySpec(name, params)


@pytest.mark.parametrize(
    "data",
    [
        b'{"name":"krum","name":"median"}',
        b'{"name":"krum","extra":1}',
        b'{"params":{}}',
        b"[1]",
        b"\xff",
        b'{"name":"krum","params":{"f":NaN}}',
    ],
)
def test_bad_json_rejected(data: bytes) -> None:
    with pytest.raises(ValueError):
        StrategySpec.from_json(data)
