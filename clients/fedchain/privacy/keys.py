"""Keys of the privacy layer: a long-term X25519 encryption key, and per-round mask keys and self-mask seeds.

Everything is derived with HKDF-SHA256 (empty salt) from one secret of at least 32 bytes (for example the bytes of
the party's Ethereum private key), so a restarted device or aggregator derives the same keys again and nothing has
to be stored:

- the long-term *encryption* key pair (`derive_encryption_key`, the cipher key c_i of Bonawitz et al. 2017):
  info b"fedchain/secagg/x25519/cipher", with no task or round. Its public key is registered once on chain as a
  bytes32 (the registry is the key directory). A device uses it only in ECDH with its peers' encryption keys to
  encrypt Shamir shares (`share_key` binds task, round, sender and recipient, so every round and direction has its
  own AES key); an aggregator uses its own to open sealed updates (fedchain.privacy.sealed). Its secret key is never
  shared nor revealed, which is what makes reusing it across rounds safe.
- the per-round *mask* key pair (s_i): info b"fedchain/secagg/x25519/mask" + task + round. Its ECDH secrets give the
  pairwise mask seeds. Its secret key is Shamir-shared and reconstructed by the aggregator if the device drops out,
  so it must be fresh every round: a revealed long-lived mask key would expose every later round in which the device
  survives (its b_i is revealed then). Its public key travels inside the device's setup blob, not on its own.
- the per-round self-mask seed b_i: info b"fedchain/secagg/selfmask" + task + round. Shared too, reconstructed if the
  device survives.

The encryption and mask keys must stay separate: the aggregator learns s_i^SK when i drops out, and if that key also
decrypted the shares i received, enough drop-outs would let it rebuild a survivor's mask key as well as its
(legitimately revealed) self-mask, and so unmask that survivor's update.

Deriving instead of drawing at random makes restarts safe, but it ties the masks to (task, round): a device must
never submit two different masked updates, or reveal for two different survivor sets, under one (task, round). If a
round can be re-run under the same number, the number passed here must include the attempt.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_MIN_BYTES = 32
DEVICE_SECRET_MIN_BYTES = SECRET_MIN_BYTES
ADDRESS_BYTES = 20
KEY_BYTES = 32
MAX_ROUND = 2**64 - 1

INFO_KEY = b"fedchain/secagg/x25519"
INFO_CIPHER = INFO_KEY + b"/cipher"
INFO_MASK = INFO_KEY + b"/mask"
INFO_SELF_MASK = b"fedchain/secagg/selfmask"
INFO_PAIR = b"fedchain/secagg/pair"
INFO_SHARE = b"fedchain/secagg/share"

# A fixed clamped scalar: X25519 with it yields all zeros exactly for the low-order points (see `check_public_key`).
_PROBE = X25519PrivateKey.from_private_bytes(bytes([8]) + bytes(30) + bytes([64]))


def hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 with an empty salt."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def check_address(value: bytes, what: str = "address") -> bytes:
    """`value` if it is 20 bytes (an Ethereum address), else ValueError."""
    if not isinstance(value, bytes | bytearray) or len(value) != ADDRESS_BYTES:
        raise ValueError(f"{what} must be {ADDRESS_BYTES} bytes, got {value!r}")
    return bytes(value)


def check_public_key(value: bytes, what: str = "X25519 public key") -> bytes:
    """`value` if it is a usable 32-byte X25519 public key, else ValueError (wrong size, or a low-order point).

    A low-order point would make every ECDH secret with it all zeros (public), for any private key.
    """
    if not isinstance(value, bytes | bytearray) or len(value) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes, got {value!r}")
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(bytes(value)))
    except ValueError as exc:
        raise ValueError(f"{what} 0x{bytes(value).hex()} is a low-order point") from exc
    return bytes(value)


def round_bytes(round_id: int) -> bytes:
    """The round number as 8 bytes big-endian."""
    if not isinstance(round_id, int) or isinstance(round_id, bool) or not 0 <= round_id <= MAX_ROUND:
        raise ValueError(f"round must be an int in [0, 2^64), got {round_id!r}")
    return round_id.to_bytes(8, "big")


def context_bytes(task: bytes, round_id: int) -> bytes:
    """task (20 bytes) + round (8 bytes big-endian): the identity of one masking instance."""
    return check_address(task, "task") + round_bytes(round_id)


def _check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes | bytearray) or len(secret) < SECRET_MIN_BYTES:
        raise ValueError(f"the secret must be at least {SECRET_MIN_BYTES} bytes")
    return bytes(secret)


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes_raw()


class EncryptionKey:
    """A long-term X25519 key pair: `public` (32 raw bytes, a bytes32 on chain) and `private`."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self.private = private
        self.public = public_bytes(private.public_key())

    def __repr__(self) -> str:
        return f"EncryptionKey(public=0x{self.public.hex()})"


