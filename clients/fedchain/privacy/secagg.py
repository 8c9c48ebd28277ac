"""Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving Machine Learning").

The pure cryptographic core: no chain, no IPFS. The aggregator learns the sum of the surviving devices' quantised
updates and nothing else about any one of them, even when devices drop out after masking.

Messages (fedchain.privacy.secagg_messages): the setup, masked update and reveal, their byte formats, and the
protocol's errors.

Keys (fedchain.privacy.keys). Each device registers one long-term X25519 encryption ("cipher") public key on chain,
once, not per round (`derive_encryption_key`, a bytes32). Per round it derives a mask key pair s_i and a self-mask
seed b_i from its secret and (task, round) (`derive_round_keys`); the mask public key travels in its setup blob.

One round, as data (U1 ⊇ U2 ⊇ U3, every set ordered by address), three messages per device:

1. Setup. U1 are the devices with registered cipher keys (the task's approved devices); `RoundContext.create` fixes
   them, their cipher keys and the threshold t. Each device in U1 Shamir-shares b_i and its mask secret key s_i^SK
   among U1 (device at position k holds x = k + 1), encrypts each holder's pair of shares with AES-256-GCM under
   HKDF(ECDH(c_i, c_j), task, round, sender, recipient), and publishes one blob: its mask public key s_i^PK, a
   commitment to b_i and the encrypted shares (`SecAggDevice.shares_blob`, `ShareSetup`; on chain, the blob's
   digest). The associated data of every share ciphertext binds the blob's threshold, s_i^PK and commitment, so a
   holder that can open its share knows that i itself published them. Devices that published a setup are U2.
2. Masking. Each device in U2 checks every setup of U2 (this task and round, a participant, and its own share opens)
   and adds masks to its update quantised to Z_{2^32}^m (`SecAggDevice.mask`):
       y_i = q_i + PRG(b_i) + sum_{j in U2, j > i} PRG(s_ij) - sum_{j in U2, j < i} PRG(s_ij)   (mod 2^32)
   with s_ij = HKDF(ECDH(s_i^SK, s_j^PK), b"fedchain/secagg/pair" + task + round + sorted addresses) and s_j^PK from
   j's setup blob. Devices whose masked update arrived are the survivors U3; U2 minus U3 are the dropped.
3. Reveal. Each survivor decrypts the shares it holds and reveals, per peer, the share of b_j if j survived or the
   share of s_j^SK if j dropped, never both (`SecAggDevice.reveal`, `Reveal`).
4. Unmask (`unmask_sum`, off chain). With t shares per secret the aggregator removes PRG(b_i) of each survivor and,
   for each dropped device, recomputes its pairwise masks with every survivor; what is left is sum_{i in U3} q_i,
   dequantised.

The PRG is AES-256-CTR keyed by the 32-byte seed (zero nonce; every seed keys exactly one stream), read as
little-endian uint32. Not numpy's Philox or PCG64: those are not cryptographic PRGs (PCG64's state can be recovered
from its output, and a masked vector leaks mask bits wherever the update is predictable), whereas AES-CTR is, is
specified byte for byte on every platform, and with AES-NI is also faster here (about 1 ms per million uint32
against 4-7 ms for Philox).

Threshold: t must satisfy n/2 < t <= n for n = |U1| (default n // 2 + 1). Each honest survivor reveals only one of
the two shares for a peer, so the aggregator collects at most n shares per peer split over the two secrets and can
never reach t for both. A round tolerates n - t drop-outs (from setup to reveal).

Trust model: an honest-but-curious aggregator. Devices colluding with it can hand over both shares they hold, so with
c colluders t must exceed (n + c) / 2. An aggregator that tells different devices different survivor sets could
collect both shares of a peer; here the chain records who submitted, and every device must take U2 (the setups),
the survivor and the dropped sets from the chain, never from the aggregator (SecAgg's consistency round is that
check). Shares are checked on reconstruction: b_i against the commitment and s_i^SK against the mask public key,
both in i's setup blob.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TypeAlias

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedchain.privacy import shamir
from fedchain.privacy.keys import (
    ADDRESS_BYTES,
    INFO_SHARE,
    check_address,
    check_public_key,
    context_bytes,
    derive_encryption_key,
    derive_round_keys,
    ecdh,
    mask_public_of,
    pair_seed,
    round_bytes,
    share_key,
)
from fedchain.privacy.quantize import QuantParams, dequantize, quantize
from fedchain.privacy.secagg_messages import (
    KIND_MASK_KEY,
    KIND_NAMES,
    KIND_SELF_MASK,
    NONCE_BYTES,
    SHARE_PLAINTEXT_BYTES,
    MaskedUpdate,
    NotEnoughShares,
    ReconstructionError,
    Reveal,
    RevealConflict,
    ShareDecryptionError,
    ShareSetup,
)
from fedchain.privacy.shamir import Share

MAX_PARTICIPANTS = shamir.MAX_X
COMMIT_LABEL = b"fedchain/secagg/selfmask-commit"


# ----------------------------------------------------------------------------------------------------------------- PRG
def prg(seed: bytes, length: int) -> np.ndarray:
    """`length` pseudo-random uint32 from a 32-byte seed: AES-256-CTR keystream (zero nonce), little-endian."""
    return _Keystream(length).expand(seed).copy()


class _Keystream:
    """Reusable buffers to expand many seeds to one length without allocating per seed."""

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ValueError(f"PRG length must be positive, got {length}")
        self.length = length
        self._zeros = bytes(4 * length)
        self._buf = bytearray(4 * length + 15)
        self._view = np.frombuffer(self._buf, dtype="<u4", count=length)

    def expand(self, seed: bytes) -> np.ndarray:
        """The keystream for `seed` as a uint32 view valid until the next call."""
        if len(seed) != 32:
            raise ValueError("PRG seeds are 32 bytes")
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
        encryptor.update_into(self._zeros, self._buf)
        return self._view


# ------------------------------------------------------------------------------------------------------------- context
def default_threshold(n: int) -> int:
    """n // 2 + 1: the smallest t with t > n/2 (the aggregator can never hold t shares of both secrets of a peer)."""
    return n // 2 + 1


