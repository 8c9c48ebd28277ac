"""Signed updates, Merkle trees and batch files: the binding's side of FederatedTask's relayed batches.

The contract's side (updateSigner, batchLeaf, verifyBatchEntry, the inputs-hash fold) is checked against these
functions in tests/contracts/test_batch.py; here the functions are checked against their definitions.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from fedchain.chain import (
    BatchSubmission,
    SignedUpdate,
    UpdateBatch,
    batch_leaf,
    batch_mismatch,
    fold_batch_inputs_hash,
    inputs_hash,
    make_batch,
    merkle_proof,
    merkle_root,
    recover_update_signer,
    screen_batch,
    sign_update,
    update_hash,
)
from fedchain.chain import batch as batch_module
from fedchain.chain.inputs import fold_inputs_hash, initial_inputs_hash
from fedchain.chain.merkle import hash_pair, process_proof, verify_proof
from fedchain.chain.signing import domain_separator, update_message

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_TASK = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
CHAIN_ID = 31337
RELAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def device(i: int):
    return Account.from_key(keccak(text=f"unit-device-{i}"))


def signed(i: int, round_index: int = 1, samples: int | None = None, task: str = TASK) -> SignedUpdate:
    account = device(i)
    n = 100 + i if samples is None else samples
    sig = sign_update(account, CHAIN_ID, task, round_index, digest(f"u{i}"), n)
    return SignedUpdate(account.address, digest(f"u{i}"), n, sig)


# ---------------------------------------------------------------- signing


def test_sign_and_recover_round_trip() -> None:
    account = device(0)
    sig = sign_update(account, CHAIN_ID, TASK, 3, digest("u"), 42)
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert recover_update_signer(CHAIN_ID, TASK, 3, digest("u"), 42, sig) == account.address


@pytest.mark.parametrize(
    "field",
    ["chain", "task", "round", "digest", "samples"],
)
def test_recovery_fails_for_tampered_fields(field: str) -> None:
    account = device(0)
    sig = sign_update(account, CHAIN_ID, TASK, 3, digest("u"), 42)
    args = {"chain": CHAIN_ID, "task": TASK, "round": 3, "digest": digest("u"), "samples": 42}
    args[field] = {"chain": 1, "task": OTHER_TASK, "round": 4, "digest": digest("v"), "samples": 43}[field]
    recovered = recover_update_signer(args["chain"], args["task"], args["round"], args["digest"], args["samples"], sig)
    assert recovered != account.address


def test_malformed_signatures_recover_nothing() -> None:
    sig = sign_update(device(0), CHAIN_ID, TASK, 3, digest("u"), 42)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = sig[:32] + (n - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])
    for bad in (b"", sig[:64], sig + b"\x00", sig[:64] + b"\x00", high_s, b"\x00" * 65):
        assert recover_update_signer(CHAIN_ID, TASK, 3, digest("u"), 42, bad) is None


def test_update_hash_follows_eip712() -> None:
    """keccak256(0x1901 || domainSeparator || keccak256(abi.encode(typeHash, round, digest, samples))), the same
    digest eth_account signs."""
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    separator = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_type, keccak(text="fedchain"), keccak(text="1"), CHAIN_ID, TASK],
        )
    )
    assert domain_separator(CHAIN_ID, TASK) == separator
    type_hash = keccak(text="Update(uint32 round,bytes32 updateDigest,uint64 numSamples)")
    struct = keccak(abi_encode(["bytes32", "uint32", "bytes32", "uint64"], [type_hash, 5, digest("u"), 9]))
    expected = keccak(b"\x19\x01" + separator + struct)
    assert update_hash(CHAIN_ID, TASK, 5, digest("u"), 9) == expected
    message = update_message(CHAIN_ID, TASK, 5, digest("u"), 9)
    assert keccak(b"\x19" + message.version + message.header + message.body) == expected


def test_sign_update_refuses_sample_counts_the_contract_refuses() -> None:
    for bad in (0, 2**32):
        with pytest.raises(ValueError):
            sign_update(device(0), CHAIN_ID, TASK, 1, digest("u"), bad)


# ---------------------------------------------------------------- Merkle trees


def test_leaf_is_the_double_hash_of_the_abi_encoded_entry() -> None:
    entry = signed(0)
    inner = keccak(
        abi_encode(
            ["address", "bytes32", "uint64", "bytes32"],
            [entry.device, entry.update_digest, entry.num_samples, keccak(entry.signature)],
        )
    )
    assert batch_leaf(entry.device, entry.update_digest, entry.num_samples, entry.signature) == keccak(inner)
    assert entry.leaf() == keccak(inner)


def test_known_roots() -> None:
    """Small trees spelled out: sorted-pair hashing, an odd node moves up unchanged."""
    a, b, c = (keccak(text=x) for x in "abc")
    assert merkle_root([a]) == a and merkle_proof([a], 0) == []
    assert merkle_root([a, b]) == keccak(min(a, b) + max(a, b)) == merkle_root([b, a])
    assert merkle_root([a, b, c]) == hash_pair(hash_pair(a, b), c)
    assert merkle_proof([a, b, c], 2) == [hash_pair(a, b)]
    assert merkle_proof([a, b, c], 0) == [b, c]


@pytest.mark.parametrize("size", range(1, 10))
def test_every_proof_verifies_and_only_for_its_leaf(size: int) -> None:
    leaves = [keccak(text=f"leaf-{i}") for i in range(size)]
    root = merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, i)
        assert process_proof(leaf, proof) == root and verify_proof(leaf, proof, root)
        assert not verify_proof(keccak(text="stranger"), proof, root)
        if size > 1:
            other = (i + 1) % size
            assert not verify_proof(leaf, merkle_proof(leaves, other), root)


def test_merkle_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        merkle_root([])
    with pytest.raises(ValueError):
        merkle_root([b"short"])
    with pytest.raises(IndexError):
        merkle_proof([keccak(text="a")], 1)


# ---------------------------------------------------------------- batch files


def test_make_batch_sorts_by_device_and_round_trips_canonically() -> None:
    entries = [signed(i) for i in range(5)]
    batch = make_batch(TASK, CHAIN_ID, 1, reversed(entries))
    keys = [bytes.fromhex(e.device[2:]) for e in batch.entries]
    assert keys == sorted(keys)
    data = batch.to_json()
    assert UpdateBatch.from_json(data) == batch
    assert UpdateBatch.from_json(data).to_json() == data
    doc = json.loads(data)
    assert list(doc) == ["chainId", "entries", "format", "round", "task"]
    assert doc["format"] == "fedchain-update-batch/1"
    assert b" " not in data
    assert doc["entries"][0]["updateDigest"] == "0x" + batch.entries[0].update_digest.hex()
    # whitespace does not matter when reading
    assert UpdateBatch.from_json(json.dumps(doc, indent=2)) == batch
    assert batch.total_samples == sum(100 + i for i in range(5))
    assert batch.root() == merkle_root([e.leaf() for e in batch.entries])
    for i, e in enumerate(batch.entries):
        assert verify_proof(e.leaf(), batch.proof(i), batch.root())


def test_malformed_batch_files_are_refused() -> None:
    batch = make_batch(TASK, CHAIN_ID, 1, [signed(i) for i in range(3)])
    doc = json.loads(batch.to_json())

    def variant(**changes):
        return json.dumps({**doc, **changes})

    bad = [
        variant(entries=list(reversed(doc["entries"]))),  # unsorted
        variant(entries=[]),
        variant(format="other/1"),
        variant(task=TASK.lower()),  # not checksummed
        variant(round=0),
        variant(round="1"),
        variant(extra=1),
        variant(entries=[{**doc["entries"][0], "updateDigest": doc["entries"][0]["updateDigest"].upper()}]),
        variant(entries=[{**doc["entries"][0], "numSamples": "100"}]),
        variant(entries=[{**doc["entries"][0], "more": 1}]),
    ]
    for text in bad:
        with pytest.raises(ValueError):
            UpdateBatch.from_json(text)


def test_batch_mismatch_names_what_differs() -> None:
    batch = make_batch(TASK, CHAIN_ID, 2, [signed(i, round_index=2) for i in range(3)])
    recorded = {
        "task": TASK,
        "chain_id": CHAIN_ID,
        "round_index": 2,
        "entries_root": batch.root(),
        "entries": 3,
        "total_samples": batch.total_samples,
    }
    assert batch_mismatch(batch, **recorded) is None
    assert batch_mismatch(batch, **{**recorded, "round_index": 3}) == "wrong-task-chain-or-round"
    assert batch_mismatch(batch, **{**recorded, "task": OTHER_TASK}) == "wrong-task-chain-or-round"
    assert batch_mismatch(batch, **{**recorded, "entries": 4}) == "count-mismatch"
    assert batch_mismatch(batch, **{**recorded, "total_samples": 1}) == "count-mismatch"
    assert batch_mismatch(batch, **{**recorded, "entries_root": digest("x")}) == "root-mismatch"


def test_screening_excludes_entries_with_a_reason_not_the_batch() -> None:
    good = [signed(i) for i in range(6)]
    forged = SignedUpdate(good[1].device, digest("forged"), good[1].num_samples, good[1].signature)
    other_round = signed(2, round_index=2)  # a signature for another round
    entries = [good[0], forged, other_round, good[3], good[4], good[5]]
    batch = make_batch(TASK, CHAIN_ID, 1, entries)
    approved = {e.device for e in good} - {good[3].device}
    seen = {good[5].device}  # accepted from an earlier batch of the round
    verdicts = screen_batch(
        batch, is_approved=approved.__contains__, direct_submitters=[good[4].device.lower()], seen=seen
    )
    by_device = {v.entry.device: v for v in verdicts}
    assert [v.entry for v in verdicts] == list(batch.entries)
    assert by_device[good[0].device].accepted and by_device[good[0].device].reason is None
    assert by_device[good[1].device].reason == batch_module.REASON_BAD_SIGNATURE
    assert by_device[good[2].device].reason == batch_module.REASON_BAD_SIGNATURE
    assert by_device[good[3].device].reason == batch_module.REASON_UNAPPROVED
    assert by_device[good[4].device].reason == batch_module.REASON_SUBMITTED_DIRECTLY
    assert by_device[good[5].device].reason == batch_module.REASON_DUPLICATE
    assert seen == {good[5].device, good[0].device}
    assert batch_module.accepted_entries(verdicts) == [good[0]]


def test_a_device_twice_in_one_batch_counts_once() -> None:
    first, second = signed(0), signed(0, samples=7)
    batch = make_batch(TASK, CHAIN_ID, 1, [first, second])
    verdicts = screen_batch(batch, is_approved=lambda _: True, direct_submitters=(), seen=set())
    assert [v.reason for v in verdicts] == [None, batch_module.REASON_DUPLICATE]


def test_a_signature_for_another_task_is_a_bad_signature() -> None:
    batch = make_batch(TASK, CHAIN_ID, 1, [signed(0, task=OTHER_TASK)])
    (verdict,) = screen_batch(batch, is_approved=lambda _: True, direct_submitters=(), seen=set())
    assert verdict.reason == batch_module.REASON_BAD_SIGNATURE


# ---------------------------------------------------------------- inputs hash


def test_batch_fold_is_keccak_of_the_packed_116_bytes() -> None:
    prev = initial_inputs_hash(TASK, 1)
    packed = (
        prev
        + bytes.fromhex(RELAYER[2:])
        + digest("root")
        + digest("file")
        + (5).to_bytes(4, "big")
        + (600).to_bytes(8, "big")
    )
    assert len(packed) == 116
    assert fold_batch_inputs_hash(prev, RELAYER, digest("root"), digest("file"), 5, 600) == keccak(packed)[:20]
    with pytest.raises(ValueError):
        fold_batch_inputs_hash(prev, RELAYER, b"short", digest("file"), 5, 600)


def test_inputs_hash_folds_direct_and_batched_submissions_in_order() -> None:
    direct = (device(0).address, digest("d"), 10)
    batched = BatchSubmission(RELAYER, digest("root"), digest("file"), 3, 300)
    acc = initial_inputs_hash(TASK, 1)
    acc = fold_inputs_hash(acc, *direct)
    acc = fold_batch_inputs_hash(acc, *batched)
    assert inputs_hash(TASK, 1, [direct, batched]) == acc
    assert inputs_hash(TASK, 1, [batched, direct]) != acc


@settings(max_examples=100, deadline=None)
@given(
    chain_id=st.integers(1, 2**40),
    round_index=st.integers(0, 2**32 - 1),
    update_digest=st.binary(min_size=32, max_size=32),
    samples=st.integers(1, 2**32 - 1),
    device_index=st.integers(0, 40),
)
def test_fast_signing_equals_eth_account_and_recovers(
    chain_id, round_index, update_digest, samples, device_index
) -> None:
    account = device(device_index)
    message = update_message(chain_id, TASK, round_index, update_digest, samples)
    signature = sign_update(account, chain_id, TASK, round_index, update_digest, samples)
    assert signature == bytes(Account.sign_message(message, account.key).signature)
    assert Account.recover_message(message, signature=signature) == account.address
    assert recover_update_signer(chain_id, TASK, round_index, update_digest, samples, signature) == account.address
