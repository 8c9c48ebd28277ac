"""The in-process DP and personalisation simulation behind `fedchain bench privacy` (fedchain.bench.privacy_sim),
in small deterministic runs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import fedchain.bench.privacy_sim as privacy_sim
from fedchain.bench.privacy_sim import (
    accuracy_vs_epsilon,
    device_parts,
    min_survivors_for,
    personalisation_table,
    simulate_private,
)
from fedchain.learning.data import load_dataset
from fedchain.learning.personalize import body_names
from fedchain.learning.spec import default_task_spec
from fedchain.privacy.accountant import epsilon_after

SPEC = default_task_spec()


def test_fedper_federation_never_aggregates_a_head(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[str]] = []
    real_fedavg, real_dp = privacy_sim.fedavg, privacy_sim.dp_fedavg

    def spy_fedavg(updates: list) -> dict:
        seen.extend(set(w) for w, _ in updates)
        return real_fedavg(updates)

    def spy_dp(global_weights: dict, updates: list, *args: object) -> dict:
        seen.extend(set(w) for w in updates)
        return real_dp(global_weights, updates, *args)

    monkeypatch.setattr(privacy_sim, "fedavg", spy_fedavg)
    monkeypatch.setattr(privacy_sim, "dp_fedavg", spy_dp)
    train, _ = load_dataset(SPEC.dataset)
    parts = device_parts(train, 4, 0.5, seed=0)
    for clip in (None, 1.0):
        fed = privacy_sim._federate(
            SPEC, parts, 2, 0, personal=True, clip_norm=clip, noise_multiplier=0.5 if clip else 0.0
        )
        assert set(fed.global_weights) == set(body_names(SPEC.model))
        assert fed.heads is not None and len(fed.heads) == 4
        assert not np.array_equal(fed.heads[0]["output.weight"], fed.heads[1]["output.weight"])
    assert seen and all(names == set(body_names(SPEC.model)) for names in seen)


def test_small_personalisation_run_is_deterministic() -> None:
    kwargs = {
        "devices": 6,
        "small": 2,
        "rounds": 2,
        "seeds": (0,),
        "fine_tune_epochs": 2,
        "alone_epochs": 3,
        "head_epochs": 1,
    }
    table = personalisation_table(**kwargs)  # type: ignore[arg-type]
    assert table == personalisation_table(**kwargs)  # type: ignore[arg-type]
    assert table["small_devices"] == 2 and table["all_devices"] == 6
    for key in ("global", "alone", "fine_tuned", "personalized"):
        assert 0.0 <= table[key] <= 1.0


def test_simulate_private_small_run() -> None:
    run = simulate_private(devices=8, rounds=3, noise_multiplier=1.0, clip_norm=1.0, seed=0)
    again = simulate_private(devices=8, rounds=3, noise_multiplier=1.0, clip_norm=1.0, seed=0)
    assert dataclasses.replace(run, seconds=0.0) == dataclasses.replace(again, seconds=0.0)
    assert run.epsilon == pytest.approx(epsilon_after(3, 1.0, 1.0, 1e-5))
    assert run.noise_std == pytest.approx(1.0 / 8)
    assert 0.0 <= run.clipped_fraction <= 1.0 and run.skipped_rounds == 0
    assert simulate_private(devices=8, rounds=2, noise_multiplier=0.0).epsilon == math.inf


def test_distributed_noise_with_dropout_skips_thin_rounds() -> None:
    run = simulate_private(
        devices=8, rounds=3, noise_multiplier=1.0, dropout=0.3, noise="distributed", min_survivors=8, seed=0
    )
    assert run.skipped_rounds >= 1  # with 30% dropout, all 8 rarely survive: those rounds are not published
    ok = simulate_private(devices=8, rounds=3, noise_multiplier=1.0, dropout=0.3, noise="distributed", seed=0)
    assert ok.skipped_rounds <= 3 and 0.0 <= ok.accuracy <= 1.0
    assert min_survivors_for(100, 0.9) < 90 and min_survivors_for(10, 1.0) == 10


def test_accuracy_vs_epsilon_small_table() -> None:
    table = accuracy_vs_epsilon(targets=(math.inf, 8.0), seeds=(0,), rounds=2, devices=6)
    assert list(table) == [math.inf, 8.0]
    assert table[math.inf]["noise_multiplier"] == 0.0 and table[math.inf]["epsilon"] == math.inf
    assert 7.99 - 0.01 <= table[8.0]["epsilon"] <= 8.0 and table[8.0]["noise_multiplier"] > 0
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in table.values())
