"""Client-level DP (DP-FedAvg): clipping, Gaussian noise, central and distributed noise."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import fedchain.privacy.dp as dp_module
from fedchain.privacy.dp import (
    DistributedNoise,
    central_noise_std,
    clip_delta,
    dp_fedavg,
    gaussian_noise,
    l2_norm,
    noise_rng,
)

SHAPES = {"hidden.0.weight": (8, 5), "hidden.0.bias": (8,), "output.weight": (2, 8), "output.bias": (2,)}


def weights(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {name: (scale * rng.standard_normal(shape)).astype(np.float32) for name, shape in SHAPES.items()}


@pytest.mark.parametrize("scale", [1e-4, 0.05, 1.0, 30.0])
def test_clip_bound_holds_and_keeps_direction(scale: float) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        global_weights, local = weights(rng), weights(rng)
        local = {k: (global_weights[k] + scale * (local[k] - global_weights[k])).astype(np.float32) for k in local}
        raw = {k: local[k].astype(np.float64) - global_weights[k] for k in local}
        clip = 0.7
        delta, norm = clip_delta(global_weights, local, clip)
        assert list(delta) == sorted(SHAPES)
        assert norm == pytest.approx(l2_norm(raw), rel=1e-12)
        assert l2_norm(delta) <= clip * (1 + 1e-12)
        factor = min(1.0, clip / norm)
        for name in SHAPES:
            assert delta[name].dtype == np.float64
            np.testing.assert_allclose(delta[name], raw[name] * factor, rtol=1e-12, atol=1e-15)


def test_clip_rejects_mismatches() -> None:
    rng = np.random.default_rng(0)
    g = weights(rng)
    with pytest.raises(ValueError, match="names differ"):
        clip_delta(g, {k: v for k, v in g.items() if k != "output.bias"}, 1.0)
    with pytest.raises(ValueError, match="shape"):
        clip_delta(g, {**g, "output.bias": np.zeros(3, np.float32)}, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        clip_delta(g, {**g, "output.bias": np.array([np.nan, 0], np.float32)}, 1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        clip_delta(g, g, 0.0)


def test_gaussian_noise_std_matches_and_is_seeded() -> None:
    shapes = {"b": (400, 250), "a": (100_000,)}
    noise = gaussian_noise(shapes, 0.3, noise_rng(7))
    for value in noise.values():
        assert value.std() == pytest.approx(0.3, rel=0.01)
        assert abs(value.mean()) < 0.01
    # Drawn in sorted-name order: the mapping's order does not change what a seed gives.
    again = gaussian_noise(dict(reversed(shapes.items())), 0.3, noise_rng(7))
    for name in shapes:
        np.testing.assert_array_equal(noise[name], again[name])
    assert all(not v.any() for v in gaussian_noise(shapes, 0.0, noise_rng(7)).values())


def test_unseeded_rng_comes_from_the_os() -> None:
    a, b = noise_rng().standard_normal(8), noise_rng().standard_normal(8)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(noise_rng([3, 4]).standard_normal(8), noise_rng([3, 4]).standard_normal(8))


def test_central_noise_std_uniform_weighting() -> None:
    assert central_noise_std(1.5, 2.0, 30) == pytest.approx(0.1)
    assert central_noise_std(0.0, 2.0, 30) == 0.0
    with pytest.raises(ValueError):
        central_noise_std(1.0, 1.0, 0)


def test_dp_fedavg_without_noise_is_the_uniform_mean_of_clipped_deltas() -> None:
    rng = np.random.default_rng(2)
    g = weights(rng)
    updates = [weights(rng) for _ in range(4)]
    out = dp_fedavg(g, updates, clip_norm=0.5, noise_multiplier=0.0, rng=noise_rng(0))
    deltas = [clip_delta(g, u, 0.5)[0] for u in updates]
    assert list(out) == list(g)
    for name in g:
        assert out[name].dtype == np.float32
        expected = g[name].astype(np.float64) + sum(d[name] for d in deltas) / 4
        np.testing.assert_allclose(out[name], expected.astype(np.float32), rtol=0, atol=1e-7)


def test_dp_fedavg_noise_std_is_z_c_over_devices() -> None:
    size = 200_000
    g = {"w": np.zeros(size, np.float32)}
    updates = [{"w": np.zeros(size, np.float32)} for _ in range(5)]  # zero deltas: the output is the noise alone
    out = dp_fedavg(g, updates, clip_norm=2.0, noise_multiplier=1.2, rng=noise_rng(11), denominator=8)
    assert out["w"].std() == pytest.approx(central_noise_std(1.2, 2.0, 8), rel=0.01)


def test_distributed_noise_sums_to_central_variance() -> None:
    z, clip, n, m = 1.3, 0.8, 10, 7
    plan = DistributedNoise(z, clip, n, m)
    assert plan.device_std == pytest.approx(z * clip / math.sqrt(m))
    size = 60_000
    g = {"w": np.zeros(size, np.float32)}
    shares = [plan.privatize(g, g, noise_rng([5, i]))[0]["w"] for i in range(n)]
    for survivors in (m, 8, n):
        total = np.sum(shares[:survivors], axis=0)
        assert total.std() == pytest.approx(plan.sum_std(survivors), rel=0.015)
        assert plan.sum_std(survivors) >= plan.central_std - 1e-12
        assert plan.overhead(survivors) == pytest.approx(math.sqrt(survivors / m))
    assert np.sum(shares[:m], axis=0).std() == pytest.approx(z * clip, rel=0.015)
    assert plan.covers(m) and not plan.covers(m - 1)
    out = DistributedNoise.aggregate(g, [{"w": s} for s in shares], denominator=n)
    assert out["w"].std() == pytest.approx(plan.sum_std(n) / n, rel=0.015)


def test_distributed_noise_clips_before_adding() -> None:
    rng = np.random.default_rng(3)
    g, w = weights(rng), weights(rng, 10.0)
    sent, norm = DistributedNoise(0.0, 0.5, 4, 2).privatize(g, w, noise_rng(0))
    assert norm > 0.5 and l2_norm(sent) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="exceeds"):
        DistributedNoise(1.0, 1.0, 3, 4)


def test_dp_module_is_pure_numpy() -> None:
    tree = ast.parse(Path(dp_module.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    allowed = {"__future__", "math", "os", "collections", "dataclasses", "numpy"}
    assert all(n.split(".")[0] in allowed for n in names), names


@pytest.mark.parametrize("module", ["dp", "accountant"])
def test_privacy_dp_imports_no_roles(module: str) -> None:
    path = Path(dp_module.__file__).with_name(f"{module}.py")
    tree = ast.parse(path.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    forbidden = (
        "fedchain.chain",
        "fedchain.storage",
        "fedchain.device",
        "fedchain.aggregator",
        "fedchain.cli",
        "fedchain.learning",
    )
    assert not [n for n in names if n.startswith(forbidden)]
