"""Sealed blobs: updates at rest that only their recipients (aggregators) can open, and nothing else."""

from __future__ import annotations

import hashlib
import struct
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedchain.privacy import EncryptionKey, SealedError, derive_encryption_key, open_sealed, seal
from fedchain.privacy.keys import ecdh
from fedchain.privacy.sealed import SEALED_VERSION, _wrap_key, overhead, recipients_of

CONTEXT = bytes.fromhex("5a" * 20) + (7).to_bytes(8, "big") + bytes.fromhex("c3" * 20)  # task + round + sender
HEAD = 4 + 1 + 32 + 32 + 12 + 2  # magic, version, ephemeral key, commitment, nonce, count
ENTRY = 20 + 48


def _address(i: int) -> bytes:
    return hashlib.sha256(b"aggregator" + bytes([i])).digest()[:20]


def _key(i: int) -> EncryptionKey:
    return derive_encryption_key(hashlib.sha256(b"aggregator secret" + bytes([i])).digest())


KEYS = {_address(i): _key(i) for i in range(3)}
PUBLIC = {a: k.public for a, k in KEYS.items()}
SORTED = sorted(KEYS)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _float_payload(size: int = 100_000) -> bytes:
    t = np.linspace(0, 30 * np.pi, size)
    update = 0.01 * np.sin(t) + np.random.default_rng(3).normal(0, 1e-3, size)
    return update.astype(np.float32).tobytes()


def test_every_recipient_opens_the_blob() -> None:
    plaintext = _float_payload(1_000)
    blob = seal(plaintext, PUBLIC, CONTEXT)
    assert len(blob) == len(plaintext) + overhead(3) == len(plaintext) + 107 + 3 * 68
    assert blob[:4] == b"FCSE" and blob[4] == SEALED_VERSION == 1
    assert recipients_of(blob) == tuple(SORTED)
    for address, key in KEYS.items():
        assert open_sealed(blob, address, key, CONTEXT) == plaintext
        assert open_sealed(bytearray(blob), address, key.private, bytearray(CONTEXT)) == plaintext
        assert open_sealed(memoryview(blob), address, key, CONTEXT) == plaintext
    # any bytes-like plaintext, an empty one, a single recipient
    assert open_sealed(seal(memoryview(plaintext), PUBLIC, CONTEXT), SORTED[1], KEYS[SORTED[1]], CONTEXT) == plaintext
    only = {SORTED[0]: PUBLIC[SORTED[0]]}
    assert open_sealed(seal(b"", only, b""), SORTED[0], KEYS[SORTED[0]], b"") == b""
    # fresh data key, nonce and ephemeral key every time
    again = seal(plaintext, PUBLIC, CONTEXT)
    assert again != blob and again[5:37] != blob[5:37]


def test_a_non_recipient_is_refused() -> None:
    blob = seal(b"weights", {a: PUBLIC[a] for a in SORTED[:2]}, CONTEXT)
    outsider = SORTED[2]
    with pytest.raises(SealedError, match="not among its 2 recipients"):
        open_sealed(blob, outsider, KEYS[outsider], CONTEXT)
    # a listed address with another party's key, or a fresh key
    with pytest.raises(SealedError, match="failed authentication"):
        open_sealed(blob, SORTED[0], KEYS[outsider], CONTEXT)
    with pytest.raises(SealedError, match="failed authentication"):
        open_sealed(blob, SORTED[0], X25519PrivateKey.generate(), CONTEXT)
    # one recipient's key under the other recipient's address: the wrap is bound to the address
    with pytest.raises(SealedError, match="failed authentication"):
        open_sealed(blob, SORTED[1], KEYS[SORTED[0]], CONTEXT)
    with pytest.raises(ValueError, match="recipient address"):
        open_sealed(blob, b"\x01" * 19, KEYS[SORTED[0]], CONTEXT)