@dataclass(frozen=True)
class RoundContext:
    """What every party agrees on for one round: task, round, U1 with their long-term cipher public keys, t, quant."""

    task: bytes
    round_id: int
    cipher_keys: tuple[tuple[bytes, bytes], ...]  # (address, 32-byte X25519 cipher public key), sorted by address
    threshold: int
    quant: QuantParams = field(default_factory=QuantParams)

    @classmethod
    def create(
        cls,
        task: bytes,
        round_id: int,
        cipher_keys: Mapping[bytes, bytes],
        threshold: int | None = None,
        quant: QuantParams | None = None,
    ) -> RoundContext:
        """U1 = the devices with registered cipher keys (address -> bytes32, e.g. the task's approved devices).

        Validates and orders: 2 <= n <= 65535 devices with valid X25519 keys, n/2 < t <= n, and n updates must fit
        the ring.
        """
        context_bytes(task, round_id)
        keys = tuple(
            sorted(
                (check_address(a, "device address"), check_public_key(pk, f"cipher key of 0x{bytes(a).hex()}"))
                for a, pk in cipher_keys.items()
            )
        )
        n = len(keys)
        if not 2 <= n <= MAX_PARTICIPANTS:
            raise ValueError(f"secure aggregation needs 2 to {MAX_PARTICIPANTS} devices, got {n}")
        t = default_threshold(n) if threshold is None else threshold
        if not n / 2 < t <= n:
            raise ValueError(f"threshold must satisfy n/2 < t <= n (n = {n}), got {t}")
        quant = quant or QuantParams()
        quant.check_capacity(n)
        return cls(bytes(task), round_id, keys, t, quant)

    @cached_property
    def participants(self) -> tuple[bytes, ...]:
        return tuple(a for a, _ in self.cipher_keys)

    @cached_property
    def _index(self) -> dict[bytes, tuple[int, bytes]]:
        return {a: (k + 1, pk) for k, (a, pk) in enumerate(self.cipher_keys)}

    def x_of(self, address: bytes) -> int:
        """The Shamir x coordinate of a device: its 1-based position in address order."""
        return self._lookup(address)[0]

    def cipher_key_of(self, address: bytes) -> bytes:
        """The device's registered long-term cipher public key."""
        return self._lookup(address)[1]

    def _lookup(self, address: bytes) -> tuple[int, bytes]:
        try:
            return self._index[address]
        except KeyError:
            raise ValueError(f"0x{address.hex()} is not a participant of this round") from None

    def check_message(self, task: bytes, round_id: int, what: str) -> None:
        if task != self.task or round_id != self.round_id:
            raise ValueError(f"{what} is for task 0x{task.hex()} round {round_id}, not this round")


