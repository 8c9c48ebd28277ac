"""Sealed blobs: updates at rest (on IPFS) readable only by chosen recipients, when secure aggregation is off.

Hybrid encryption in the style of ECIES, for several recipients at once:

1. A fresh random 32-byte data key K encrypts the plaintext with AES-256-GCM (random 12-byte nonce, associated data
   = the caller's `context`, e.g. task + round + sender, which the recipient must supply again to open).
2. One fresh ephemeral X25519 key pair E per blob. For each recipient R (address A, long-term public key R_pub, see
   `derive_encryption_key`): w = HKDF-SHA256(ECDH(E, R_pub), salt empty, info = b"fedchain/sealed/wrap" + E_pub +
   R_pub + A + context), and K is wrapped with AES-256-GCM under w (nonce all zeros: every w is used exactly once,
   since E is fresh per blob and w is bound to the recipient).
3. The blob carries a commitment to K, SHA-256(b"fedchain/sealed/commit" + K), checked after unwrapping. AES-GCM is
   not key-committing: without it, a malicious sender could wrap different keys for different recipients so that one
   ciphertext opens to different plaintexts for different aggregators. With it, every recipient that opens a given
   blob reads the same plaintext.

Blob (all integers big-endian, no pickle): magic b"FCSE" (4), version 1 (1), E_pub (32), commitment to K (32), data
nonce (12), recipient count n (2), then n entries sorted by address, strictly increasing: address (20), wrapped K
(48: 32 + GCM tag); then the ciphertext length (8) and the ciphertext (plaintext + 16-byte tag). Size: plaintext +
107 + 68 n bytes.

Anything else is refused with SealedError (a ValueError): malformed or truncated blobs, a recipient not in the blob,
a wrong key, context or tampered bytes (GCM authentication).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedchain.privacy.keys import EncryptionKey, check_address, check_public_key, ecdh, hkdf, public_bytes

SEALED_MAGIC = b"FCSE"
SEALED_VERSION = 1
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
WRAPPED_KEY_BYTES = DATA_KEY_BYTES + TAG_BYTES
MAX_RECIPIENTS = 2**16 - 1
INFO_WRAP = b"fedchain/sealed/wrap"
COMMIT_LABEL = b"fedchain/sealed/commit"
_WRAP_NONCE = bytes(NONCE_BYTES)

_HEAD = struct.Struct(">4sB32s32s12sH")  # magic, version, ephemeral public key, commitment to K, data nonce, count
_ENTRY = struct.Struct(">20s48s")  # recipient address, wrapped data key
_LENGTH = struct.Struct(">Q")  # ciphertext length


class SealedError(ValueError):
    """A sealed blob that is malformed, not addressed to this recipient, or fails authentication."""


def overhead(recipients: int) -> int:
    """Bytes a sealed blob adds to its plaintext for `recipients` recipients."""
    return _HEAD.size + recipients * _ENTRY.size + _LENGTH.size + TAG_BYTES


def _commitment(data_key: bytes) -> bytes:
    return hashlib.sha256(COMMIT_LABEL + data_key).digest()


def _wrap_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes, address: bytes, context: bytes) -> bytes:
    return hkdf(shared, INFO_WRAP + ephemeral_public + recipient_public + address + context)


def _check_context(context: bytes) -> bytes:
    if not isinstance(context, bytes | bytearray):
        raise TypeError(f"context must be bytes, got {type(context).__name__}")
    return bytes(context)


def seal(plaintext: bytes | bytearray | memoryview, recipients: Mapping[bytes, bytes], context: bytes) -> bytes:
    """Encrypt `plaintext` so that each recipient (address -> its 32-byte X25519 public key) alone can open it.

    `context` (e.g. task + round + sender) is authenticated, not stored: `open_sealed` needs the same bytes.
    ValueError for no recipients, a malformed address or a malformed or low-order public key.
    """
    context = _check_context(context)
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValueError(f"a sealed blob needs 1 to {MAX_RECIPIENTS} recipients, got {len(recipients)}")
    keys = sorted(
        (check_address(a, "recipient address"), check_public_key(pk, f"public key of 0x{bytes(a).hex()}"))
        for a, pk in recipients.items()
    )
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = public_bytes(ephemeral.public_key())
    parts = [_HEAD.pack(SEALED_MAGIC, SEALED_VERSION, ephemeral_public, _commitment(data_key), nonce, len(keys))]
    for address, public in keys:
        wrap = _wrap_key(ecdh(ephemeral, public), ephemeral_public, public, address, context)
        parts.append(_ENTRY.pack(address, AESGCM(wrap).encrypt(_WRAP_NONCE, data_key, None)))
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, context)
    parts.append(_LENGTH.pack(len(ciphertext)))
    parts.append(ciphertext)
    return b"".join(parts)


def recipients_of(blob: bytes) -> tuple[bytes, ...]:
    """The recipient addresses a sealed blob is addressed to (SealedError if malformed)."""
    return tuple(_parse(blob)[1])


def _parse(blob: bytes | bytearray | memoryview) -> tuple[tuple[bytes, bytes, bytes], dict[bytes, bytes], memoryview]:
    """((ephemeral public, commitment, nonce), {address: wrapped key}, ciphertext view) of a well-formed blob."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise SealedError(f"sealed blob: expected bytes, got {type(blob).__name__}")
    view = memoryview(blob).cast("B")
    if len(view) < _HEAD.size:
        raise SealedError(f"sealed blob: {len(view)} bytes is shorter than the header")
    magic, version, ephemeral_public, commitment, nonce, count = _HEAD.unpack_from(view, 0)
    if magic != SEALED_MAGIC:
        raise SealedError(f"sealed blob: bad magic {magic!r}, expected {SEALED_MAGIC!r}")
    if version != SEALED_VERSION:
        raise SealedError(f"sealed blob: unsupported version {version}")
    if count < 1:
        raise SealedError("sealed blob: no recipients")
    off = _HEAD.size
    if len(view) < off + count * _ENTRY.size + _LENGTH.size:
        raise SealedError(f"sealed blob: truncated in the {count} recipient entries")
    wrapped: dict[bytes, bytes] = {}
    last = b""
    for _ in range(count):
        address, key = _ENTRY.unpack_from(view, off)
        if address <= last:
            raise SealedError("sealed blob: recipients not strictly increasing")
        wrapped[address] = key
        last = address
        off += _ENTRY.size
    (length,) = _LENGTH.unpack_from(view, off)
    off += _LENGTH.size
    if length < TAG_BYTES:
        raise SealedError(f"sealed blob: a ciphertext of {length} bytes is shorter than its tag")
    if len(view) - off != length:
        raise SealedError(f"sealed blob: {len(view) - off} ciphertext bytes, the header says {length}")
    return (ephemeral_public, commitment, nonce), wrapped, view[off:]


