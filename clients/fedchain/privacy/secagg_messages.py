"""Secure aggregation's wire messages (fedchain.privacy.secagg has the protocol): a device's setup (`ShareSetup`),
its masked update (`MaskedUpdate`) and a survivor's reveal (`Reveal`), their strict byte formats, and the errors of
the protocol. Pure: no chain, no IPFS, no pickle; every integer big-endian unless said otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedchain.privacy import shamir
from fedchain.privacy.keys import check_public_key
from fedchain.privacy.shamir import Share

SHARES_VERSION = 2  # 2: the round's mask public key is in the blob (1 had it registered apart)
MASKED_VERSION = 1
REVEAL_VERSION = 1
SHARES_MAGIC = b"FCSS"
MASKED_MAGIC = b"FCSM"
REVEAL_MAGIC = b"FCSR"
NONCE_BYTES = 12
TAG_BYTES = 16
# Plaintext of one holder's shares: x (2 bytes) + y of b_i (33) + y of s_i^SK (33).
SHARE_PLAINTEXT_BYTES = 2 + 2 * shamir.VALUE_BYTES
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + TAG_BYTES
KIND_SELF_MASK = 1
KIND_MASK_KEY = 2
KIND_NAMES = {KIND_SELF_MASK: "self-mask seed", KIND_MASK_KEY: "mask key"}

# header layouts (big-endian): magic, version, task, round, sender, ...
_HEAD = struct.Struct(">4sB20sQ20s")
_SHARES_HEAD = struct.Struct(">H32s32sH")  # threshold, mask public key s_i^PK, commitment to b_i, number of entries
_SHARES_ENTRY = struct.Struct(">20s12sH")  # recipient, nonce, ciphertext length
_MASKED_HEAD = struct.Struct(">I")  # number of uint32 values
_REVEAL_HEAD = struct.Struct(">H")  # number of entries
_REVEAL_ENTRY = struct.Struct(">20sB")  # peer, kind; then a 35-byte share


# -------------------------------------------------------------------------------------------------------------- errors
class SecAggError(Exception):
    """Base class of secure-aggregation failures."""


class MalformedMessage(SecAggError, ValueError):
    """Bytes that are not a valid shares blob, masked update or reveal."""


class ShareDecryptionError(SecAggError, ValueError):
    """A share ciphertext failed authentication: tampered, or not addressed to this device for this round."""


class RevealConflict(SecAggError, ValueError):
    """A reveal would disclose both secrets of one peer (its self-mask seed and its mask key)."""


class NotEnoughShares(SecAggError):
    """Fewer than `need` shares of one device's secret were revealed: the round cannot be unmasked."""

    def __init__(self, device: bytes, have: int, need: int, kind: str) -> None:
        self.device, self.have, self.need, self.kind = device, have, need, kind
        super().__init__(f"{kind} of device 0x{device.hex()}: {have} shares revealed, {need} needed")


class ReconstructionError(SecAggError):
    """The shares of a device's secret interpolate to a value that does not match its public commitment."""

    def __init__(self, device: bytes, kind: str) -> None:
        self.device, self.kind = device, kind
        super().__init__(f"{kind} of device 0x{device.hex()} reconstructed from shares does not match its commitment")