def self_mask_commitment(task: bytes, round_id: int, sender: bytes, seed: bytes) -> bytes:
    """SHA-256 commitment to b_i, published in the shares blob so a reconstruction can be checked."""
    return hashlib.sha256(COMMIT_LABEL + context_bytes(task, round_id) + sender + seed).digest()


def _share_aad(setup: ShareSetup, recipient: bytes) -> bytes:
    """Associated data of one share ciphertext: binds the round, both parties and the blob's public fields."""
    return (
        INFO_SHARE
        + b"/v2"
        + context_bytes(setup.task, setup.round_id)
        + setup.sender
        + recipient
        + setup.threshold.to_bytes(2, "big")
        + setup.mask_public_key
        + setup.self_mask_commitment
    )


@dataclass(frozen=True, eq=False)
class UnmaskResult:
    """The aggregate: sum of the survivors' dequantised updates (float64, flat), who survived, who dropped."""

    total: np.ndarray
    survivors: tuple[bytes, ...]
    dropped: tuple[bytes, ...]
    error_bound: float  # max |total - true sum| per coordinate from rounding (for unclipped values)
    ring_sum: np.ndarray  # sum of q_i mod 2^32 (uint32)


# --------------------------------------------------------------------------------------------------------------- setups
# U2 as given to the device and the aggregator: {sender: blob or ShareSetup}, or just the blobs or ShareSetups.
Setups: TypeAlias = Mapping[bytes, bytes | ShareSetup] | Collection[bytes | ShareSetup]


def load_setups(ctx: RoundContext, setups: Setups) -> dict[bytes, ShareSetup]:
    """Decode and check published setups (U2), sorted by sender: {sender: ShareSetup}.

    `setups` maps each sender to its blob or ShareSetup, or lists them. Each must decode, be for this task, round and
    threshold, come from a participant and hold one share ciphertext for every participant; one setup per device and
    no two with the same mask public key. MalformedMessage or ValueError otherwise. Authenticity is checked by a
    holder opening its share (`SecAggDevice.open_shares`), not here.
    """
    if isinstance(setups, bytes | bytearray | memoryview | str | ShareSetup):
        raise TypeError("setups: expected a mapping or a collection of setups, not a single one")
    pairs: Iterable[tuple[bytes | None, bytes | ShareSetup]]
    pairs = setups.items() if isinstance(setups, Mapping) else ((None, blob) for blob in setups)
    loaded: dict[bytes, ShareSetup] = {}
    mask_keys: set[bytes] = set()
    for address, blob in pairs:
        if address is None and isinstance(blob, bytes) and len(blob) == ADDRESS_BYTES:
            raise TypeError("setups: got a 20-byte address, expected setup blobs (or a mapping address -> blob)")
        setup = blob if isinstance(blob, ShareSetup) else ShareSetup.from_bytes(blob)
        ctx.check_message(setup.task, setup.round_id, "shares blob")
        if setup.threshold != ctx.threshold:
            raise ValueError(f"shares blob with threshold {setup.threshold}, the round's is {ctx.threshold}")
        if address is not None and setup.sender != address:
            raise ValueError(f"the blob given for 0x{address.hex()} was published by 0x{setup.sender.hex()}")
        ctx.x_of(setup.sender)
        if setup.sender in loaded:
            raise ValueError(f"two setups from 0x{setup.sender.hex()}")
        if tuple(r for r, _, _ in setup.ciphertexts) != ctx.participants:
            raise ValueError(f"the setup of 0x{setup.sender.hex()} does not hold shares for exactly the participants")
        check_public_key(setup.mask_public_key, f"mask public key of 0x{setup.sender.hex()}")
        if setup.mask_public_key in mask_keys:
            raise ValueError(f"the setup of 0x{setup.sender.hex()} repeats another device's mask public key")
        mask_keys.add(setup.mask_public_key)
        loaded[setup.sender] = setup
    return dict(sorted(loaded.items()))


