"""`fedchain bench attacks` (fedchain.bench.attacks): the quick configuration end to end, the report's
structure and markdown, the goal evaluation on hand-made tables, attacker selection and the default specs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedchain.bench import attacks
from fedchain.bench.attacks import (
    AttackBenchConfig,
    attacker_count,
    attacker_indices,
    default_strategies,
    evaluate_goal,
    run_attack_bench,
)
from fedchain.bench.attacks_report import fraction_key, markdown_table, write_reports
from fedchain.learning.aggregation.registry import StrategySpec
from fedchain.learning.data import device_partition, load_dataset
from fedchain.learning.simulation import partition
from fedchain.learning.spec import default_task_spec

PLAIN = attacks.PLAIN_GOAL_STRATEGIES


@pytest.fixture(scope="module")
def quick() -> dict[str, Any]:
    lines: list[str] = []
    result = run_attack_bench(AttackBenchConfig.quick(), lines.append)
    result["_progress"] = lines
    return result


def test_quick_report_structure(quick: dict[str, Any]) -> None:
    config = AttackBenchConfig.quick()
    assert config.strategies is not None
    strategies = list(config.strategies)
    assert {"fedavg", "median", "trimmed-mean", "krum", "multi-krum", "bulyan"} <= set(strategies)
    progress = quick.pop("_progress")
    assert len(progress) == quick["simulations"] == len(strategies) * len(config.seeds) * (1 + len(config.attacks))
    json.dumps(quick, allow_nan=False)  # JSON-able, no NaN
    assert quick["config"]["attackers"] == {"0.0": 0, "0.3": 3}
    assert quick["config"]["strategies"]["multi-krum"] == {"name": "multi-krum", "params": {"f": 3, "m": 0}}
    assert set(quick["machine"]) >= {"platform", "torch", "python"}
    assert quick["wall_seconds"] > 0 and quick["cpu_seconds"] > 0
    assert list(quick["clean"]) == strategies and list(quick["table"]) == strategies
    fedavg_clean = quick["clean"]["fedavg"]["accuracy"]
    for label in strategies:
        clean = quick["clean"][label]
        assert len(clean["per_seed"]) == len(config.seeds)
        assert clean["accuracy"] == pytest.approx(np.mean(clean["per_seed"]), abs=1e-4)
        assert list(quick["table"][label]) == list(config.attacks)
        for attack in config.attacks:
            row = quick["table"][label][attack]
            assert list(row) == ["0.0", "0.3"]
            assert row["0.0"]["per_seed"] == clean["per_seed"]  # fraction 0 is the clean run
            cell = row["0.3"]
            assert cell["attackers"] == 3 and len(cell["per_seed"]) == len(config.seeds)
            assert all(0.0 <= a <= 1.0 for a in cell["per_seed"])
            assert cell["drop_vs_clean"] == pytest.approx(clean["accuracy"] - cell["accuracy"], abs=1e-4)
            assert cell["drop_vs_clean_fedavg"] == pytest.approx(fedavg_clean - cell["accuracy"], abs=1e-4)
    goal = quick["goal"]
    assert goal["fraction"] == 0.3 and goal["tolerance"] == 0.02
    # Judged on the rules behind the trusted-root filter; the plain rules are judged alongside.
    assert set(goal["robust"]) == {"multi-krum+root", "trimmed-mean+root", "bulyan+root"}
    assert set(goal["plain"]["robust"]) == {"multi-krum", "trimmed-mean", "bulyan"}
    assert isinstance(goal["plain"]["met"], bool)
    assert set(goal["per_attack"]) == set(config.attacks)
    assert isinstance(goal["met"], bool)
    assert any("Lying aggregator" in note for note in quick["notes"])
    assert any("Bulyan needs n >= 4f + 3" in note for note in quick["notes"])  # f = 1 < 3 attackers


def test_quick_fedavg_is_much_worse_than_multi_krum_under_boosted_attacks(quick: dict[str, Any]) -> None:
    table = quick["table"]
    for attack in ("sign-flip-x10", "constant"):
        fedavg = table["fedavg"][attack]["0.3"]["accuracy"]
        multi_krum = table["multi-krum"][attack]["0.3"]["accuracy"]
        assert fedavg < multi_krum - 0.15, (attack, fedavg, multi_krum)
    assert quick["goal"]["fedavg"]["visibly_fails"]
    assert set(quick["goal"]["fedavg"]["fails_on"]) == {"sign-flip-x10", "constant"}


def test_markdown_and_reports(quick: dict[str, Any], tmp_path: Path) -> None:
    text = markdown_table(quick)
    assert text.startswith("# Accuracy under attack")
    assert "## Goal: with 30% attackers" in text
    for attack in ("sign-flip-x10", "constant"):
        assert f"### {attack}:" in text
    assert "| multi-krum |" in text and "| 0% | 30% |" in text
    assert "Lying aggregator" in text
    json_path, md_path = write_reports(quick, tmp_path / "out")
    assert json_path == tmp_path / "out" / "attacks.json" and md_path == tmp_path / "out" / "attacks.md"
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(quick))
    assert md_path.read_text() == text


def _table(values: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {label: {attack: {"0.3": {"accuracy": acc}} for attack, acc in row.items()} for label, row in values.items()}


def _clean(values: dict[str, float]) -> dict[str, Any]:
    return {label: {"accuracy": acc} for label, acc in values.items()}


CLEAN = _clean({"fedavg": 0.95, "multi-krum": 0.94, "trimmed-mean": 0.93, "bulyan": 0.90})


def test_goal_met() -> None:
    table = _table(
        {
            "fedavg": {"a": 0.60, "b": 0.94},
            "multi-krum": {"a": 0.93, "b": 0.92},  # b: exactly 0.02 below clean still counts
            "trimmed-mean": {"a": 0.95, "b": 0.93},
            "bulyan": {"a": 0.89, "b": 0.90},
        }
    )
    goal = evaluate_goal(table, CLEAN, strategies=PLAIN)
    assert goal["met"] and goal["robust_met"]
    assert goal["attacks_met"] == ["a", "b"] and goal["attacks_not_met"] == []
    assert goal["fedavg"] == {"drops": {"a": 0.35, "b": 0.01}, "visibly_fails": True, "fails_on": ["a"]}
    cell = goal["robust"]["multi-krum"]["b"]
    assert cell["met"] and cell["drop"] == pytest.approx(0.02)
    # Bulyan within 2 points of its own clean run (0.90) but 6 below clean FedAvg: met, not met vs FedAvg.
    bulyan = goal["robust"]["bulyan"]["a"]
    assert bulyan["met"] and not bulyan["met_vs_clean_fedavg"]
    assert bulyan["drop_vs_clean_fedavg"] == pytest.approx(0.06)
    assert goal["per_attack"]["a"]["met"] and not goal["per_attack"]["a"]["met_vs_clean_fedavg"]
    assert goal["per_attack"]["a"]["reason"] is None


def test_goal_not_met_reports_who_and_why() -> None:
    table = _table(
        {
            "fedavg": {"sign-flip": 0.70, "scale": 0.95},
            "multi-krum": {"sign-flip": 0.90, "scale": 0.94},
            "trimmed-mean": {"sign-flip": 0.92, "scale": 0.93},
            "bulyan": {"sign-flip": 0.85, "scale": 0.90},
        }
    )
    goal = evaluate_goal(table, CLEAN, strategies=PLAIN)
    assert not goal["met"] and not goal["robust_met"]
    assert goal["attacks_met"] == ["scale"] and goal["attacks_not_met"] == ["sign-flip"]
    entry = goal["per_attack"]["sign-flip"]
    assert entry["missed_by"] == {"multi-krum": pytest.approx(0.04), "bulyan": pytest.approx(0.05)}
    assert "multi-krum (-0.040)" in entry["reason"] and "bulyan (-0.050)" in entry["reason"]
    assert "label skew" in entry["reason"]
    assert entry["fedavg_visibly_fails"] and not goal["per_attack"]["scale"]["fedavg_visibly_fails"]


def test_goal_needs_fedavg_to_visibly_fail() -> None:
    table = _table(
        {
            "fedavg": {"a": 0.91},  # 4 points: not "visibly" (> 5)
            "multi-krum": {"a": 0.94},
            "trimmed-mean": {"a": 0.93},
            "bulyan": {"a": 0.90},
        }
    )
    goal = evaluate_goal(table, CLEAN, strategies=PLAIN)
    assert goal["robust_met"] and not goal["fedavg"]["visibly_fails"] and not goal["met"]


def test_goal_with_a_missing_strategy_is_not_met() -> None:
    table = _table({"fedavg": {"a": 0.5}, "multi-krum": {"a": 0.94}, "trimmed-mean": {"a": 0.93}})
    goal = evaluate_goal(table, _clean({"fedavg": 0.95, "multi-krum": 0.94, "trimmed-mean": 0.93}), strategies=PLAIN)
    assert goal["missing_strategies"] == ["bulyan"]
    assert not goal["per_attack"]["a"]["met"] and not goal["met"]


def test_attacker_selection() -> None:
    assert [attacker_count(p, 20) for p in (0.0, 0.1, 0.2, 0.3)] == [0, 2, 4, 6]
    assert [attacker_count(p, 10) for p in (0.1, 0.2, 0.3)] == [1, 2, 3]
    assert attacker_count(0.3, 15) == 5  # 4.5 rounds half up, not to even
    with pytest.raises(ValueError):
        attacker_count(1.0, 10)
    sets = [attacker_indices(20, p, seed=7) for p in (0.1, 0.2, 0.3)]
    assert [len(s) for s in sets] == [2, 4, 6]
    assert set(sets[0]) <= set(sets[1]) <= set(sets[2])  # nested across fractions
    assert attacker_indices(20, 0.3, seed=7) == sets[2]
    assert attacker_indices(20, 0.3, seed=8) != sets[2]
    assert all(0 <= i < 20 for i in sets[2]) and list(sets[2]) == sorted(sets[2])


def test_default_strategies() -> None:
    specs = default_strategies(20, 0.3)
    assert specs["multi-krum"] == StrategySpec("multi-krum", {"f": 6})
    assert specs["krum"] == StrategySpec("krum", {"f": 6})
    assert specs["trimmed-mean"] == StrategySpec("trimmed-mean", {"beta": 0.3})
    assert specs["bulyan"] == StrategySpec("bulyan", {"f": 4})  # n >= 4f + 3
    assert specs["fedavg"] == StrategySpec("fedavg") and specs["median"] == StrategySpec("median")
    root = attacks.ROOT_SAMPLES
    assert specs["multi-krum+root"] == StrategySpec("multi-krum", {"f": 6, "root_samples": root})
    assert specs["trimmed-mean+root"] == StrategySpec("trimmed-mean", {"beta": 0.3, "root_samples": root})
    assert specs["bulyan+root"] == StrategySpec("bulyan", {"f": 4, "root_samples": root})
    small = default_strategies(10, 0.3)
    assert small["multi-krum"].params["f"] == 3 and small["bulyan"].params["f"] == 1
    assert AttackBenchConfig().strategies == specs
    assert AttackBenchConfig(devices=10).strategies == small


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="attacks"):
        AttackBenchConfig(attacks=("none",))
    with pytest.raises(ValueError, match="attacks"):
        AttackBenchConfig(attacks=("teleport",))
    with pytest.raises(ValueError, match="seeds"):
        AttackBenchConfig(seeds=())
    with pytest.raises(ValueError, match="fraction"):
        AttackBenchConfig(fractions=(0.0, 1.0))
    config = AttackBenchConfig(fractions=(0.3, 0.0, 0.1), seeds=[2, 5])
    assert config.fractions == (0.0, 0.1, 0.3) and config.seeds == (2, 5)
    assert fraction_key(0.1) == "0.1" and fraction_key(0) == "0.0"


def test_partition_matches_device_partition() -> None:
    train, _ = load_dataset(default_task_spec().dataset)
    parts = partition(train, 10, 0.5, seed=3)
    for i, part in enumerate(parts):
        expected = device_partition(train, i, 10, 0.5, seed=3)
        assert np.array_equal(part.x, expected.x) and np.array_equal(part.y, expected.y)
    # 20 devices: device_partition's smallest-part rule (10) is out of Dirichlet(0.5)'s reach; min_size 5 is not.
    assert len(partition(train, 20, 0.5, seed=0, min_size=5)) == 20


def test_jobs_cover_every_cell_and_pickle() -> None:
    # Worker processes get jobs by pickling; every job is seeded on its own, so workers cannot change results.
    config = AttackBenchConfig.quick()
    jobs = attacks._jobs(config)
    assert len(jobs) == 9 * 2 * 3  # 6 rules + 3 behind the root filter, 2 seeds, 3 cells
    assert {(j.attack, j.fraction) for j in jobs} == {("none", 0.0), ("sign-flip-x10", 0.3), ("constant", 0.3)}
    assert all(j.malicious == attacker_indices(10, j.fraction, j.seed) for j in jobs if j.attack != "none")
    assert all(j.malicious == () for j in jobs if j.attack == "none")
    assert pickle.loads(pickle.dumps(jobs)) == jobs


def test_main_options(monkeypatch: pytest.MonkeyPatch, quick: dict[str, Any], tmp_path: Path, capsys) -> None:
    seen: list[AttackBenchConfig] = []

    def fake(config: AttackBenchConfig, progress: Any = None) -> dict[str, Any]:
        seen.append(config)
        return quick

    monkeypatch.setattr(attacks, "run_attack_bench", fake)
    attacks.main(["--json", "--out-dir", str(tmp_path), "--seeds", "4", "--rounds", "7", "--devices", "30"])
    config = seen[-1]
    assert config.seeds == (0, 1, 2, 3) and config.rounds == 7 and config.devices == 30
    assert config.strategies is not None and config.strategies["multi-krum"].params["f"] == 9
    out = capsys.readouterr().out
    assert json.loads(out)["goal"] == quick["goal"]
    assert (tmp_path / "attacks.json").exists() and (tmp_path / "attacks.md").exists()
    attacks.main(["--quick", "--out-dir", str(tmp_path), "--alpha", "0"])
    assert seen[-1].devices == 10 and seen[-1].alpha is None and seen[-1].rounds == 5
    assert capsys.readouterr().out.startswith("# Accuracy under attack")
    with pytest.raises(SystemExit):
        attacks.main(["--rounds", "0", "--out-dir", str(tmp_path)])
