"""The bytes that travel: setup blobs, masked updates and reveals round-trip, and anything else is refused."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest
from secagg_fixtures import ROUND, TASK, address, device_secret, mask_all, random_updates, reveal_all, setup_round

from fedchain.privacy import (
    MalformedMessage,
    MaskedUpdate,
    Reveal,
    RevealConflict,
    ShareDecryptionError,
    ShareSetup,
    derive_round_keys,
    unmask_sum,
)
from fedchain.privacy.secagg_messages import SHARE_CIPHERTEXT_BYTES, SHARES_VERSION

HEADER = 4 + 1 + 20 + 8 + 20
SETUP_HEAD = HEADER + 2 + 32 + 32 + 2  # threshold, mask public key, commitment, count
ROW = 20 + 12 + 2 + SHARE_CIPHERTEXT_BYTES


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_shares_blob_round_trips_and_has_the_documented_size() -> None:
    sim = setup_round(5)
    mask_keys = {address(i): derive_round_keys(device_secret(i), TASK, ROUND).mask_public for i in range(5)}
    for sender, blob in sim.blobs.items():
        setup = ShareSetup.from_bytes(blob)
        assert setup.sender == sender and setup.task == sim.ctx.task and setup.round_id == sim.ctx.round_id
        assert setup.threshold == 3 and len(setup.self_mask_commitment) == 32
        assert setup.mask_public_key == mask_keys[sender]
        assert blob[4] == SHARES_VERSION == 2
        assert blob[HEADER + 2 : HEADER + 34] == mask_keys[sender]
        assert [r for r, _, _ in setup.ciphertexts] == sorted(sim.blobs)
        assert setup.to_bytes() == blob
        assert len(blob) == SETUP_HEAD + 5 * ROW == 711  # 121 + 118 per holder
    # fresh nonces and fresh polynomials: publishing again gives other bytes for the same secrets
    a = sorted(sim.blobs)[0]
    again = sim.devices[a].shares_blob()
    assert again != sim.blobs[a]
    assert ShareSetup.from_bytes(again).self_mask_commitment == ShareSetup.from_bytes(sim.blobs[a]).self_mask_commitment


def test_masked_update_and_reveal_round_trip() -> None:
    sim = setup_round(5)
    addrs = sorted(sim.blobs)
    masked = mask_all(sim, random_updates(sim.blobs, 1_001))
    for update in masked.values():
        data = update.to_bytes()
        assert len(data) == HEADER + 4 + 4 * 1_001
        back = MaskedUpdate.from_bytes(data)
        assert (back.sender, back.task, back.round_id) == (update.sender, update.task, update.round_id)
        assert back.vector.dtype == np.uint32
        np.testing.assert_array_equal(back.vector, update.vector)
    reveals = reveal_all(sim, addrs[:4])
    decoded = [Reveal.from_bytes(r.to_bytes()) for r in reveals]
    assert decoded == reveals
    assert len(reveals[0].to_bytes()) == HEADER + 2 + 5 * (20 + 1 + 35)
    result = unmask_sum(
        sim.ctx,
        {a: ShareSetup.from_bytes(b) for a, b in sim.blobs.items()},
        [MaskedUpdate.from_bytes(masked[a].to_bytes()) for a in addrs[:4]],
        decoded,
    )
    assert result.dropped == (addrs[4],)


def _malformed_blobs(blob: bytes) -> dict[str, bytes]:
    entry = SETUP_HEAD
    return {
        "empty": b"",
        "short": blob[:10],
        "magic": b"XXXX" + blob[4:],
        "version 1": blob[:4] + b"\x01" + blob[5:],  # the format whose mask key was registered apart
        "version 3": blob[:4] + b"\x03" + blob[5:],
        "truncated": blob[:-1],
        "trailing": blob + b"\x00",
        "ct length": blob[: entry + 32] + struct.pack(">H", SHARE_CIPHERTEXT_BYTES + 1) + blob[entry + 34 :],
        "threshold": blob[:HEADER] + struct.pack(">H", 9) + blob[HEADER + 2 :],
        "low-order mask key": blob[: HEADER + 2] + bytes(32) + blob[HEADER + 34 :],
        "no holders": blob[: SETUP_HEAD - 2] + struct.pack(">H", 0),
        "order": blob[:entry]
        + blob[entry + ROW : entry + 2 * ROW]
        + blob[entry : entry + ROW]
        + blob[entry + 2 * ROW :],
        "not bytes": "text",  # type: ignore[dict-item]
    }


def test_malformed_shares_blobs_are_refused() -> None:
    sim = setup_round(3)
    blob = next(iter(sim.blobs.values()))
    for name, bad in _malformed_blobs(blob).items():
        with pytest.raises(MalformedMessage):
            ShareSetup.from_bytes(bad)
            pytest.fail(name)
    for cut in range(len(blob)):
        with pytest.raises(ValueError):  # MalformedMessage is a ValueError
            ShareSetup.from_bytes(blob[:cut])


def test_malformed_masked_updates_and_reveals_are_refused() -> None:
    sim = setup_round(3)
    addrs = sorted(sim.blobs)
    data = mask_all(sim, random_updates(sim.blobs, 8))[addrs[0]].to_bytes()
    for bad in (data[:-1], data + b"\x00", b"FCSS" + data[4:], data[:HEADER] + struct.pack(">I", 0)):
        with pytest.raises(MalformedMessage):
            MaskedUpdate.from_bytes(bad)
    reveal = reveal_all(sim, addrs)[0].to_bytes()
    row = 20 + 1 + 35
    first = HEADER + 2
    for bad in (
        reveal[:-1],
        reveal + b"\x00",
        reveal[: first + 20] + b"\x03" + reveal[first + 21 :],  # unknown kind
        reveal[:first]
        + reveal[first + row : first + 2 * row]
        + reveal[first : first + row]
        + reveal[first + 2 * row :],
        reveal[: first + 21] + b"\x00\x00" + reveal[first + 23 :],  # share at x = 0
    ):
        with pytest.raises(MalformedMessage):
            Reveal.from_bytes(bad)
    # the same peer twice (once per kind) is the forbidden double reveal
    twice = reveal[:HEADER] + struct.pack(">H", 2) + reveal[first : first + row] + reveal[first : first + 20]
    twice += b"\x02" + reveal[first + 21 : first + row]
    with pytest.raises(RevealConflict):
        Reveal.from_bytes(twice)


def test_tampered_share_ciphertexts_fail_authentication() -> None:
    sim = setup_round(4)
    addrs = sorted(sim.blobs)
    sender, me = addrs[1], sim.devices[addrs[2]]
    setup = ShareSetup.from_bytes(sim.blobs[sender])
    b_share, k_share = me.open_shares(setup)
    assert b_share.x == k_share.x == 3
    mine = SETUP_HEAD + 2 * ROW  # addrs[2]'s entry
    blob = sim.blobs[sender]
    for index in (mine + 20, mine + 34, mine + 34 + 40, mine + ROW - 1):  # nonce, ciphertext, tag
        with pytest.raises(ShareDecryptionError, match="failed authentication"):
            me.open_shares(_flip(blob, index))
    # the public fields of the blob are bound to every share ciphertext: mask key and commitment
    for index in (HEADER + 2, HEADER + 33, HEADER + 34, HEADER + 65):
        changed = _flip(blob, index)
        with pytest.raises(ShareDecryptionError, match="failed authentication"):
            me.open_shares(changed)
    # an entry moved to another recipient: the key and the associated data no longer match
    entries = list(setup.ciphertexts)
    entries[2] = (entries[2][0], entries[3][1], entries[3][2])
    moved = replace(setup, ciphertexts=tuple(entries))
    with pytest.raises(ShareDecryptionError):
        me.open_shares(moved)
    # the same bytes claimed by another sender
    with pytest.raises(ShareDecryptionError):
        me.open_shares(replace(setup, sender=addrs[0]))
    # a blob that claims another threshold than the round's
    with pytest.raises(ValueError, match="threshold"):
        me.open_shares(replace(setup, threshold=4))
    # a blob replayed into another round: refused as such, and relabelled it fails authentication, for the
    # long-term cipher keys give every round its own share keys
    later = setup_round(4, round_id=ROUND + 1)
    with pytest.raises(ValueError, match="not this round"):
        later.devices[addrs[2]].open_shares(blob)
    with pytest.raises(ShareDecryptionError, match="failed authentication"):
        later.devices[addrs[2]].open_shares(replace(setup, round_id=ROUND + 1))
    # and a survivor asked to reveal with a tampered blob says so
    mask_all(sim, random_updates(sim.blobs, 4))
    blobs = {**sim.blobs, sender: _flip(blob, mine + 50)}
    with pytest.raises(ShareDecryptionError):
        me.reveal(blobs, addrs, [])
