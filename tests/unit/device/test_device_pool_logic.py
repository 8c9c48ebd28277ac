"""The pool's bookkeeping without chain or IPFS: which devices still owe the round an update, and which signed
entries a relayer's recorded batches really hold (real signatures and Merkle roots)."""

from __future__ import annotations

import hashlib

from fedchain.chain import devnet_account
from fedchain.chain.batch import SignedUpdate, make_batch
from fedchain.chain.signing import sign_update
from fedchain.device.pool import due_devices, recorded_entries

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHAIN_ID = 31337


def test_due_devices_skips_the_removed_and_those_that_submitted_this_round() -> None:
    devices = ["0xa", "0xb", "0xc", "0xd"]
    last = {"0xa": 4, "0xb": 3}
    assert due_devices(devices, last, {"0xd"}, 4) == ["0xb", "0xc"]
    assert due_devices(devices, last, set(), 5) == devices
    assert due_devices([], last, set(), 1) == []


def entry(index: int, round_index: int = 2) -> SignedUpdate:
    account = devnet_account(index)
    digest = hashlib.sha256(f"update-{index}".encode()).digest()
    return SignedUpdate(
        account.address, digest, 10 + index, sign_update(account, CHAIN_ID, TASK, round_index, digest, 10 + index)
    )


def test_recorded_entries_count_only_batches_that_match_their_recorded_root_and_task() -> None:
    batch = make_batch(TASK, CHAIN_ID, 2, [entry(3), entry(4)])
    other = make_batch(TASK, CHAIN_ID, 2, [entry(5)])
    found = recorded_entries(TASK.lower(), [(batch, batch.root()), (other, batch.root())])
    assert found == {(e.device, e.update_digest, e.num_samples) for e in batch.entries}
    assert recorded_entries("0x" + "cd" * 20, [(batch, batch.root())]) == set()
    assert recorded_entries(TASK, []) == set()
