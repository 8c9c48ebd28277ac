"""The result commitment and result key the aggregator computes off-chain must follow the contract's definitions.

FederatedTask.resultCommitment = keccak256(abi.encode(address(this), uint32 round, address aggregator,
bytes20 inputsHash, bytes32 modelDigest, bytes32 reportDigest, uint32 acceptedUpdates, uint64 epsilonMicro,
bytes32 salt)) and FederatedTask.resultKey = keccak256(abi.encode(bytes20 inputsHash, bytes32 modelDigest,
uint32 acceptedUpdates, uint64 epsilonMicro)).
tests/contracts/test_commit_reveal.py checks the same functions against the deployed contract.
"""

from __future__ import annotations

import hashlib

import pytest
from eth_utils import keccak

from fedchain.chain import result_commitment, result_key

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
AGGREGATOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER_AGGREGATOR = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
INPUTS = b"\x11" * 20


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def commitment(**changes) -> bytes:
    args = {
        "task_address": TASK,
        "round_index": 1,
        "aggregator": AGGREGATOR,
        "inputs_hash": INPUTS,
        "model_digest": digest("model"),
        "report_digest": digest("report"),
        "accepted": 3,
        "salt": digest("salt"),
    }
    args.update(changes)
    return result_commitment(**args)


def test_known_vector() -> None:
    """Computed once with this implementation; the contract test ties the implementation to the chain."""
    assert commitment().hex() == "c12fe5e9bf98c92f365e3bea4190476efc732b82dfbe5c5376358f94ceadb385"
    assert (
        commitment(epsilon_micro=2_500_000).hex() == "9c451f7c2ec29398160069fcd72a4b3b252b64987d89cb0628e22afad6a40c72"
    )
    assert (
        result_key(INPUTS, digest("model"), 3).hex()
        == "7413511903edbdf980130e22db2a742aae5996bb0ca688b6e280c0706b32014d"
    )
    assert (
        result_key(INPUTS, digest("model"), 3, epsilon_micro=2_500_000).hex()
        == "3becb216549d35eb3f06d1efaf0f772dab3e7d9555fcecfff744de66b9a27945"
    )


def test_layout_is_nine_left_or_right_aligned_words() -> None:
    """abi.encode spelled out by hand: addresses and uints left-padded, bytesN right-padded, 32 bytes each."""

    def left(value: bytes) -> bytes:
        return value.rjust(32, b"\x00")

    def right(value: bytes) -> bytes:
        return value.ljust(32, b"\x00")

    words = [
        left(bytes.fromhex(TASK[2:])),
        left((1).to_bytes(4, "big")),
        left(bytes.fromhex(AGGREGATOR[2:])),
        right(INPUTS),
        digest("model"),
        digest("report"),
        left((3).to_bytes(4, "big")),
        left((7).to_bytes(8, "big")),
        digest("salt"),
    ]
    assert commitment(epsilon_micro=7) == keccak(b"".join(words))
    assert result_key(INPUTS, digest("model"), 3, epsilon_micro=7) == keccak(
        right(INPUTS) + digest("model") + left(b"\x03") + left(b"\x07")
    )


def test_address_case_does_not_matter() -> None:
    assert commitment(task_address=TASK.lower(), aggregator=AGGREGATOR.lower()) == commitment()


@pytest.mark.parametrize(
    "change",
    [
        {"task_address": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"},
        {"round_index": 2},
        {"aggregator": OTHER_AGGREGATOR},
        {"inputs_hash": b"\x12" * 20},
        {"model_digest": digest("other model")},
        {"report_digest": digest("other report")},
        {"accepted": 2},
        {"epsilon_micro": 1},
        {"salt": digest("other salt")},
    ],
    ids=["task", "round", "aggregator", "inputs", "model", "report", "accepted", "epsilon", "salt"],
)
def test_every_field_changes_the_commitment(change: dict) -> None:
    assert commitment(**change) != commitment()


def test_key_ignores_the_report_but_not_the_rest() -> None:
    """Aggregators agree on inputs, model, accepted count and epsilon; the report may differ between them."""
    key = result_key(INPUTS, digest("model"), 3)
    assert result_key(INPUTS, digest("model"), 3, epsilon_micro=0) == key
    assert result_key(b"\x12" * 20, digest("model"), 3) != key
    assert result_key(INPUTS, digest("other model"), 3) != key
    assert result_key(INPUTS, digest("model"), 2) != key
    assert result_key(INPUTS, digest("model"), 3, epsilon_micro=1) != key


@pytest.mark.parametrize(
    "change",
    [{"inputs_hash": b"\x11" * 32}, {"model_digest": b"short"}, {"report_digest": b""}, {"salt": b"\x00" * 31}],
)
def test_wrong_lengths_are_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        commitment(**change)
    if "inputs_hash" in change or "model_digest" in change:
        with pytest.raises(ValueError):
            result_key(change.get("inputs_hash", INPUTS), change.get("model_digest", digest("model")), 3)