def open_sealed(
    blob: bytes | bytearray | memoryview,
    recipient_address: bytes,
    recipient_private: EncryptionKey | X25519PrivateKey,
    context: bytes,
) -> bytes:
    """The plaintext of a sealed blob, for the recipient at `recipient_address` holding `recipient_private`.

    SealedError if the blob is malformed, not addressed to this recipient, or fails authentication (tampered bytes,
    another context, or a key that is not the recipient's).
    """
    context = _check_context(context)
    address = check_address(recipient_address, "recipient address")
    private = recipient_private.private if isinstance(recipient_private, EncryptionKey) else recipient_private
    (ephemeral_public, commitment, nonce), wrapped, ciphertext = _parse(blob)
    if address not in wrapped:
        raise SealedError(f"sealed blob: 0x{address.hex()} is not among its {len(wrapped)} recipients")
    try:
        shared = ecdh(private, ephemeral_public)
    except ValueError as exc:
        raise SealedError(f"sealed blob: bad ephemeral key ({exc})") from exc
    wrap = _wrap_key(shared, ephemeral_public, public_bytes(private.public_key()), address, context)
    try:
        data_key = AESGCM(wrap).decrypt(_WRAP_NONCE, wrapped[address], None)
    except InvalidTag as exc:
        raise SealedError(
            f"sealed blob: the data key for 0x{address.hex()} failed authentication (tampered, another context, or "
            "not this recipient's key)"
        ) from exc
    if not hmac.compare_digest(_commitment(data_key), commitment):
        raise SealedError("sealed blob: the data key does not match the blob's commitment")
    try:
        return AESGCM(data_key).decrypt(nonce, ciphertext, context)
    except InvalidTag as exc:
        raise SealedError("sealed blob: the ciphertext failed authentication (tampered, or another context)") from exc


__all__ = [
    "SEALED_MAGIC",
    "SEALED_VERSION",
    "SealedError",
    "open_sealed",
    "overhead",
    "recipients_of",
    "seal",
]
