"""Masking: a cross-platform PRG, masked updates that look uniform and uncorrelated, device-side checks."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from secagg_fixtures import ROUND, TASK, address, cipher_keys, device_secret, random_updates, setup_round

from fedchain.privacy import (
    QuantParams,
    RoundContext,
    SecAggDevice,
    ShareDecryptionError,
    ShareSetup,
    derive_encryption_key,
    derive_round_keys,
    load_setups,
    prg,
    quantize,
)

SEEDS = [bytes(32), bytes(range(32)), hashlib.sha256(b"fedchain").digest()]


def _digest(seed: bytes, length: int) -> str:
    return hashlib.sha256(prg(seed, length).astype("<u4").tobytes()).hexdigest()


def test_prg_known_answer_is_aes_256_ctr() -> None:
    # FIPS-197 / NIST: AES-256 of the zero block under the zero key is dc95c078a2408989ad48a21492842087.
    assert prg(bytes(32), 4).astype("<u4").tobytes().hex() == "dc95c078a2408989ad48a21492842087"
    words = prg(bytes(32), 8)
    assert words.dtype == np.uint32 and words.shape == (8,)
    assert words[0] == int.from_bytes(bytes.fromhex("dc95c078"), "little")


def test_prg_is_deterministic_across_processes() -> None:
    length = 100_003
    code = (
        "import hashlib, sys\n"
        "from fedchain.privacy import prg\n"
        f"for h in {[s.hex() for s in SEEDS]!r}:\n"
        f"    print(hashlib.sha256(prg(bytes.fromhex(h), {length}).astype('<u4').tobytes()).hexdigest())\n"
    )
    outputs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
        for _ in range(2)
    ]
    expected = [_digest(s, length) for s in SEEDS]
    for out in outputs:
        assert out.split() == expected
    assert len(set(expected)) == len(SEEDS)


def test_prg_prefixes_agree_and_seeds_are_checked() -> None:
    seed = SEEDS[2]
    np.testing.assert_array_equal(prg(seed, 1000)[:10], prg(seed, 10))
    with pytest.raises(ValueError):
        prg(b"\x00" * 16, 10)
    with pytest.raises(ValueError):
        prg(seed, 0)


def test_masked_update_is_uncorrelated_with_the_update_and_uniform_over_the_ring() -> None:
    size = 100_000
    sim = setup_round(5)
    me = sorted(sim.blobs)[2]
    # a structured update: a smooth signal plus noise, far from uniform
    t = np.linspace(0, 40 * np.pi, size)
    update = 1.5 * np.sin(t) + np.random.default_rng(7).normal(0, 0.1, size)
    masked = sim.devices[me].mask(update, sim.blobs).vector
    assert masked.dtype == np.uint32 and masked.size == size
    q_signed = quantize(update, sim.ctx.quant).view(np.int32).astype(np.float64)
    for reference in (update, q_signed):
        r = np.corrcoef(masked.astype(np.float64), reference)[0, 1]
        assert abs(r) < 0.05
    # uniform: top byte and bottom byte each spread evenly over 256 bins (chi-square, 255 dof: mean 255, sd 22.6)
    expected = size / 256
    for byte in (masked >> 24, masked & 0xFF):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 400
    assert abs(masked.astype(np.float64).mean() / 2**32 - 0.5) < 0.01


def test_masks_cancel_across_all_devices_except_self_masks() -> None:
    sim = setup_round(4)
    updates = random_updates(sim.blobs, 1000)
    total = np.zeros(1000, dtype=np.uint32)
    for a, u in updates.items():
        np.add(total, sim.devices[a].mask(u, list(sim.blobs.values())).vector, out=total)
    for k in range(4):
        seed = derive_round_keys(device_secret(k), TASK, ROUND).self_mask_seed
        np.subtract(total, prg(seed, 1000), out=total)
    expected = np.zeros(1000, dtype=np.uint32)
    for u in updates.values():
        np.add(expected, quantize(u, sim.ctx.quant), out=expected)
    np.testing.assert_array_equal(total, expected)


def test_masking_peers_are_checked() -> None:
    sim = setup_round(5)
    addrs = sorted(sim.blobs)
    me, device = addrs[0], sim.devices[addrs[0]]
    update = np.zeros(10)
    blobs = sim.blobs
    with pytest.raises(ValueError, match="include this device"):
        device.mask(update, {a: b for a, b in blobs.items() if a != me})
    with pytest.raises(ValueError, match="threshold"):
        device.mask(update, {a: blobs[a] for a in (me, addrs[1])})
    with pytest.raises(ValueError, match="published by"):
        device.mask(update, {**blobs, addrs[1]: blobs[addrs[2]]})
    with pytest.raises(ValueError, match="two setups"):
        device.mask(update, [*blobs.values(), blobs[addrs[1]]])
    with pytest.raises(TypeError):
        device.mask(update, blobs[me])  # type: ignore[arg-type]
    # a setup from outside U1, for another round, or with a mask key copied from a peer
    stranger = ShareSetup.from_bytes(blobs[addrs[1]])
    stranger = ShareSetup(
        b"\x99" * 20, stranger.task, stranger.round_id, 3, stranger.mask_public_key, bytes(32), stranger.ciphertexts
    )
    with pytest.raises(ValueError, match="not a participant"):
        device.mask(update, [*blobs.values(), stranger])
    later = setup_round(5, round_id=ROUND + 1)
    with pytest.raises(ValueError, match="not this round"):
        device.mask(update, {**blobs, addrs[1]: later.blobs[addrs[1]]})
    setup = ShareSetup.from_bytes(blobs[addrs[1]])
    copied = ShareSetup(
        setup.sender,
        setup.task,
        setup.round_id,
        setup.threshold,
        ShareSetup.from_bytes(blobs[addrs[2]]).mask_public_key,
        setup.self_mask_commitment,
        setup.ciphertexts,
    )
    with pytest.raises(ValueError, match="repeats another device's mask public key"):
        device.mask(update, {**blobs, addrs[1]: copied})
    device.mask(update, blobs)
    device.mask(update, blobs)  # the same peers again: a restart that re-masks
    with pytest.raises(ValueError, match="other peers"):
        device.mask(update, {a: blobs[a] for a in addrs[:4]})


def test_a_peer_mask_key_is_authenticated_by_its_long_term_cipher_key() -> None:
    sim = setup_round(4)
    addrs = sorted(sim.blobs)
    device, peer = sim.devices[addrs[0]], addrs[1]
    update = np.zeros(10)
    setup = ShareSetup.from_bytes(sim.blobs[peer])
    # a valid X25519 key that the peer did not publish: its share for this device no longer opens
    forged_key = derive_round_keys(b"\x42" * 32, TASK, ROUND).mask_public
    forged = ShareSetup(
        setup.sender,
        setup.task,
        setup.round_id,
        setup.threshold,
        forged_key,
        setup.self_mask_commitment,
        setup.ciphertexts,
    )
    with pytest.raises(ShareDecryptionError, match="failed authentication"):
        device.mask(update, {**sim.blobs, peer: forged})
    # this device's own setup must carry its own mask key
    own = ShareSetup.from_bytes(sim.blobs[addrs[0]])
    own = ShareSetup(
        own.sender, own.task, own.round_id, own.threshold, forged_key, own.self_mask_commitment, own.ciphertexts
    )
    with pytest.raises(ValueError, match="another mask public key"):
        device.mask(update, {**sim.blobs, addrs[0]: own})
    # and the mask keys used are those published: they match each device's round keys
    for i in range(4):
        a = address(i)
        assert (
            load_setups(sim.ctx, sim.blobs)[a].mask_public_key
            == derive_round_keys(device_secret(i), TASK, ROUND).mask_public
        )
        assert sim.devices[a].mask_public_key == derive_round_keys(device_secret(i), TASK, ROUND).mask_public
        assert sim.devices[a].cipher_public_key == derive_encryption_key(device_secret(i)).public


def test_a_restarted_device_derives_the_same_keys_and_masks() -> None:
    sim = setup_round(4)
    addrs = sorted(sim.blobs)
    a = addrs[2]
    i = next(k for k in range(4) if address(k) == a)
    first = sim.devices[a].mask(np.full(30, 0.125), sim.blobs)
    restarted = SecAggDevice(device_secret(i), a, sim.ctx)
    assert restarted.mask_public_key == sim.devices[a].mask_public_key
    np.testing.assert_array_equal(restarted.mask(np.full(30, 0.125), sim.blobs).vector, first.vector)
    # its new setup blob differs in bytes (fresh nonces and polynomials) but not in keys or commitment
    again = ShareSetup.from_bytes(restarted.shares_blob())
    old = ShareSetup.from_bytes(sim.blobs[a])
    assert (again.mask_public_key, again.self_mask_commitment) == (old.mask_public_key, old.self_mask_commitment)


def test_a_device_refuses_keys_registered_from_another_secret() -> None:
    sim = setup_round(3)
    a = sorted(sim.blobs)[0]
    with pytest.raises(ValueError, match="not derived from this device secret"):
        SecAggDevice(b"\x42" * 32, a, sim.ctx)
    with pytest.raises(ValueError, match="not a participant"):
        SecAggDevice(device_secret(0), b"\x77" * 20, sim.ctx)


def test_the_long_term_cipher_keys_serve_every_round() -> None:
    keys = cipher_keys(3)
    for round_id in (0, 1, 2**40):
        ctx = RoundContext.create(TASK, round_id, keys)
        assert ctx.participants == tuple(sorted(keys))
        assert all(ctx.cipher_key_of(a) == keys[a] for a in keys)
        SecAggDevice(device_secret(1), address(1), ctx)


def test_round_context_validates_threshold_size_capacity_and_keys() -> None:
    public = cipher_keys(6)
    ctx = RoundContext.create(TASK, 1, public)
    assert ctx.threshold == 4 and ctx.participants == tuple(sorted(public))
    assert [ctx.x_of(a) for a in ctx.participants] == [1, 2, 3, 4, 5, 6]
    assert RoundContext.create(TASK, 1, public, threshold=6).threshold == 6
    for bad in (3, 7, 0):
        with pytest.raises(ValueError, match="threshold"):
            RoundContext.create(TASK, 1, public, threshold=bad)
    with pytest.raises(ValueError, match="2 to"):
        RoundContext.create(TASK, 1, dict(list(public.items())[:1]))
    with pytest.raises(ValueError, match="overflow"):
        RoundContext.create(TASK, 1, public, quant=QuantParams(scale_bits=29, clip_range=1.0))
    first = address(0)
    for bad_key in (bytes(32), b"\x05" * 31):
        with pytest.raises(ValueError, match="cipher key of 0x" + first.hex()):
            RoundContext.create(TASK, 1, {**public, first: bad_key})
    with pytest.raises(ValueError, match="device address"):
        RoundContext.create(TASK, 1, {**public, b"\x01" * 19: public[first]})


def test_the_privacy_layer_imports_no_higher_layer() -> None:
    code = (
        "import sys\n"
        "import fedchain.privacy, fedchain.privacy.secagg\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('fedchain'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    loaded = out.split()
    for layer in ("chain", "storage", "device", "aggregator", "cli", "explorer"):
        assert not any(m == f"fedchain.{layer}" or m.startswith(f"fedchain.{layer}.") for m in loaded), loaded


def test_a_device_masks_one_update_per_round() -> None:
    sim = setup_round(3)
    addrs = sorted(sim.blobs)
    device = sim.devices[addrs[0]]
    first = device.mask(np.full(20, 0.5), sim.blobs)
    np.testing.assert_array_equal(device.mask(np.full(20, 0.5), sim.blobs).vector, first.vector)
    with pytest.raises(ValueError, match="different update"):
        device.mask(np.full(20, 0.25), sim.blobs)
