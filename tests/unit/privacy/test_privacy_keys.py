"""The long-term encryption key, per-round mask keys and self-mask seeds, and the HKDF-derived seeds and share keys."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedchain.privacy import EncryptionKey, derive_encryption_key, derive_round_keys
from fedchain.privacy.keys import check_public_key, ecdh, mask_public_of, pair_seed, share_key

TASK = bytes.fromhex("01" * 20)
A, B = bytes.fromhex("aa" * 20), bytes.fromhex("0b" * 20)
SECRET_A, SECRET_B = b"\x11" * 32, b"\x22" * 32
# Points of small order on Curve25519 (u = 0, 1, and a point of order 8): every ECDH secret with them is zero.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def test_round_keys_are_deterministic_per_round_and_distinct_across_rounds_tasks_and_secrets() -> None:
    k1, k2 = derive_round_keys(SECRET_A, TASK, 5), derive_round_keys(SECRET_A, TASK, 5)
    assert k1.mask_public == k2.mask_public and k1.self_mask_seed == k2.self_mask_seed
    assert k1.mask_secret == k2.mask_secret
    assert len(k1.mask_public) == len(k1.self_mask_seed) == len(k1.mask_secret) == 32
    others = [
        derive_round_keys(SECRET_A, TASK, 6),
        derive_round_keys(SECRET_A, b"\x02" * 20, 5),
        derive_round_keys(SECRET_B, TASK, 5),
    ]
    for other in others:
        assert other.mask_public != k1.mask_public
        assert other.self_mask_seed != k1.self_mask_seed
    assert mask_public_of(k1.mask_secret) == k1.mask_public
    assert k1.mask_secret == _hkdf(SECRET_A, b"fedchain/secagg/x25519/mask" + TASK + (5).to_bytes(8, "big"))
    assert k1.self_mask_seed == _hkdf(SECRET_A, b"fedchain/secagg/selfmask" + TASK + (5).to_bytes(8, "big"))
    assert k1.mask_secret.hex() not in repr(k1) and k1.self_mask_seed.hex() not in repr(k1)


def test_the_encryption_key_is_long_term_deterministic_and_follows_the_specified_hkdf() -> None:
    key = derive_encryption_key(SECRET_A)
    assert isinstance(key, EncryptionKey) and len(key.public) == 32
    assert derive_encryption_key(bytearray(SECRET_A)).public == key.public  # a restart derives it again
    expected = X25519PrivateKey.from_private_bytes(_hkdf(SECRET_A, b"fedchain/secagg/x25519/cipher"))
    assert key.private.private_bytes_raw() == expected.private_bytes_raw()
    assert key.public == expected.public_key().public_bytes_raw()
    assert derive_encryption_key(SECRET_B).public != key.public
    # no task or round in it, and unrelated to every round's mask key
    for round_id in range(4):
        assert derive_round_keys(SECRET_A, TASK, round_id).mask_public != key.public
    assert key.private.private_bytes_raw().hex() not in repr(key) and key.public.hex() in repr(key)


@pytest.mark.parametrize(
    ("secret", "task", "round_id"),
    [
        (b"\x11" * 31, TASK, 1),
        ("not bytes" * 4, TASK, 1),
        (SECRET_A, b"\x01" * 19, 1),
        (SECRET_A, TASK, -1),
        (SECRET_A, TASK, 2**64),
        (SECRET_A, TASK, True),
    ],
)
def test_bad_derivation_inputs_are_refused(secret: bytes, task: bytes, round_id: int) -> None:
    with pytest.raises(ValueError):
        derive_round_keys(secret, task, round_id)


@pytest.mark.parametrize("secret", [b"", b"\x11" * 31, "x" * 32])
def test_short_or_non_bytes_secrets_give_no_encryption_key(secret: bytes) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        derive_encryption_key(secret)


def test_pairwise_seed_is_symmetric_and_follows_the_specified_hkdf() -> None:
    ka, kb = derive_round_keys(SECRET_A, TASK, 9), derive_round_keys(SECRET_B, TASK, 9)
    shared_a = ecdh(ka.mask, kb.mask_public)
    shared_b = ecdh(kb.mask, ka.mask_public)
    assert shared_a == shared_b
    seed = pair_seed(shared_a, TASK, 9, A, B)
    assert seed == pair_seed(shared_b, TASK, 9, B, A)
    info = b"fedchain/secagg/pair" + TASK + (9).to_bytes(8, "big") + B + A  # B < A
    assert seed == _hkdf(shared_a, info)
    assert pair_seed(shared_a, TASK, 10, A, B) != seed
    with pytest.raises(ValueError):
        pair_seed(shared_a, TASK, 9, A, A)


def test_share_keys_depend_on_direction_and_round_although_the_cipher_keys_are_long_term() -> None:
    ka, kb = derive_encryption_key(SECRET_A), derive_encryption_key(SECRET_B)
    shared = ecdh(ka.private, kb.public)
    assert shared == ecdh(kb.private, ka.public)
    assert share_key(shared, TASK, 9, A, B) != share_key(shared, TASK, 9, B, A)
    keys = {share_key(shared, TASK, r, A, B) for r in range(50)} | {share_key(shared, b"\x03" * 20, 9, A, B)}
    assert len(keys) == 51
    info = b"fedchain/secagg/share" + TASK + (9).to_bytes(8, "big") + A + B
    assert share_key(shared, TASK, 9, A, B) == _hkdf(shared, info)
    # the cipher and mask keys give unrelated secrets
    ra, rb = derive_round_keys(SECRET_A, TASK, 9), derive_round_keys(SECRET_B, TASK, 9)
    assert shared != ecdh(ra.mask, rb.mask_public)


def test_low_order_or_malformed_peer_keys_are_refused() -> None:
    keys = derive_round_keys(SECRET_A, TASK, 1)
    for point in LOW_ORDER:
        with pytest.raises(ValueError):
            ecdh(keys.mask, point)  # the shared secret would be all zeros
        with pytest.raises(ValueError, match="low-order"):
            check_public_key(point)
    with pytest.raises(ValueError):
        ecdh(keys.mask, b"\x01" * 31)
    for bad in (b"\x01" * 31, b"\x01" * 33, "x" * 32):
        with pytest.raises(ValueError, match="32 bytes"):
            check_public_key(bad)  # type: ignore[arg-type]
    assert check_public_key(keys.mask_public) == keys.mask_public
    assert check_public_key(bytearray(derive_encryption_key(SECRET_B).public)) == derive_encryption_key(SECRET_B).public
