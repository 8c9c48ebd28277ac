"""Relayed batches of signed updates: the entries, the batch file's canonical JSON, and the deterministic screening
every aggregator applies to a batch's entries.

A batch file (on IPFS; its CIDv0's sha256 digest is the `batchDigest` of `submitUpdateBatch`) is canonical JSON:

    {"chainId":31337,"entries":[{"device":"0x…","numSamples":100,"signature":"0x…","updateDigest":"0x…"},…],
     "format":"fedchain-update-batch/1","round":3,"task":"0x…"}

keys sorted, no spaces, addresses checksummed, bytes as lowercase 0x-hex, entries sorted by device address
(ascending as 20-byte numbers). The entries' Merkle root (`merkle.py`) is the batch's `entriesRoot`. Pure: no node,
no IPFS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import to_canonical_address, to_checksum_address

from fedchain.chain.merkle import batch_leaf, merkle_proof, merkle_root
from fedchain.chain.signing import recover_update_signer
from fedchain.protocol.canonical_json import canonical_json

BATCH_FORMAT = "fedchain-update-batch/1"

# Why an entry is left out of the aggregate (EntryVerdict.reason); the first rule that applies wins, in this order.
REASON_BAD_SIGNATURE = "bad-signature"  # does not recover to the entry's device (or does not recover at all)
REASON_UNAPPROVED = "unapproved-device"  # the device is not an approved device of the task
REASON_SUBMITTED_DIRECTLY = "submitted-directly"  # the device also called submitUpdate in the round
REASON_DUPLICATE = "duplicate-device"  # the device already has an accepted entry earlier in the round
REASON_TOO_MANY_SAMPLES = "too-many-samples"  # claims more samples than the task's maxSamplesPerUpdate


@dataclass(frozen=True)
class SignedUpdate:
    """One device's update, signed for a relayer (see `signing.sign_update`)."""

    device: str
    update_digest: bytes
    num_samples: int
    signature: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", to_checksum_address(self.device))
        object.__setattr__(self, "update_digest", bytes(self.update_digest))
        object.__setattr__(self, "signature", bytes(self.signature))
        if len(self.update_digest) != 32:
            raise ValueError("update_digest must be 32 bytes")
        if not 0 <= self.num_samples < 2**64:
            raise ValueError(f"num_samples must fit a uint64, got {self.num_samples}")

    def leaf(self) -> bytes:
        return batch_leaf(self.device, self.update_digest, self.num_samples, self.signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "numSamples": self.num_samples,
            "signature": "0x" + self.signature.hex(),
            "updateDigest": "0x" + self.update_digest.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedUpdate:
        if set(data) != {"device", "numSamples", "signature", "updateDigest"}:
            raise ValueError(f"a batch entry has exactly device, numSamples, signature, updateDigest: {sorted(data)}")
        num_samples = data["numSamples"]
        if not isinstance(num_samples, int) or isinstance(num_samples, bool):
            raise ValueError("numSamples must be an integer")
        return cls(
            device=_address(data["device"]),
            update_digest=_hex(data["updateDigest"]),
            num_samples=num_samples,
            signature=_hex(data["signature"]),
        )


def _device_key(entry: SignedUpdate) -> bytes:
    return to_canonical_address(entry.device)


def _hex(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or value != value.lower():
        raise ValueError(f"expected lowercase 0x-hex, got {value!r}")
    return bytes.fromhex(value[2:])


def _address(value: Any) -> str:
    if not isinstance(value, str) or to_checksum_address(value) != value:
        raise ValueError(f"expected a checksummed address, got {value!r}")
    return value


@dataclass(frozen=True)
class UpdateBatch:
    """A relayer's batch for one round of one task: entries sorted by device address."""

    task: str
    chain_id: int
    round: int
    entries: tuple[SignedUpdate, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", to_checksum_address(self.task))
        object.__setattr__(self, "entries", tuple(self.entries))
        if not self.entries:
            raise ValueError("a batch needs at least one entry")
        if not 0 < self.round < 2**32:
            raise ValueError(f"round must be in [1, 2^32), got {self.round}")
        keys = [_device_key(e) for e in self.entries]
        if keys != sorted(keys):
            raise ValueError("batch entries must be sorted by device address (use make_batch)")

    @property
    def total_samples(self) -> int:
        return sum(e.num_samples for e in self.entries)

    def leaves(self) -> list[bytes]:
        return [e.leaf() for e in self.entries]

    def root(self) -> bytes:
        """The `entriesRoot` of submitUpdateBatch."""
        return merkle_root(self.leaves())

    def proof(self, index: int) -> list[bytes]:
        """The inclusion proof of entry `index` (for `verifyBatchEntry`)."""
        return merkle_proof(self.leaves(), index)

    def to_json(self) -> bytes:
        """The canonical batch file."""
        doc = {
            "chainId": self.chain_id,
            "entries": [e.to_json() for e in self.entries],
            "format": BATCH_FORMAT,
            "round": self.round,
            "task": self.task,
        }
        return canonical_json(doc, ascii_only=True, allow_nan=True)

    @classmethod
    def from_json(cls, data: bytes | str) -> UpdateBatch:
        """Parse a batch file; ValueError unless it is well formed (canonical spacing is not required)."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) != {"chainId", "entries", "format", "round", "task"}:
            raise ValueError("a batch file has exactly chainId, entries, format, round, task")
        if doc["format"] != BATCH_FORMAT:
            raise ValueError(f"unknown batch format {doc['format']!r}")
        if not isinstance(doc["entries"], list):
            raise ValueError("entries must be a list")
        for key in ("chainId", "round"):
            if not isinstance(doc[key], int) or isinstance(doc[key], bool):
                raise ValueError(f"{key} must be an integer")
        return cls(
            task=_address(doc["task"]),
            chain_id=doc["chainId"],
            round=doc["round"],
            entries=tuple(SignedUpdate.from_json(e) for e in doc["entries"]),
        )


def make_batch(task: str, chain_id: int, round_index: int, entries: Iterable[SignedUpdate]) -> UpdateBatch:
    """A batch of `entries`, sorted by device address (stable: entries of one device keep their order)."""
    return UpdateBatch(task, chain_id, round_index, tuple(sorted(entries, key=_device_key)))


@dataclass(frozen=True)
class EntryVerdict:
    """Whether one batch entry goes into the aggregate, and if not, why."""

    entry: SignedUpdate
    accepted: bool
    reason: str | None = None


def batch_mismatch(
    batch: UpdateBatch,
    *,
    task: str,
    chain_id: int,
    round_index: int,
    entries_root: bytes,
    entries: int,
    total_samples: int,
) -> str | None:
    """Why the batch file does not match what `UpdateBatchSubmitted` recorded (then the whole batch is left out:
    the chain bound the relayer to another file), or None when it matches."""
    if to_checksum_address(task) != batch.task or chain_id != batch.chain_id or round_index != batch.round:
        return "wrong-task-chain-or-round"
    if len(batch.entries) != entries or batch.total_samples != total_samples:
        return "count-mismatch"
    if batch.root() != bytes(entries_root):
        return "root-mismatch"
    return None


def screen_batch(
    batch: UpdateBatch,
    *,
    is_approved: Callable[[str], bool],
    direct_submitters: Collection[str],
    seen: set[str],
    max_samples: int | None = None,
) -> list[EntryVerdict]:
    """The verdict on every entry of `batch`, deterministically, in entry order.

    An entry is excluded with a reason when (first rule wins): its signature does not recover to its device for
    the batch's task, round and chain (REASON_BAD_SIGNATURE); it claims more samples than the task's cap
    `max_samples` (maxSamplesPerUpdate; the chain bounds only the batch's total) (REASON_TOO_MANY_SAMPLES); its
    device is not approved (`is_approved`, read at
    one agreed block, e.g. the block that closed the round) (REASON_UNAPPROVED); its device also submitted
    directly in the round (REASON_SUBMITTED_DIRECTLY); or its device already has an accepted entry (`seen`:
    devices accepted from earlier batches of the round, in chain order; updated in place) (REASON_DUPLICATE).
    Apply it to the round's batches in chain order, passing the same `seen`.
    """
    direct = {to_checksum_address(d) for d in direct_submitters}
    verdicts = []
    for entry in batch.entries:
        signer = recover_update_signer(
            batch.chain_id, batch.task, batch.round, entry.update_digest, entry.num_samples, entry.signature
        )
        if signer != entry.device:
            reason: str | None = REASON_BAD_SIGNATURE
        elif max_samples is not None and entry.num_samples > max_samples:
            reason = REASON_TOO_MANY_SAMPLES
        elif not is_approved(entry.device):
            reason = REASON_UNAPPROVED
        elif entry.device in direct:
            reason = REASON_SUBMITTED_DIRECTLY
        elif entry.device in seen:
            reason = REASON_DUPLICATE
        else:
            reason = None
            seen.add(entry.device)
        verdicts.append(EntryVerdict(entry, reason is None, reason))
    return verdicts


def accepted_entries(verdicts: Sequence[EntryVerdict]) -> list[SignedUpdate]:
    return [v.entry for v in verdicts if v.accepted]
