"""The running hash that binds a round's submissions (mirrors FederatedTask.submitUpdate)."""

from __future__ import annotations

from collections.abc import Iterable

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_canonical_address


def initial_inputs_hash(task_address: str, round_index: int) -> bytes:
    """bytes20(keccak256(abi.encode(address(this), uint32 round)))."""
    return keccak(abi_encode(["address", "uint32"], [task_address, round_index]))[:20]


def fold_inputs_hash(previous: bytes, device: str, update_digest: bytes, num_samples: int) -> bytes:
    """bytes20(keccak256(abi.encodePacked(bytes20 prev, address device, bytes32 digest, uint64 numSamples)))."""
    if len(previous) != 20 or len(update_digest) != 32:
        raise ValueError("previous hash must be 20 bytes and the update digest 32 bytes")
    packed = previous + to_canonical_address(device) + update_digest + num_samples.to_bytes(8, "big")
    return keccak(packed)[:20]


def inputs_hash(task_address: str, round_index: int, submissions: Iterable[tuple[str, bytes, int]]) -> bytes:
    """The hash after the given (device, digest, numSamples) submissions, in chain order."""
    acc = initial_inputs_hash(task_address, round_index)
    for device, digest, num_samples in submissions:
        acc = fold_inputs_hash(acc, device, digest, num_samples)
    return acc