def test_tampered_blobs_and_another_context_are_refused() -> None:
    plaintext = _float_payload(256)
    blob = seal(plaintext, PUBLIC, CONTEXT)
    me = SORTED[1]
    mine = HEAD + ENTRY  # my entry: address, then the wrapped data key
    regions = {
        "ephemeral key": 5,
        "commitment": 37,
        "data nonce": 69,
        "wrapped key": mine + 20,
        "wrap tag": mine + ENTRY - 1,
        "ciphertext": HEAD + 3 * ENTRY + 8 + 100,
        "data tag": len(blob) - 1,
    }
    for name, index in regions.items():
        with pytest.raises(SealedError):
            open_sealed(_flip(blob, index), me, KEYS[me], CONTEXT)
            pytest.fail(name)
    for context in (b"", CONTEXT[:-1], _flip(CONTEXT, 30), CONTEXT + b"\x00"):
        with pytest.raises(SealedError, match="failed authentication"):
            open_sealed(blob, me, KEYS[me], context)
    # a low-order ephemeral key is refused as such
    with pytest.raises(SealedError, match="ephemeral"):
        open_sealed(blob[:5] + bytes(32) + blob[37:], me, KEYS[me], CONTEXT)
    assert open_sealed(blob, me, KEYS[me], CONTEXT) == plaintext


def test_every_recipient_reads_the_same_plaintext_or_none() -> None:
    # A dishonest sender wraps another data key for one recipient. AES-GCM is not key-committing: it could craft one
    # ciphertext that opens under both keys, to different plaintexts. The commitment makes that recipient refuse.
    blob = seal(b"update", PUBLIC, CONTEXT)
    victim = SORTED[2]
    other_key = AESGCM.generate_key(bit_length=256)
    # the sender knows the ephemeral private key; here we make a new one and rewrite the victim's wrap with it
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    wrap = _wrap_key(ecdh(ephemeral, PUBLIC[victim]), ephemeral_public, PUBLIC[victim], victim, CONTEXT)
    entry = HEAD + 2 * ENTRY
    forged = blob[:5] + ephemeral_public + blob[37:entry] + victim
    forged += AESGCM(wrap).encrypt(bytes(12), other_key, None) + blob[entry + ENTRY :]
    with pytest.raises(SealedError, match="commitment"):
        open_sealed(forged, victim, KEYS[victim], CONTEXT)


def _malformed(blob: bytes) -> dict[str, object]:
    entries = HEAD + 3 * ENTRY
    return {
        "empty": b"",
        "short": blob[: HEAD - 1],
        "magic": b"FCSS" + blob[4:],
        "version": blob[:4] + b"\x02" + blob[5:],
        "no recipients": blob[: HEAD - 2] + struct.pack(">H", 0) + blob[HEAD:],
        "more recipients than entries": blob[: HEAD - 2] + struct.pack(">H", 60_000) + blob[HEAD:],
        "order": blob[:HEAD]
        + blob[HEAD + ENTRY : HEAD + 2 * ENTRY]
        + blob[HEAD : HEAD + ENTRY]
        + blob[HEAD + 2 * ENTRY :],
        "duplicate": blob[:HEAD] + blob[HEAD : HEAD + ENTRY] * 2 + blob[HEAD + 2 * ENTRY :],
        "length": blob[:entries] + struct.pack(">Q", len(blob) - entries - 8 + 1) + blob[entries + 8 :],
        "short ciphertext": blob[:entries] + struct.pack(">Q", 15) + bytes(15),
        "trailing": blob + b"\x00",
        "not bytes": "FCSE" + "x" * 300,
    }


def test_malformed_or_truncated_blobs_are_refused() -> None:
    blob = seal(b"0123456789", PUBLIC, CONTEXT)
    me = SORTED[0]
    for name, bad in _malformed(blob).items():
        with pytest.raises(SealedError):
            open_sealed(bad, me, KEYS[me], CONTEXT)  # type: ignore[arg-type]
            pytest.fail(name)
    for cut in range(len(blob)):
        with pytest.raises(SealedError):
            open_sealed(blob[:cut], me, KEYS[me], CONTEXT)
    with pytest.raises(SealedError):
        recipients_of(blob[:-1])
    assert issubclass(SealedError, ValueError)