# -------------------------------------------------------------------------------------------------------------- device
class SecAggDevice:
    """One device's side of one round: publishes its setup, masks its update, reveals shares for its peers.

    `device_secret` must derive the long-term cipher key registered for `address` in `ctx`; the round's mask key and
    self-mask seed are derived from it too, so a restarted device is the same device. It remembers the peers it
    masked with and what it revealed for each, and refuses to reveal the other secret of a peer later on.
    """

    def __init__(self, device_secret: bytes, address: bytes, ctx: RoundContext) -> None:
        self.address = check_address(address, "device address")
        self.ctx = ctx
        self._cipher = derive_encryption_key(device_secret)
        if ctx.cipher_key_of(self.address) != self._cipher.public:
            raise ValueError("the cipher key registered for this device was not derived from this device secret")
        self._keys = derive_round_keys(device_secret, ctx.task, ctx.round_id)
        self._revealed: dict[bytes, int] = {}
        self._mask_peers: dict[bytes, bytes] | None = None  # peer -> its mask public key, once masked
        self._masked_digest: bytes | None = None

    @property
    def cipher_public_key(self) -> bytes:
        """The long-term cipher public key (registered once on chain)."""
        return self._cipher.public

    @property
    def mask_public_key(self) -> bytes:
        """This round's mask public key s_i^PK (published inside the setup blob)."""
        return self._keys.mask_public

    def shares_blob(self) -> bytes:
        """This round's setup blob: s_i^PK, a commitment to b_i, and shares of b_i and s_i^SK encrypted to each holder.

        Fresh nonces and polynomials on every call; the secrets, s_i^PK and the commitment stay the same.
        """
        ctx, keys = self.ctx, self._keys
        xs = [ctx.x_of(a) for a in ctx.participants]
        b_shares = shamir.split(keys.self_mask_seed, ctx.threshold, xs)
        k_shares = shamir.split(keys.mask_secret, ctx.threshold, xs)
        commitment = self_mask_commitment(ctx.task, ctx.round_id, self.address, keys.self_mask_seed)
        head = ShareSetup(self.address, ctx.task, ctx.round_id, ctx.threshold, keys.mask_public, commitment, ())
        entries = []
        for recipient, b_share, k_share in zip(ctx.participants, b_shares, k_shares, strict=True):
            plaintext = (
                b_share.x.to_bytes(2, "big")
                + b_share.y.to_bytes(shamir.VALUE_BYTES, "big")
                + k_share.y.to_bytes(shamir.VALUE_BYTES, "big")
            )
            shared = ecdh(self._cipher.private, ctx.cipher_key_of(recipient))
            aead = AESGCM(share_key(shared, ctx.task, ctx.round_id, self.address, recipient))
            nonce = os.urandom(NONCE_BYTES)
            entries.append((recipient, nonce, aead.encrypt(nonce, plaintext, _share_aad(head, recipient))))
        return replace(head, ciphertexts=tuple(entries)).to_bytes()

    def mask(self, update: Mapping[str, np.ndarray] | np.ndarray, setups: Setups) -> MaskedUpdate:
        """y_i for `update` (the delta, flattened in sorted name order), masked with every device of U2.

        `setups` are the published setups of U2 (see `load_setups`), this device's own included. Each peer's mask
        public key is authenticated by opening the share it addressed to this device (ShareDecryptionError if that
        fails: tampered, or not published by that peer). Masking again gives the same bytes for the same update and
        setups; a different update or peer set under the same round's masks is refused (in this process: after a
        restart the caller must not submit twice, see fedchain.privacy.keys).
        """
        ctx, keys = self.ctx, self._keys
        loaded = load_setups(ctx, setups)
        if self.address not in loaded:
            raise ValueError("the setups (U2) must include this device's own")
        if loaded[self.address].mask_public_key != keys.mask_public:
            raise ValueError("the setup given for this device holds another mask public key")
        if len(loaded) < ctx.threshold:
            raise ValueError(f"only {len(loaded)} devices published setups, the threshold is {ctx.threshold}")
        peers = {a: s.mask_public_key for a, s in loaded.items()}
        if self._mask_peers is not None and self._mask_peers != peers:
            raise ValueError("this device already masked an update for this round with other peers")
        for setup in loaded.values():
            self.open_shares(setup)
        acc = quantize(update, ctx.quant)
        digest = hashlib.sha256(acc.astype("<u4", copy=False).tobytes()).digest()
        if self._masked_digest is not None and self._masked_digest != digest:
            # the masks are fixed per (task, round): two different updates under them leak their difference
            raise ValueError("this device already masked a different update for this round")
        stream = _Keystream(acc.size)
        np.add(acc, stream.expand(keys.self_mask_seed), out=acc)
        for peer, peer_mask_public in peers.items():
            if peer == self.address:
                continue
            shared = ecdh(keys.mask, peer_mask_public)
            mask = stream.expand(pair_seed(shared, ctx.task, ctx.round_id, self.address, peer))
            if peer > self.address:
                np.add(acc, mask, out=acc)
            else:
                np.subtract(acc, mask, out=acc)
        self._mask_peers, self._masked_digest = peers, digest
        return MaskedUpdate(self.address, ctx.task, ctx.round_id, acc)

    def open_shares(self, blob: bytes | ShareSetup) -> tuple[Share, Share]:
        """Decrypt the (b_j, s_j^SK) shares that the blob's sender addressed to this device.

        Success also authenticates the blob's threshold, mask public key and commitment: only the sender (or this
        device) holds the ECDH secret of their two cipher keys.
        """
        ctx = self.ctx
        setup = blob if isinstance(blob, ShareSetup) else ShareSetup.from_bytes(blob)
        ctx.check_message(setup.task, setup.round_id, "shares blob")
        if setup.threshold != ctx.threshold:
            raise ValueError(f"shares blob with threshold {setup.threshold}, the round's is {ctx.threshold}")
        sender = setup.sender
        nonce, ct = setup.ciphertext_for(self.address)
        shared = ecdh(self._cipher.private, ctx.cipher_key_of(sender))
        aead = AESGCM(share_key(shared, ctx.task, ctx.round_id, sender, self.address))
        try:
            plaintext = aead.decrypt(nonce, ct, _share_aad(setup, self.address))
        except InvalidTag as exc:
            raise ShareDecryptionError(
                f"shares from 0x{sender.hex()} failed authentication (tampered, or not for this device/round)"
            ) from exc
        x = int.from_bytes(plaintext[:2], "big")
        if x != ctx.x_of(self.address) or len(plaintext) != SHARE_PLAINTEXT_BYTES:
            raise ShareDecryptionError(f"shares from 0x{sender.hex()} are for another share point")
        b_y = int.from_bytes(plaintext[2 : 2 + shamir.VALUE_BYTES], "big")
        k_y = int.from_bytes(plaintext[2 + shamir.VALUE_BYTES :], "big")
        try:
            return Share(x, b_y), Share(x, k_y)
        except ValueError as exc:
            raise ShareDecryptionError(f"shares from 0x{sender.hex()}: {exc}") from exc

    def reveal(self, blobs: Setups, survivors: Collection[bytes], dropped: Collection[bytes]) -> Reveal:
        """Reveal, per peer, the share of b_j if j is a survivor or of s_j^SK if j dropped, never both.

        `blobs` are the setups of (at least) every peer in survivors ∪ dropped (see `load_setups`). Raises
        RevealConflict if a peer is in both sets or was revealed the other way before; ValueError if this device is
        not a survivor, if fewer than t devices survived, or if the sets or setups differ from those this device
        masked with.
        """
        ctx = self.ctx
        alive = frozenset(check_address(p, "survivor") for p in survivors)
        gone = frozenset(check_address(p, "dropped device") for p in dropped)
        both = alive & gone
        if both:
            raise RevealConflict(f"peers both survived and dropped: {sorted('0x' + p.hex() for p in both)}")
        if self.address not in alive:
            raise ValueError("this device is not among the survivors: it reveals nothing")
        if len(alive) < ctx.threshold:
            raise ValueError(f"only {len(alive)} survivors, the threshold is {ctx.threshold}: refusing to reveal")
        if self._mask_peers is not None and alive | gone != self._mask_peers.keys():
            raise ValueError("survivors and dropped devices differ from the peers this device masked with")
        wanted = {p: KIND_SELF_MASK for p in alive} | {p: KIND_MASK_KEY for p in gone}
        for peer, kind in wanted.items():
            if self._revealed.get(peer, kind) != kind:
                raise RevealConflict(f"already revealed the {KIND_NAMES[self._revealed[peer]]} of 0x{peer.hex()}")
        loaded = load_setups(ctx, blobs)
        self_mask: dict[bytes, Share] = {}
        key: dict[bytes, Share] = {}
        for peer, kind in sorted(wanted.items()):
            if peer not in loaded:
                raise ValueError(f"no shares blob for peer 0x{peer.hex()}")
            setup = loaded[peer]
            if self._mask_peers is not None and setup.mask_public_key != self._mask_peers[peer]:
                raise ValueError(f"the setup of 0x{peer.hex()} differs from the one this device masked with")
            b_share, k_share = self.open_shares(setup)
            if kind == KIND_SELF_MASK:
                self_mask[peer] = b_share
            else:
                key[peer] = k_share
        self._revealed.update(wanted)
        return Reveal(self.address, ctx.task, ctx.round_id, self_mask, key)


