"""Merkle trees of batch entries, with OpenZeppelin MerkleProof's conventions (mirrors FederatedTask.batchLeaf and
verifyBatchEntry).

Leaves are double-hashed: `keccak256(bytes.concat(keccak256(abi.encode(device, updateDigest, numSamples,
keccak256(signature)))))`. Inner nodes hash their two children in sorted order (`keccak256(min || max)`), so a
proof is just the sibling hashes, bottom up. The tree over leaves l0..l(n-1) (in batch order: entries sorted by
device address) pairs neighbours level by level; an odd last node moves up unchanged. A one-leaf tree's root is
that leaf (empty proof). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address


def batch_leaf(device: str, update_digest: bytes, num_samples: int, signature: bytes) -> bytes:
    """The leaf of one batch entry (FederatedTask.batchLeaf)."""
    if len(update_digest) != 32:
        raise ValueError("update_digest must be 32 bytes")
    inner = keccak(
        abi_encode(
            ["address", "bytes32", "uint64", "bytes32"],
            [to_checksum_address(device), bytes(update_digest), num_samples, keccak(bytes(signature))],
        )
    )
    return keccak(inner)


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin's commutative keccak256 of two nodes: the smaller one first."""
    return keccak(a + b) if a <= b else keccak(b + a)


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    if any(len(leaf) != 32 for leaf in leaves):
        raise ValueError("leaves must be 32 bytes")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        nxt = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
    return levels


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over `leaves` in the given order (ValueError for no leaves)."""
    return _levels(leaves)[-1][0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The sibling hashes from leaf `index` up to the root (what `verifyBatchEntry` takes as `proof`)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} out of range for {len(leaves)} leaves")
    proof = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a proof leads to from `leaf` (OpenZeppelin MerkleProof.processProof)."""
    node = bytes(leaf)
    for sibling in proof:
        node = hash_pair(node, bytes(sibling))
    return node


def verify_proof(leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether `proof` proves `leaf` under `root` (OpenZeppelin MerkleProof.verify)."""
    return process_proof(leaf, proof) == bytes(root)
