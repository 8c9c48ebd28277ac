"""The inputs hash the aggregator recomputes must follow the contract's definition exactly."""

from __future__ import annotations

import hashlib

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from fedchain.chain.inputs import fold_inputs_hash, initial_inputs_hash, inputs_hash

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DEVICE_A = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
DEVICE_B = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def test_initial_hash_is_keccak_of_abi_encoded_task_and_round() -> None:
    expected = keccak(abi_encode(["address", "uint32"], [TASK, 7]))[:20]
    assert initial_inputs_hash(TASK, 7) == expected
    assert initial_inputs_hash(TASK, 7) != initial_inputs_hash(TASK, 8)


def test_fold_is_keccak_of_the_packed_80_bytes() -> None:
    prev = initial_inputs_hash(TASK, 1)
    packed = prev + bytes.fromhex(DEVICE_A[2:]) + digest("u") + (300).to_bytes(8, "big")
    assert len(packed) == 80
    assert fold_inputs_hash(prev, DEVICE_A, digest("u"), 300) == keccak(packed)[:20]


def test_hash_depends_on_order_device_digest_and_samples() -> None:
    a, b = (DEVICE_A, digest("a"), 10), (DEVICE_B, digest("b"), 20)
    base = inputs_hash(TASK, 1, [a, b])
    assert base != inputs_hash(TASK, 1, [b, a])
    assert base != inputs_hash(TASK, 1, [a, (DEVICE_B, digest("b"), 21)])
    assert base != inputs_hash(TASK, 1, [a, (DEVICE_B, digest("c"), 20)])
    assert base != inputs_hash(TASK, 1, [a])
    assert inputs_hash(TASK, 1, []) == initial_inputs_hash(TASK, 1)


def test_fold_rejects_wrong_lengths() -> None:
    with pytest.raises(ValueError):
        fold_inputs_hash(b"\x00" * 19, DEVICE_A, digest("u"), 1)
    with pytest.raises(ValueError):
        fold_inputs_hash(b"\x00" * 20, DEVICE_A, b"short", 1)
