"""The running hash that binds a round's submissions (mirrors FederatedTask.submitUpdate and submitUpdateBatch)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_canonical_address


class BatchSubmission(NamedTuple):
    """One `submitUpdateBatch` as it enters the inputs hash (the fields of UpdateBatchSubmitted)."""

    relayer: str
    entries_root: bytes
    batch_digest: bytes
    entries: int
    total_samples: int


def initial_inputs_hash(task_address: str, round_index: int) -> bytes:
    """bytes20(keccak256(abi.encode(address(this), uint32 round)))."""
    return keccak(abi_encode(["address", "uint32"], [task_address, round_index]))[:20]


def fold_inputs_hash(previous: bytes, device: str, update_digest: bytes, num_samples: int) -> bytes:
    """bytes20(keccak256(abi.encodePacked(bytes20 prev, address device, bytes32 digest, uint64 numSamples)))."""
    if len(previous) != 20 or len(update_digest) != 32:
        raise ValueError("previous hash must be 20 bytes and the update digest 32 bytes")
    packed = previous + to_canonical_address(device) + update_digest + num_samples.to_bytes(8, "big")
    return keccak(packed)[:20]


def fold_batch_inputs_hash(
    previous: bytes, relayer: str, entries_root: bytes, batch_digest: bytes, entries: int, total_samples: int
) -> bytes:
    """bytes20(keccak256(abi.encodePacked(bytes20 prev, address relayer, bytes32 entriesRoot, bytes32 batchDigest,
    uint32 entries, uint64 totalSamples))): 116 bytes, where a direct submission folds 80, so the two never
    collide."""
    if len(previous) != 20 or len(entries_root) != 32 or len(batch_digest) != 32:
        raise ValueError("previous hash must be 20 bytes, the entries root and batch digest 32 bytes")
    packed = (
        previous
        + to_canonical_address(relayer)
        + entries_root
        + batch_digest
        + entries.to_bytes(4, "big")
        + total_samples.to_bytes(8, "big")
    )
    return keccak(packed)[:20]


def inputs_hash(
    task_address: str,
    round_index: int,
    submissions: Iterable[tuple[str, bytes, int] | BatchSubmission],
) -> bytes:
    """The hash after the given submissions, in chain order: (device, digest, numSamples) for submitUpdate,
    BatchSubmission for submitUpdateBatch."""
    acc = initial_inputs_hash(task_address, round_index)
    for item in submissions:
        if isinstance(item, BatchSubmission):
            acc = fold_batch_inputs_hash(acc, *item)
        else:
            device, digest, num_samples = item
            acc = fold_inputs_hash(acc, device, digest, num_samples)
    return acc
