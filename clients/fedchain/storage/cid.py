"""CIDv0 handling: the chain stores only the 32-byte sha256 digest of each CIDv0 ("Qm…")."""

from __future__ import annotations

import re

import base58

from fedchain.storage.dagpb import DIGEST_LEN, SHA2_256, build_file_dag
from fedchain.storage.errors import ContentMismatch, InvalidCid

_PREFIX = bytes((SHA2_256, DIGEST_LEN))
_CIDV0_LEN = 46  # base58btc of 34 bytes starting 0x12 0x20 is always 46 characters, starting "Qm"
_HEX_DIGEST = re.compile(r"0x[0-9a-fA-F]{64}")


def cid_to_digest(cid: str) -> bytes:
    """The 32-byte sha256 digest inside a CIDv0; InvalidCid for anything else (CIDv1 included)."""
    if not isinstance(cid, str):
        raise InvalidCid(f"expected a CIDv0 string, got {type(cid).__name__}")
    shown = cid if len(cid) <= 80 else cid[:77] + "..."
    if len(cid) != _CIDV0_LEN or not cid.startswith("Qm"):
        kind = "a CIDv1" if cid[:1] in ("b", "z", "f", "B", "Z", "F", "u", "m") else "not a CIDv0"
        raise InvalidCid(
            f"expected a CIDv0 (46 characters starting 'Qm'), got {shown!r} ({len(cid)} characters, {kind})"
        )
    try:
        raw = base58.b58decode(cid.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidCid(f"expected base58btc in CIDv0 {shown!r}: {exc}") from exc
    if len(raw) != len(_PREFIX) + DIGEST_LEN:
        raise InvalidCid(f"expected a 34-byte multihash in {shown!r}, found {len(raw)} bytes")
    if raw[:2] != _PREFIX:
        raise InvalidCid(f"expected multihash prefix 0x1220 (sha2-256, 32 bytes) in {shown!r}, found 0x{raw[:2].hex()}")
    # Base58 has no canonical-form check of its own; re-encoding catches odd spellings of the same bytes.
    if base58.b58encode(raw).decode("ascii") != cid:
        raise InvalidCid(f"expected canonical base58btc, {shown!r} is not")
    return raw[2:]


def digest_to_cid(digest: bytes | str) -> str:
    """CIDv0 for a 32-byte sha256 digest, given as bytes or as a 0x-prefixed 64-digit hex string."""
    if isinstance(digest, str):
        if not _HEX_DIGEST.fullmatch(digest):
            raise InvalidCid(f"expected a 0x-prefixed 64-digit hex digest, got {digest[:80]!r}")
        raw = bytes.fromhex(digest[2:])
    elif isinstance(digest, bytes | bytearray | memoryview):
        raw = bytes(digest)
    else:
        raise InvalidCid(f"expected 32 bytes or a 0x-prefixed hex string, got {type(digest).__name__}")
    if len(raw) != DIGEST_LEN:
        raise InvalidCid(f"expected a 32-byte sha256 digest, got {len(raw)} bytes")
    return base58.b58encode(_PREFIX + raw).decode("ascii")


def compute_cid(data: bytes) -> str:
    """The CIDv0 that Kubo's `ipfs add` (default settings) gives a file with this content."""
    return base58.b58encode(build_file_dag(data if isinstance(data, bytes) else bytes(data)).multihash).decode("ascii")


def verify(data: bytes, cid: str) -> None:
    """Raise ContentMismatch unless `data` is exactly the file content addressed by `cid`."""
    cid_to_digest(cid)  # a malformed CID is the caller's error, not a content mismatch
    actual = compute_cid(data)
    if actual != cid:
        raise ContentMismatch(f"expected content with CID {cid}, found {len(data)} bytes with CID {actual}")
