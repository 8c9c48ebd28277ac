"""Client-level differential privacy for federated averaging (DP-FedAvg, McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models").

What is protected: one device's whole contribution to a round (all of its samples at once), not single samples.
Each device's update is its delta from the global model, d_i = w_i - x, clipped to L2 norm C over all tensors
(`clip_delta`). The round's aggregate is

    x' = x + (Σ_i clip(d_i) + N(0, (z·C)² I)) / D

with noise multiplier z and a fixed denominator D: the number of devices expected to contribute, decided before the
round (McMahan et al.'s fixed-denominator estimator). Adding or removing one device moves the clipped sum by at most
C, so the sum is the Gaussian mechanism with sensitivity C and the noise multiplier z, which the RDP accountant
(`fedchain.privacy.accountant`) turns into (ε, δ). On the averaged model that is a noise std of z·C/D per
coordinate (`central_noise_std`).

Uniform weighting, deliberately: every device counts the same, whatever its number of samples. FedAvg's usual
sample-count weights would make a device's influence (its sensitivity) depend on a private, self-reported count,
and publishing weights derived from it leaks it; a device claiming many samples would also exceed the bound C the
noise is calibrated to. `dp_fedavg` therefore ignores sample counts.

Where the noise is added:

* central (`dp_fedavg`): a trusted aggregator adds N(0, (z·C)²) to the sum. It sees every clipped update in clear.
* distributed (`DistributedNoise`): each of n devices adds N(0, (z·C)²/m) to its own clipped delta, m being the
  fewest devices expected to survive the round. The sum over k ≥ m survivors carries noise of variance
  k·(z·C)²/m ≥ (z·C)², at least the central amount, with no one trusted to add it. Meant for use under secure
  aggregation, where only the sum is revealed: a single update carries only 1/√m of the noise, which on its own
  protects that device very little. The price when fewer than n - m drop out is extra noise: the survivors' noise
  std is √(k/m) times the central one (n = 100, m = 80, no dropout: 1.118×, i.e. 25% more variance). When fewer
  than m survive, the noise is below target and the round must not be published (the secure-aggregation
  threshold should be m, so the sum cannot even be unmasked then).

Randomness: noise comes from a numpy Generator. On a device it must be seeded from the operating system
(`noise_rng()` with no seed reads os.urandom) so nobody can reproduce and subtract it; tests pass a seed to be
deterministic. PCG64 is not a cryptographic generator and floating-point Gaussian samples have known side channels
(Mironov 2012, "On Significance of the Least Significant Bits for Differential Privacy"); this implementation is
for experiments and the reference protocol, not a certified DP library.

Pure numpy: no torch, no chain, no storage.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Weights: tensor name -> float32 array, as in fedchain.learning.types (not imported: privacy sits beside learning).
Arrays = dict[str, np.ndarray]


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")
    return value


def noise_rng(seed: int | Sequence[int] | None = None) -> np.random.Generator:
    """The Generator noise is drawn from: seeded from os.urandom (256 bits) when `seed` is None, as a device must
    be, else deterministic (tests, reproducible simulations)."""
    if seed is None:
        return np.random.default_rng(int.from_bytes(os.urandom(32), "big"))
    return np.random.default_rng(seed)


def l2_norm(arrays: Mapping[str, np.ndarray]) -> float:
    """||a||₂ over all tensors: per-tensor float64 sums of squares added in sorted-name order."""
    total = 0.0
    for name in sorted(arrays):
        flat = np.asarray(arrays[name], dtype=np.float64).reshape(-1)
        total += float((flat * flat).sum())  # numpy's pairwise sum, not BLAS: the same on every CPU
    return math.sqrt(total)


def clip_delta(
    global_weights: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], clip_norm: float
) -> tuple[Arrays, float]:
    """(clipped delta, norm before clipping): d = w - x in float64 over every tensor of `global_weights` (sorted-name
    order), scaled by min(1, clip_norm/||d||) so ||clipped d|| <= clip_norm. The names of both must agree."""
    clip_norm = _positive("clip_norm", clip_norm)
    if set(weights) != set(global_weights):
        raise ValueError(f"tensor names differ: {sorted(set(weights) ^ set(global_weights))}")
    delta: Arrays = {}
    for name in sorted(global_weights):
        ref = np.asarray(global_weights[name])
        value = np.asarray(weights[name])
        if value.shape != ref.shape:
            raise ValueError(f"{name}: shape {value.shape} differs from the global model's {ref.shape}")
        delta[name] = np.subtract(value, ref, dtype=np.float64)
    norm = l2_norm(delta)
    if not math.isfinite(norm):
        raise ValueError("the update contains NaN or Inf")
    if norm > clip_norm:
        scale = clip_norm / norm
        for value in delta.values():
            value *= scale
    return delta, norm


def gaussian_noise(shape_map: Mapping[str, tuple[int, ...]], std: float, rng: np.random.Generator) -> Arrays:
    """Independent N(0, std²) float64 arrays of the given shapes, drawn in sorted-name order (so a seed fixes them)."""
    std = _positive("std", std, allow_zero=True)
    return {name: rng.normal(0.0, std, size=tuple(shape_map[name])) for name in sorted(shape_map)}


def central_noise_std(noise_multiplier: float, clip_norm: float, num_devices: int) -> float:
    """Per-coordinate noise std on the uniformly averaged model: z·C/D (D devices in the fixed denominator)."""
    if isinstance(num_devices, bool) or not isinstance(num_devices, int | np.integer) or num_devices < 1:
        raise ValueError(f"num_devices must be a positive integer, got {num_devices!r}")
    z = _positive("noise_multiplier", noise_multiplier, allow_zero=True)
    return z * _positive("clip_norm", clip_norm) / int(num_devices)


def apply_delta(global_weights: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> Arrays:
    """x + delta as float32, in `global_weights`' order (the form weights travel in)."""
    return {
        name: (np.asarray(ref, dtype=np.float64) + delta[name]).astype(np.float32)
        for name, ref in global_weights.items()
    }


