"""The aggregator's screening of a round's relayed batches: whole batches left out when their file is missing,
malformed or not what the chain recorded; single entries left out with a reason; the same verdicts every time."""

from __future__ import annotations

import hashlib

from eth_account import Account
from eth_utils import keccak

from fedchain.aggregator.batches import (
    REASON_BATCH_MALFORMED,
    REASON_BATCH_UNAVAILABLE,
    BatchRecord,
    screen_round_batches,
)
from fedchain.chain.batch import (
    REASON_BAD_SIGNATURE,
    REASON_DUPLICATE,
    REASON_SUBMITTED_DIRECTLY,
    REASON_TOO_MANY_SAMPLES,
    REASON_UNAPPROVED,
    SignedUpdate,
    make_batch,
)
from fedchain.chain.signing import sign_update

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHAIN_ID = 31337
RELAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def device(i: int):
    return Account.from_key(keccak(text=f"agg-device-{i}"))


def entry(i: int, round_index: int = 2) -> SignedUpdate:
    d = digest(f"u{i}")
    return SignedUpdate(device(i).address, d, 10 + i, sign_update(device(i), CHAIN_ID, TASK, round_index, d, 10 + i))


def record_of(batch, label: str, **changes) -> BatchRecord:
    fields = {
        "relayer": RELAYER,
        "batch_digest": digest(label),
        "entries_root": batch.root(),
        "entries": len(batch.entries),
        "total_samples": batch.total_samples,
        "block_number": 7,
        "tx_hash": "0x" + digest(label).hex(),
        "batch_cid": f"cid-{label}",
    }
    fields.update(changes)
    return BatchRecord(**fields)


def screen(records, files, approved, direct=(), max_samples=2**32 - 1):
    return screen_round_batches(
        TASK,
        CHAIN_ID,
        2,
        records,
        lambda r: files.get(r.batch_cid),
        approved.__contains__,
        direct,
        lambda d: "cid-of-" + d.hex()[:8],
        max_samples,
    )


def test_entry_over_the_tasks_cap_is_left_out() -> None:
    """Review M5: the chain bounds a batch's total by entries * maxSamplesPerUpdate, so a relayed device could claim
    the whole allowance of its batch. The aggregators exclude an entry over the task's cap, with a reason; the
    device is not marked as seen, and the others still count."""
    d = digest("greedy")
    greedy = SignedUpdate(device(7).address, d, 1_000, sign_update(device(7), CHAIN_ID, TASK, 2, d, 1_000))
    batch = make_batch(TASK, CHAIN_ID, 2, [entry(0), greedy, entry(1)])
    files = {"cid-a": batch.to_json()}
    approved = {device(i).address for i in (0, 1, 7)}
    accepted, rejected = screen([record_of(batch, "a")], files, approved, max_samples=100)
    assert sorted(a.entry.device for a in accepted) == sorted([device(0).address, device(1).address])
    assert [(r["device"], r["num_samples"], r["reason"]) for r in rejected] == [
        (device(7).address, 1_000, REASON_TOO_MANY_SAMPLES)
    ]
    # at the cap it is accepted
    accepted, rejected = screen([record_of(batch, "a")], files, approved, max_samples=1_000)
    assert len(accepted) == 3 and not rejected


def test_entries_are_screened_across_the_rounds_batches() -> None:
    first = make_batch(TASK, CHAIN_ID, 2, [entry(0), entry(1), entry(2)])
    forged = SignedUpdate(device(4).address, digest("other"), 14, entry(4).signature)
    second = make_batch(TASK, CHAIN_ID, 2, [entry(1), entry(3), forged, entry(5)])
    records = [record_of(first, "a"), record_of(second, "b")]
    files = {"cid-a": first.to_json(), "cid-b": second.to_json()}
    approved = {device(i).address for i in range(6)} - {device(5).address}
    accepted, rejected = screen(records, files, approved, direct=[device(2).address])

    assert [(a.entry.device, a.batch.batch_cid) for a in accepted] == [
        (device(0).address, "cid-a"),
        (device(1).address, "cid-a"),
        (device(3).address, "cid-b"),
    ]
    reasons = {(r["device"], r["batch_cid"]): r["reason"] for r in rejected}
    assert reasons == {
        (device(2).address, "cid-a"): REASON_SUBMITTED_DIRECTLY,
        (device(1).address, "cid-b"): REASON_DUPLICATE,
        (device(4).address, "cid-b"): REASON_BAD_SIGNATURE,
        (device(5).address, "cid-b"): REASON_UNAPPROVED,
    }
    # deterministic: the same inputs give the same verdicts
    assert screen(records, files, approved, direct=[device(2).address]) == (accepted, rejected)
    # each accepted entry keeps its place in its batch: with the batch's (block, log index), its chain order, which
    # decides which of two submissions of one digest counts (fedchain.aggregator.screening)
    batches = {"cid-a": first, "cid-b": second}
    for a in accepted:
        assert batches[a.batch.batch_cid].entries[a.position] == a.entry


def test_whole_batches_left_out() -> None:
    good = make_batch(TASK, CHAIN_ID, 2, [entry(0)])
    wrong_round = make_batch(TASK, CHAIN_ID, 3, [entry(1, round_index=3)])
    records = [
        record_of(good, "missing"),
        record_of(good, "garbage"),
        record_of(good, "root", entries_root=digest("another root")),
        record_of(good, "count", entries=2),
        record_of(wrong_round, "round"),
        record_of(good, "ok"),
    ]
    files = {
        "cid-garbage": b"{not json",
        "cid-root": good.to_json(),
        "cid-count": good.to_json(),
        "cid-round": wrong_round.to_json(),
        "cid-ok": good.to_json(),
    }
    accepted, rejected = screen(records, files, {device(0).address, device(1).address})
    assert [r["reason"] for r in rejected] == [
        REASON_BATCH_UNAVAILABLE,
        REASON_BATCH_MALFORMED,
        "root-mismatch",
        "count-mismatch",
        "wrong-task-chain-or-round",
    ]
    assert [a.entry.device for a in accepted] == [device(0).address]