# ------------------------------------------------------------------------------------------------------------ messages
def _read_head(data: bytes, magic: bytes, expected_version: int, what: str) -> tuple[bytes, int, bytes, int]:
    """(task, round, sender, offset after the common header), or MalformedMessage."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) < _HEAD.size:
        raise MalformedMessage(f"{what}: {len(data)} bytes is shorter than the header")
    got_magic, version, task, round_id, sender = _HEAD.unpack_from(data, 0)
    if got_magic != magic:
        raise MalformedMessage(f"{what}: bad magic {got_magic!r}, expected {magic!r}")
    if version != expected_version:
        raise MalformedMessage(f"{what}: unsupported version {version}")
    return task, round_id, sender, _HEAD.size


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if offset + size > len(data):
        raise MalformedMessage(f"{what}: truncated at byte {offset} (need {size} more)")


@dataclass(frozen=True)
class ShareSetup:
    """A device's setup for one round: its mask public key s_i^PK, a commitment to b_i and its encrypted shares.

    Travels as one blob (`to_bytes`), all integers big-endian: magic "FCSS", version 2 (1 byte), task (20), round
    (8), sender (20), threshold (2), mask public key (32), commitment to b_i (32), count (2), then per holder
    (sorted by address): recipient (20), nonce (12), ciphertext length (2), ciphertext (84: x, share of b_i, share
    of s_i^SK, GCM tag). Size: 121 + 118 n bytes for n participants. No pickle.
    """

    sender: bytes
    task: bytes
    round_id: int
    threshold: int
    mask_public_key: bytes
    self_mask_commitment: bytes
    ciphertexts: tuple[tuple[bytes, bytes, bytes], ...]  # (recipient, nonce, ciphertext), sorted by recipient

    def to_bytes(self) -> bytes:
        parts = [
            _HEAD.pack(SHARES_MAGIC, SHARES_VERSION, self.task, self.round_id, self.sender),
            _SHARES_HEAD.pack(self.threshold, self.mask_public_key, self.self_mask_commitment, len(self.ciphertexts)),
        ]
        for recipient, nonce, ct in self.ciphertexts:
            parts.append(_SHARES_ENTRY.pack(recipient, nonce, len(ct)))
            parts.append(ct)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareSetup:
        """Parse a shares blob strictly; MalformedMessage for anything else."""
        what = "shares blob"
        task, round_id, sender, off = _read_head(data, SHARES_MAGIC, SHARES_VERSION, what)
        _need(data, off, _SHARES_HEAD.size, what)
        threshold, mask_public, commitment, count = _SHARES_HEAD.unpack_from(data, off)
        off += _SHARES_HEAD.size
        if count < 1 or not 1 <= threshold <= count:
            raise MalformedMessage(f"{what}: threshold {threshold} with {count} holders")
        try:
            check_public_key(mask_public, "mask public key")
        except ValueError as exc:
            raise MalformedMessage(f"{what}: {exc}") from exc
        entries = []
        for _ in range(count):
            _need(data, off, _SHARES_ENTRY.size, what)
            recipient, nonce, ct_len = _SHARES_ENTRY.unpack_from(data, off)
            off += _SHARES_ENTRY.size
            if ct_len != SHARE_CIPHERTEXT_BYTES:
                raise MalformedMessage(f"{what}: ciphertext of {ct_len} bytes, expected {SHARE_CIPHERTEXT_BYTES}")
            _need(data, off, ct_len, what)
            if entries and recipient <= entries[-1][0]:
                raise MalformedMessage(f"{what}: recipients not strictly increasing")
            entries.append((recipient, nonce, bytes(data[off : off + ct_len])))
            off += ct_len
        if off != len(data):
            raise MalformedMessage(f"{what}: {len(data) - off} trailing bytes")
        return cls(sender, task, round_id, threshold, mask_public, commitment, tuple(entries))

    def ciphertext_for(self, recipient: bytes) -> tuple[bytes, bytes]:
        for r, nonce, ct in self.ciphertexts:
            if r == recipient:
                return nonce, ct
        raise ValueError(f"the shares of 0x{self.sender.hex()} hold nothing for 0x{recipient.hex()}")


@dataclass(frozen=True, eq=False)
class MaskedUpdate:
    """y_i: a device's quantised, masked update (uint32 ring elements). Bytes: header, count, little-endian data."""

    sender: bytes
    task: bytes
    round_id: int
    vector: np.ndarray

    def to_bytes(self) -> bytes:
        head = _HEAD.pack(MASKED_MAGIC, MASKED_VERSION, self.task, self.round_id, self.sender)
        return head + _MASKED_HEAD.pack(self.vector.size) + self.vector.astype("<u4", copy=False).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedUpdate:
        what = "masked update"
        task, round_id, sender, off = _read_head(data, MASKED_MAGIC, MASKED_VERSION, what)
        _need(data, off, _MASKED_HEAD.size, what)
        (count,) = _MASKED_HEAD.unpack_from(data, off)
        off += _MASKED_HEAD.size
        if count < 1 or len(data) - off != 4 * count:
            raise MalformedMessage(f"{what}: {len(data) - off} data bytes for {count} values")
        vector = np.frombuffer(data, dtype="<u4", count=count, offset=off).astype(np.uint32)
        return cls(sender, task, round_id, vector)


