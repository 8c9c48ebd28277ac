"""A device's private submission without chain or IPFS: the delta it masks (clipped and noised under differential
privacy), the survivor and dropout sets it reveals shares for, and sealed updates only the aggregators can open."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.device.private import PrivacyUnavailable, private_delta, sealed_update, survivors_and_dropped
from fedchain.learning.spec import PrivacySpec
from fedchain.privacy.dp import noise_rng
from fedchain.privacy.protocol import address_bytes, encryption_key_of, seal_context
from fedchain.privacy.sealed import SealedError, open_sealed
from fedchain.storage.codec import decode_weights, read_metadata

GLOBAL = {"b": np.zeros(2, np.float32), "w": np.ones((2, 3), np.float32)}
TRAINED = {"b": np.full(2, 3.0, np.float32), "w": np.full((2, 3), 5.0, np.float32)}  # delta norm = sqrt(2*9 + 6*16)
TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
AGGREGATOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
DEVICE = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def test_without_dp_the_delta_is_exact() -> None:
    delta = private_delta(PrivacySpec(secure_aggregation=True), GLOBAL, TRAINED, 5, noise_rng(1))
    assert delta.dtype == np.float64 and delta.shape == (8,)
    assert sorted(delta.tolist()) == [3.0, 3.0] + [4.0] * 6


def test_with_dp_the_delta_is_clipped_and_noised_by_its_share() -> None:
    spec = PrivacySpec(secure_aggregation=True, dp_clip_norm=1.0, dp_noise_multiplier=1.0)
    one = private_delta(spec, GLOBAL, TRAINED, 10, noise_rng(7))
    assert np.array_equal(one, private_delta(spec, GLOBAL, TRAINED, 10, noise_rng(7)))
    other = private_delta(spec, GLOBAL, TRAINED, 10, noise_rng(8))
    assert not np.array_equal(one, other)
    # The clipped delta has norm 1; a device's noise share (std = σ·C / sqrt(min survivors)) is of order 1 per
    # coordinate: far below the unclipped delta's norm of about 10.7.
    assert np.linalg.norm(one) < 8.0 and np.linalg.norm((one + other) / 2) < 6.0


def test_survivors_and_dropped_come_from_the_frozen_set_in_address_order() -> None:
    setups = ["0xB", "0xa", "0xC"]
    assert survivors_and_dropped(setups, ["0xC", "0xa", "0xd"]) == (["0xa", "0xC"], ["0xB"])
    assert survivors_and_dropped(setups, []) == ([], ["0xa", "0xB", "0xC"])


def test_a_sealed_update_opens_only_for_its_aggregator_and_context() -> None:
    key = encryption_key_of(bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"))
    context = seal_context(TASK, 3, DEVICE)
    blob = sealed_update(TRAINED, {"fedchain.round": "3"}, {address_bytes(AGGREGATOR): key.public}, context)
    plain = open_sealed(blob, address_bytes(AGGREGATOR), key, context)
    assert read_metadata(plain)["fedchain.round"] == "3"
    assert np.array_equal(decode_weights(plain)["w"], TRAINED["w"])
    with pytest.raises(SealedError):
        open_sealed(blob, address_bytes(AGGREGATOR), key, seal_context(TASK, 4, DEVICE))
    with pytest.raises(PrivacyUnavailable):
        sealed_update(TRAINED, {}, {}, context)