def derive_encryption_key(secret: bytes) -> EncryptionKey:
    """The party's long-term encryption key (a device's cipher key, an aggregator's sealing key) from its secret."""
    return EncryptionKey(X25519PrivateKey.from_private_bytes(hkdf(_check_secret(secret), INFO_CIPHER)))


class RoundKeys:
    """One device's secrets for one (task, round): the mask X25519 key and the self-mask seed."""

    def __init__(self, mask_secret: bytes, self_mask_seed: bytes) -> None:
        for value in (mask_secret, self_mask_seed):
            if len(value) != KEY_BYTES:
                raise ValueError(f"round secrets are {KEY_BYTES} bytes")
        self.mask = X25519PrivateKey.from_private_bytes(mask_secret)
        self.mask_secret = bytes(mask_secret)  # the s_i^SK that is Shamir-shared
        self.self_mask_seed = bytes(self_mask_seed)  # b_i
        self.mask_public = public_bytes(self.mask.public_key())  # s_i^PK, published in the setup blob

    def __repr__(self) -> str:
        return f"RoundKeys(mask_public=0x{self.mask_public.hex()})"


def derive_round_keys(device_secret: bytes, task: bytes, round_id: int) -> RoundKeys:
    """The device's mask key and self-mask seed for (task, round), deterministically from its secret (>= 32 bytes)."""
    secret = _check_secret(device_secret)
    ctx = context_bytes(task, round_id)
    return RoundKeys(mask_secret=hkdf(secret, INFO_MASK + ctx), self_mask_seed=hkdf(secret, INFO_SELF_MASK + ctx))


def mask_public_of(mask_secret: bytes) -> bytes:
    """The mask public key of a (reconstructed) 32-byte mask secret key."""
    return public_bytes(X25519PrivateKey.from_private_bytes(mask_secret).public_key())


def ecdh(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret; ValueError for a malformed or low-order peer key."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise ValueError(f"invalid peer X25519 public key {bytes(peer_public).hex()}: {exc}") from exc


def pair_seed(shared: bytes, task: bytes, round_id: int, a: bytes, b: bytes) -> bytes:
    """s_ij: HKDF over the ECDH secret, info = pair label + task + round + the two addresses sorted."""
    lo, hi = sorted((check_address(a), check_address(b)))
    if lo == hi:
        raise ValueError("a pairwise seed needs two different devices")
    return hkdf(shared, INFO_PAIR + context_bytes(task, round_id) + lo + hi)


def share_key(shared: bytes, task: bytes, round_id: int, sender: bytes, recipient: bytes) -> bytes:
    """The AES-256-GCM key for the shares `sender` encrypts to `recipient` in one round (direction-bound)."""
    return hkdf(shared, INFO_SHARE + context_bytes(task, round_id) + check_address(sender) + check_address(recipient))


__all__ = [
    "ADDRESS_BYTES",
    "DEVICE_SECRET_MIN_BYTES",
    "KEY_BYTES",
    "SECRET_MIN_BYTES",
    "EncryptionKey",
    "RoundKeys",
    "check_address",
    "check_public_key",
    "context_bytes",
    "derive_encryption_key",
    "derive_round_keys",
    "ecdh",
    "hkdf",
    "mask_public_of",
    "pair_seed",
    "public_bytes",
    "round_bytes",
    "share_key",
]
