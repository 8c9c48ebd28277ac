"""What devices and aggregators must agree on to run secure aggregation and sealing over the chain, in one place.

Pure: no chain, no IPFS. Device and aggregator never import each other, so the shared choices live here: the
round's fixed-point parameters, the task/round context bytes, the flattening of a delta, and the secret a device or
aggregator derives its keys from.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np

from fedchain.privacy.keys import EncryptionKey, derive_encryption_key
from fedchain.privacy.quantize import QuantParams, VectorLayout, flatten, unflatten
from fedchain.privacy.secagg import RoundContext

# Deltas plus their differential-privacy noise share sit well within ±8 (a clipped delta has norm <= C and the noise
# share has std z·C/√m); 2^-16 precision per coordinate (≈ 1.5e-5) is far below SGD's own noise, and ±8·2^16 = 2^19
# per device leaves room for 4095 devices before the signed 32-bit ring could overflow.
SECAGG_QUANT = QuantParams(scale_bits=16, clip_range=8.0)


def address_bytes(address: str) -> bytes:
    """A 0x-prefixed hex address as its 20 bytes."""
    raw = bytes.fromhex(address[2:] if address.lower().startswith("0x") else address)
    if len(raw) != 20:
        raise ValueError(f"an address is 20 bytes, got {len(raw)} from {address!r}")
    return raw


def account_secret(private_key: bytes) -> bytes:
    """The 32-byte secret a participant derives its encryption and round keys from: a hash of its account key, so
    the account key itself is never used as key material directly."""
    if len(private_key) != 32:
        raise ValueError("an account private key is 32 bytes")
    return hashlib.sha256(b"fedchain/privacy/account-secret" + private_key).digest()


def encryption_key_of(private_key: bytes) -> EncryptionKey:
    """The participant's long-term X25519 key (its public half is what it registers on chain)."""
    return derive_encryption_key(account_secret(private_key))


def round_context(
    task_address: str, round_index: int, cipher_keys: Mapping[str, bytes], threshold_fraction: float
) -> RoundContext:
    """The round's SecAgg context: U1 = the devices with registered keys when the round opened, t from the task."""
    keys = {address_bytes(a): bytes(k) for a, k in cipher_keys.items()}
    n = len(keys)
    threshold = max(n // 2 + 1, math.ceil(threshold_fraction * n - 1e-9))
    return RoundContext.create(
        address_bytes(task_address), round_index, keys, threshold=min(threshold, n), quant=SECAGG_QUANT
    )


def delta_vector(global_weights: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> np.ndarray:
    """A delta flattened in sorted tensor-name order (float64), the layout the masked vectors use."""
    return flatten({name: np.asarray(delta[name], dtype=np.float64) for name in global_weights})


def mean_weights(global_weights: Mapping[str, np.ndarray], total: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """x + total/count as float32 weights in the global model's layout: the unweighted mean of `count` deltas."""
    if count < 1:
        raise ValueError("no deltas to average")
    layout = VectorLayout.of(dict(global_weights))
    mean = unflatten(np.asarray(total, dtype=np.float64) / float(count), layout)
    return {
        name: (np.asarray(global_weights[name], dtype=np.float64) + np.asarray(mean[name], dtype=np.float64)).astype(
            np.float32
        )
        for name in global_weights
    }


def seal_context(task_address: str, round_index: int, sender: str) -> bytes:
    """The associated data binding a sealed update to its task, round and sender."""
    return (
        b"fedchain/sealed-update" + address_bytes(task_address) + round_index.to_bytes(8, "big") + address_bytes(sender)
    )


__all__ = [
    "SECAGG_QUANT",
    "account_secret",
    "address_bytes",
    "delta_vector",
    "encryption_key_of",
    "mean_weights",
    "round_context",
    "seal_context",
]