def test_bad_recipients_or_context_are_refused_when_sealing() -> None:
    good = PUBLIC[SORTED[0]]
    with pytest.raises(ValueError, match="1 to"):
        seal(b"x", {}, CONTEXT)
    with pytest.raises(ValueError, match="recipient address"):
        seal(b"x", {b"\x01" * 21: good}, CONTEXT)
    with pytest.raises(ValueError, match="low-order"):
        seal(b"x", {SORTED[0]: bytes(32)}, CONTEXT)
    with pytest.raises(ValueError, match="32 bytes"):
        seal(b"x", {SORTED[0]: good[:31]}, CONTEXT)
    with pytest.raises(TypeError):
        seal(b"x", PUBLIC, "context")  # type: ignore[arg-type]


def test_the_ciphertext_neither_contains_nor_follows_the_plaintext() -> None:
    plaintext = _float_payload()
    blob = seal(plaintext, PUBLIC, CONTEXT)
    body = blob[HEAD + 3 * ENTRY + 8 :]
    assert plaintext not in blob
    for start in range(0, len(plaintext) - 16, 40_000):
        assert plaintext[start : start + 16] not in blob
    values = np.frombuffer(plaintext, dtype=np.float32)
    # the float32 bytes are far from uniform (small values share exponents); the ciphertext bytes are uniform
    cipher_bytes = np.frombuffer(body[: len(plaintext)], dtype=np.uint8)
    plain_bytes = np.frombuffer(plaintext, dtype=np.uint8)
    expected = cipher_bytes.size / 256
    chi2_cipher = float(((np.bincount(cipher_bytes, minlength=256) - expected) ** 2 / expected).sum())
    chi2_plain = float(((np.bincount(plain_bytes, minlength=256) - expected) ** 2 / expected).sum())
    assert chi2_cipher < 400 < chi2_plain
    assert abs(np.corrcoef(cipher_bytes.astype(np.float64), plain_bytes.astype(np.float64))[0, 1]) < 0.02
    # read as float32, the ciphertext does not follow the update either
    words = np.frombuffer(body[: len(plaintext)], dtype="<u4").astype(np.float64)
    assert abs(np.corrcoef(words, values.astype(np.float64))[0, 1]) < 0.02
    # and two seals of one plaintext share nothing beyond chance
    other = seal(plaintext, PUBLIC, CONTEXT)[HEAD + 3 * ENTRY + 8 :]
    same = np.count_nonzero(np.frombuffer(body, np.uint8) == np.frombuffer(other, np.uint8))
    assert same < 2 * len(body) / 256


def test_key_derivation_is_deterministic_so_a_restarted_aggregator_still_opens() -> None:
    secret = b"\x07" * 32
    blob = seal(b"kept", {SORTED[0]: derive_encryption_key(secret).public}, CONTEXT)
    restarted = derive_encryption_key(secret)
    assert open_sealed(blob, SORTED[0], restarted, CONTEXT) == b"kept"
    assert derive_encryption_key(b"\x08" * 32).public != restarted.public


def test_four_megabytes_for_three_recipients_seal_and_open_quickly() -> None:
    plaintext = np.random.default_rng(0).normal(0, 0.01, 1_000_000).astype(np.float32).tobytes()
    assert len(plaintext) == 4_000_000
    seal_s = open_s = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        blob = seal(plaintext, PUBLIC, CONTEXT)
        middle = time.perf_counter()
        opened = open_sealed(blob, SORTED[2], KEYS[SORTED[2]], CONTEXT)
        seal_s, open_s = min(seal_s, middle - start), min(open_s, time.perf_counter() - middle)
        assert opened == plaintext
    # about 5 ms each on an idle machine; the bound only catches gross regressions on a loaded one
    assert seal_s < 0.5 and open_s < 0.5