def dp_fedavg(
    global_weights: Mapping[str, np.ndarray],
    updates: Sequence[Mapping[str, np.ndarray]],
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
    denominator: float | None = None,
    server_lr: float = 1.0,
) -> Arrays:
    """One round of central DP-FedAvg with uniform weights: x + server_lr·(Σ clip(w_i - x) + N(0, (z·C)²)) / D.

    `updates` are the devices' weights (sample counts are deliberately not taken, see the module docstring), summed
    in the given order; D = `denominator`, the number of devices expected to contribute, fixed in advance (defaults
    to len(updates), which is public anyway when the number of submissions is). Returns float32 weights.
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    denominator = len(updates) if denominator is None else denominator
    std_on_sum = central_noise_std(noise_multiplier, clip_norm, 1)
    total = {name: np.zeros(np.shape(value), dtype=np.float64) for name, value in global_weights.items()}
    for weights in updates:
        delta, _ = clip_delta(global_weights, weights, clip_norm)
        for name, value in delta.items():
            total[name] += value
    noise = gaussian_noise({name: np.shape(v) for name, v in global_weights.items()}, std_on_sum, rng)
    scale = _positive("server_lr", server_lr) / _positive("denominator", denominator)
    mean = {name: (total[name] + noise[name]) * scale for name in total}
    return apply_delta(global_weights, mean)


@dataclass(frozen=True)
class DistributedNoise:
    """Each of `num_devices` devices adds N(0, (z·C)²/m) to its clipped delta, m = `min_survivors`.

    Any k >= m surviving updates sum to noise of variance k·(z·C)²/m >= (z·C)², the central DP-FedAvg amount for
    noise multiplier z. The cost is `overhead(k)` = √(k/m) in noise std; below m survivors the guarantee does not
    hold and the round must be dropped (`covers`).
    """

    noise_multiplier: float
    clip_norm: float
    num_devices: int
    min_survivors: int

    def __post_init__(self) -> None:
        _positive("noise_multiplier", self.noise_multiplier, allow_zero=True)
        _positive("clip_norm", self.clip_norm)
        for name in ("num_devices", "min_survivors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.min_survivors > self.num_devices:
            raise ValueError(f"min_survivors ({self.min_survivors}) exceeds num_devices ({self.num_devices})")

    @property
    def central_std(self) -> float:
        """The noise std the sum must carry: z·C."""
        return float(self.noise_multiplier) * float(self.clip_norm)

    @property
    def device_std(self) -> float:
        """Each device's share: z·C/√m."""
        return self.central_std / math.sqrt(self.min_survivors)

    def sum_std(self, survivors: int) -> float:
        """Noise std of the sum of `survivors` updates: z·C·√(k/m)."""
        return self.device_std * math.sqrt(survivors)

    def overhead(self, survivors: int) -> float:
        """sum_std / central_std = √(k/m): >= 1 whenever the round may be published."""
        return math.sqrt(survivors / self.min_survivors)

    def covers(self, survivors: int) -> bool:
        """Whether `survivors` updates carry at least the central noise (k >= m)."""
        return survivors >= self.min_survivors

    def privatize(
        self, global_weights: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[Arrays, float]:
        """What a device sends: (clipped delta + its noise share, float64) and the delta's norm before clipping."""
        delta, norm = clip_delta(global_weights, weights, self.clip_norm)
        noise = gaussian_noise({name: value.shape for name, value in delta.items()}, self.device_std, rng)
        return {name: delta[name] + noise[name] for name in delta}, norm

    @staticmethod
    def aggregate(
        global_weights: Mapping[str, np.ndarray],
        noisy_deltas: Sequence[Mapping[str, np.ndarray]],
        denominator: float,
        server_lr: float = 1.0,
    ) -> Arrays:
        """x + server_lr·Σ noisy deltas / D, float32 (under secure aggregation the server only ever sees the sum)."""
        if not noisy_deltas:
            raise ValueError("no updates to aggregate")
        total = {name: np.zeros(np.shape(value), dtype=np.float64) for name, value in global_weights.items()}
        for delta in noisy_deltas:
            for name in total:
                total[name] += delta[name]
        scale = _positive("server_lr", server_lr) / _positive("denominator", denominator)
        return apply_delta(global_weights, {name: value * scale for name, value in total.items()})


__all__ = [
    "DistributedNoise",
    "apply_delta",
    "central_noise_std",
    "clip_delta",
    "dp_fedavg",
    "gaussian_noise",
    "l2_norm",
    "noise_rng",
]
