"""Relayed batches in a round's inputs: which of their entries go into the aggregate, and why the others do not.

Pure (no chain, no IPFS): the worker passes the round's UpdateBatchSubmitted records in chain order, a way to read
each batch file, and the approval of devices at one agreed block (the block that closed the round), so every
aggregator reaches the same verdicts. A batch whose file cannot be read, does not parse, or does not match what the
chain recorded (task, chain, round, entry count, sample total, Merkle root) is left out whole; otherwise each entry
is screened on its own (`fedchain.chain.batch.screen_batch`: bad signature, more samples than the task's cap,
unapproved device, device that also submitted directly, device already accepted earlier in the round).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from fedchain.chain.batch import SignedUpdate, UpdateBatch, batch_mismatch, screen_batch

REASON_BATCH_UNAVAILABLE = "batch-unavailable"
REASON_BATCH_MALFORMED = "batch-malformed"


@dataclass(frozen=True)
class BatchRecord:
    """One UpdateBatchSubmitted event."""

    relayer: str
    batch_digest: bytes
    entries_root: bytes
    entries: int
    total_samples: int
    block_number: int
    tx_hash: str
    batch_cid: str
    # The event's index in its block: with block_number, the batch's place in the round's chain order.
    log_index: int = 0


@dataclass(frozen=True)
class AcceptedEntry:
    """A batch entry that goes into the aggregate, with the batch that carried it and its place in the batch (the
    batch's entries are in chain order after the batch's own place)."""

    entry: SignedUpdate
    batch: BatchRecord
    position: int = 0


def screen_round_batches(
    task: str,
    chain_id: int,
    round_index: int,
    batches: Sequence[BatchRecord],
    read_batch: Callable[[BatchRecord], bytes | None],
    is_approved: Callable[[str], bool],
    direct_submitters: Collection[str],
    cid_of: Callable[[bytes], str],
    max_samples: int,
) -> tuple[list[AcceptedEntry], list[dict[str, Any]]]:
    """The accepted entries of the round's batches (chain order) and report records of what was left out.

    `read_batch` returns the batch file's bytes, or None when it cannot be fetched (then the batch is left out);
    `cid_of` maps an update digest to its CID for the report; `max_samples` is the task's maxSamplesPerUpdate (the
    chain bounds a batch's total by entries * cap, so an entry over the cap is excluded here, reason
    "too-many-samples").
    """
    accepted: list[AcceptedEntry] = []
    rejected: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in batches:
        whole = {
            "batch_cid": record.batch_cid,
            "relayer": record.relayer,
            "entries": record.entries,
            "num_samples": record.total_samples,
            "tx_hash": record.tx_hash,
        }
        data = read_batch(record)
        if data is None:
            rejected.append({**whole, "reason": REASON_BATCH_UNAVAILABLE})
            continue
        try:
            batch = UpdateBatch.from_json(data)
        except (ValueError, TypeError) as exc:
            rejected.append({**whole, "reason": REASON_BATCH_MALFORMED, "detail": str(exc)[:300]})
            continue
        mismatch = batch_mismatch(
            batch,
            task=task,
            chain_id=chain_id,
            round_index=round_index,
            entries_root=record.entries_root,
            entries=record.entries,
            total_samples=record.total_samples,
        )
        if mismatch is not None:
            rejected.append({**whole, "reason": mismatch})
            continue
        verdicts = screen_batch(
            batch, is_approved=is_approved, direct_submitters=direct_submitters, seen=seen, max_samples=max_samples
        )
        for position, verdict in enumerate(verdicts):
            if verdict.accepted:
                accepted.append(AcceptedEntry(verdict.entry, record, position))
            else:
                rejected.append(
                    {
                        "device": verdict.entry.device,
                        "cid": cid_of(verdict.entry.update_digest),
                        "num_samples": verdict.entry.num_samples,
                        "tx_hash": record.tx_hash,
                        "batch_cid": record.batch_cid,
                        "reason": verdict.reason,
                    }
                )
    return accepted, rejected