@dataclass(frozen=True)
class Reveal:
    """A survivor's reveal to the aggregator: per peer, the share of b_j (j survived) or of s_j^SK (j dropped)."""

    sender: bytes
    task: bytes
    round_id: int
    self_mask_shares: Mapping[bytes, Share]
    key_shares: Mapping[bytes, Share]

    def __post_init__(self) -> None:
        both = set(self.self_mask_shares) & set(self.key_shares)
        if both:
            raise RevealConflict(f"a reveal may not hold both shares of {sorted('0x' + p.hex() for p in both)}")

    def to_bytes(self) -> bytes:
        rows = [(p, KIND_SELF_MASK, s) for p, s in self.self_mask_shares.items()]
        rows += [(p, KIND_MASK_KEY, s) for p, s in self.key_shares.items()]
        rows.sort(key=lambda r: r[0])
        parts = [
            _HEAD.pack(REVEAL_MAGIC, REVEAL_VERSION, self.task, self.round_id, self.sender),
            _REVEAL_HEAD.pack(len(rows)),
        ]
        for peer, kind, share in rows:
            parts.append(_REVEAL_ENTRY.pack(peer, kind) + share.to_bytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Reveal:
        what = "reveal"
        task, round_id, sender, off = _read_head(data, REVEAL_MAGIC, REVEAL_VERSION, what)
        _need(data, off, _REVEAL_HEAD.size, what)
        (count,) = _REVEAL_HEAD.unpack_from(data, off)
        off += _REVEAL_HEAD.size
        entry = _REVEAL_ENTRY.size + shamir.SHARE_BYTES
        if len(data) - off != count * entry:
            raise MalformedMessage(f"{what}: {len(data) - off} bytes for {count} entries")
        self_mask: dict[bytes, Share] = {}
        keys: dict[bytes, Share] = {}
        last = b""
        for _ in range(count):
            peer, kind = _REVEAL_ENTRY.unpack_from(data, off)
            if peer == last:
                raise RevealConflict(f"{what}: two shares for peer 0x{peer.hex()}")
            if peer < last:
                raise MalformedMessage(f"{what}: peers not in increasing order")
            last = peer
            try:
                share = Share.from_bytes(bytes(data[off + _REVEAL_ENTRY.size : off + entry]))
            except ValueError as exc:
                raise MalformedMessage(f"{what}: {exc}") from exc
            if kind == KIND_SELF_MASK:
                self_mask[peer] = share
            elif kind == KIND_MASK_KEY:
                keys[peer] = share
            else:
                raise MalformedMessage(f"{what}: unknown share kind {kind}")
            off += entry
        return cls(sender, task, round_id, self_mask, keys)


__all__ = [
    "KIND_MASK_KEY",
    "KIND_NAMES",
    "KIND_SELF_MASK",
    "MASKED_VERSION",
    "NONCE_BYTES",
    "REVEAL_VERSION",
    "SHARES_VERSION",
    "SHARE_CIPHERTEXT_BYTES",
    "SHARE_PLAINTEXT_BYTES",
    "MalformedMessage",
    "MaskedUpdate",
    "NotEnoughShares",
    "ReconstructionError",
    "Reveal",
    "RevealConflict",
    "SecAggError",
    "ShareDecryptionError",
    "ShareSetup",
]
