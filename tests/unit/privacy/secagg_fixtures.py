"""Helpers of the secure-aggregation unit tests: a simulated round among n devices, run entirely in memory."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from fedchain.privacy import (
    MaskedUpdate,
    QuantParams,
    Reveal,
    RoundContext,
    SecAggDevice,
    UnmaskResult,
    derive_encryption_key,
    unmask_sum,
)

TASK = bytes.fromhex("5a" * 20)
ROUND = 3


def address(i: int) -> bytes:
    """A deterministic 20-byte address whose order does not follow i (so address order is exercised)."""
    return hashlib.sha256(b"device" + i.to_bytes(4, "big")).digest()[:20]


def device_secret(i: int) -> bytes:
    return hashlib.sha256(b"secret" + i.to_bytes(4, "big")).digest()


def cipher_keys(n: int) -> dict[bytes, bytes]:
    """The long-term cipher public keys that devices 0..n-1 registered on chain (the round's U1)."""
    return {address(i): derive_encryption_key(device_secret(i)).public for i in range(n)}


@dataclass
class SimRound:
    ctx: RoundContext
    devices: dict[bytes, SecAggDevice]
    blobs: dict[bytes, bytes]


def setup_round(
    n: int,
    threshold: int | None = None,
    quant: QuantParams | None = None,
    round_id: int = ROUND,
    publishers: Collection[bytes] | None = None,
) -> SimRound:
    """n devices with registered cipher keys; those in `publishers` (default all) publish their setup blobs (U2)."""
    addrs = [address(i) for i in range(n)]
    ctx = RoundContext.create(TASK, round_id, cipher_keys(n), threshold=threshold, quant=quant)
    devices = {a: SecAggDevice(device_secret(i), a, ctx) for i, a in enumerate(addrs)}
    chosen = set(addrs) if publishers is None else set(publishers)
    blobs = {a: devices[a].shares_blob() for a in addrs if a in chosen}
    return SimRound(ctx, devices, blobs)


def random_updates(addrs: Collection[bytes], size: int, seed: int = 0, scale: float = 0.3) -> dict[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {a: rng.normal(0.0, scale, size) for a in sorted(addrs)}


def mask_all(sim: SimRound, updates: Mapping[bytes, np.ndarray]) -> dict[bytes, MaskedUpdate]:
    return {a: sim.devices[a].mask(u, sim.blobs) for a, u in updates.items()}


def reveal_all(sim: SimRound, survivors: Collection[bytes]) -> list[Reveal]:
    dropped = set(sim.blobs) - set(survivors)
    return [sim.devices[a].reveal(sim.blobs, survivors, dropped) for a in sorted(survivors)]


def run_round(sim: SimRound, updates: Mapping[bytes, np.ndarray], drop: Collection[bytes] = ()) -> UnmaskResult:
    """Every publisher masks; those in `drop` go silent after masking; the rest reveal; the aggregator unmasks."""
    masked = mask_all(sim, {a: updates[a] for a in sim.blobs})
    survivors = [a for a in sim.blobs if a not in set(drop)]
    reveals = reveal_all(sim, survivors)
    return unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors], reveals)