# ---------------------------------------------------------------------------------------------------------- aggregator
def unmask_sum(
    ctx: RoundContext, blobs: Setups, masked: Iterable[MaskedUpdate], reveals: Iterable[Reveal]
) -> UnmaskResult:
    """The sum of the survivors' updates from their masked updates and the survivors' reveals.

    `blobs`: the published setups (their senders are U2, see `load_setups`). `masked`: the masked updates that
    arrived (their senders are the survivors U3 ⊆ U2; U2 minus U3 dropped). `reveals`: from survivors.
    Raises NotEnoughShares when fewer than t shares of a needed secret were revealed, ReconstructionError when a
    secret does not match its commitment (b_i) or the mask public key in its setup (s_i^SK), ValueError for
    inconsistent input.
    """
    setups = load_setups(ctx, blobs)

    vectors: dict[bytes, np.ndarray] = {}
    for update in masked:
        ctx.check_message(update.task, update.round_id, "masked update")
        if update.sender not in setups:
            raise ValueError(f"masked update from 0x{update.sender.hex()}, which published no shares")
        if update.sender in vectors:
            raise ValueError(f"two masked updates from 0x{update.sender.hex()}")
        if update.vector.dtype != np.uint32 or update.vector.ndim != 1:
            raise ValueError("masked updates are 1-D uint32 vectors")
        vectors[update.sender] = update.vector
    if not vectors:
        raise ValueError("no masked updates")
    lengths = {v.size for v in vectors.values()}
    if len(lengths) != 1:
        raise ValueError(f"masked updates of different lengths: {sorted(lengths)}")
    length = lengths.pop()
    survivors = tuple(sorted(vectors))
    dropped = tuple(sorted(set(setups) - set(vectors)))
    ctx.quant.check_capacity(len(survivors))

    self_mask_shares: dict[bytes, list[Share]] = {a: [] for a in survivors}
    key_shares: dict[bytes, list[Share]] = {a: [] for a in dropped}
    seen: set[bytes] = set()
    for reveal in reveals:
        ctx.check_message(reveal.task, reveal.round_id, "reveal")
        if reveal.sender not in vectors:
            raise ValueError(f"reveal from 0x{reveal.sender.hex()}, which is not a survivor")
        if reveal.sender in seen:
            raise ValueError(f"two reveals from 0x{reveal.sender.hex()}")
        seen.add(reveal.sender)
        x = ctx.x_of(reveal.sender)
        for peer, share in reveal.self_mask_shares.items():
            if peer not in self_mask_shares:
                raise ValueError(f"0x{reveal.sender.hex()} revealed a self-mask share of non-survivor 0x{peer.hex()}")
            if share.x != x:
                raise ValueError(f"0x{reveal.sender.hex()} revealed a share at x = {share.x}, its point is {x}")
            self_mask_shares[peer].append(share)
        for peer, share in reveal.key_shares.items():
            if peer not in key_shares:
                raise ValueError(f"0x{reveal.sender.hex()} revealed a mask-key share of non-dropped 0x{peer.hex()}")
            if share.x != x:
                raise ValueError(f"0x{reveal.sender.hex()} revealed a share at x = {share.x}, its point is {x}")
            key_shares[peer].append(share)

    # Reconstruct every secret first: fail fast, before the expensive PRG work.
    t = ctx.threshold
    self_seeds: dict[bytes, bytes] = {}
    for device, shares in self_mask_shares.items():
        seed = _reconstruct(device, shares, t, "self-mask seed")
        commitment = self_mask_commitment(ctx.task, ctx.round_id, device, seed)
        if commitment != setups[device].self_mask_commitment:
            raise ReconstructionError(device, "self-mask seed")
        self_seeds[device] = seed
    dropped_keys: dict[bytes, bytes] = {}
    for device, shares in key_shares.items():
        secret = _reconstruct(device, shares, t, "mask key")
        if mask_public_of(secret) != setups[device].mask_public_key:
            raise ReconstructionError(device, "mask key")
        dropped_keys[device] = secret

    total = np.zeros(length, dtype=np.uint32)
    for vector in vectors.values():
        np.add(total, vector, out=total)
    stream = _Keystream(length)
    for seed in self_seeds.values():
        np.subtract(total, stream.expand(seed), out=total)
    for device, secret in dropped_keys.items():
        private = X25519PrivateKey.from_private_bytes(secret)
        for survivor in survivors:
            shared = ecdh(private, setups[survivor].mask_public_key)
            mask = stream.expand(pair_seed(shared, ctx.task, ctx.round_id, device, survivor))
            # the survivor added PRG(s_sd) if d > s, subtracted it if d < s: undo that
            if device > survivor:
                np.subtract(total, mask, out=total)
            else:
                np.add(total, mask, out=total)
    n = len(survivors)
    return UnmaskResult(
        total=dequantize(total, ctx.quant, n),
        survivors=survivors,
        dropped=dropped,
        error_bound=ctx.quant.sum_error_bound(n),
        ring_sum=total,
    )


def _reconstruct(device: bytes, shares: list[Share], threshold: int, kind: str) -> bytes:
    if len({s.x for s in shares}) < threshold:
        raise NotEnoughShares(device, len({s.x for s in shares}), threshold, kind)
    try:
        return shamir.combine(shares, threshold)
    except ValueError as exc:
        raise ReconstructionError(device, kind) from exc


__all__ = [
    "ADDRESS_BYTES",
    "RoundContext",
    "SecAggDevice",
    "Setups",
    "UnmaskResult",
    "default_threshold",
    "load_setups",
    "prg",
    "round_bytes",
    "self_mask_commitment",
    "unmask_sum",
]
