"""The shared protocol choices (fedchain.privacy.protocol) and one whole private round in memory: devices clip, noise
and mask their deltas, some drop out after their setup, survivors reveal, the aggregator unmasks the mean."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.privacy.dp import DistributedNoise, noise_rng
from fedchain.privacy.protocol import (
    SECAGG_QUANT,
    account_secret,
    address_bytes,
    delta_vector,
    encryption_key_of,
    mean_weights,
    round_context,
    seal_context,
)
from fedchain.privacy.sealed import SealedError, open_sealed, seal
from fedchain.privacy.secagg import SecAggDevice, unmask_sum

TASK = "0x" + "ab" * 20


def account(i: int) -> tuple[str, bytes]:
    key = (i + 1).to_bytes(32, "big")
    return "0x" + f"{i + 1:040x}", key


def test_threshold_rule_and_context() -> None:
    devices = dict(account(i) for i in range(10))
    keys = {a: encryption_key_of(k).public for a, k in devices.items()}
    assert round_context(TASK, 3, keys, 0.6).threshold == 6
    assert round_context(TASK, 3, keys, 0.51).threshold == 6  # always more than half
    assert round_context(TASK, 3, keys, 1.0).threshold == 10
    ctx = round_context(TASK, 3, keys, 0.7)
    assert ctx.threshold == 7 and ctx.quant == SECAGG_QUANT and ctx.round_id == 3
    assert SECAGG_QUANT.max_devices >= 4000


def test_secrets_and_contexts() -> None:
    _, key = account(0)
    assert account_secret(key) == account_secret(key) != key
    assert encryption_key_of(key).public == encryption_key_of(key).public
    with pytest.raises(ValueError):
        account_secret(b"short")
    a, b = account(1)[0], account(2)[0]
    assert seal_context(TASK, 1, a) != seal_context(TASK, 2, a) != seal_context(TASK, 1, b)
    assert address_bytes(a) == bytes.fromhex(a[2:])
    with pytest.raises(ValueError):
        address_bytes("0x1234")


def test_sealed_update_opens_only_in_its_context() -> None:
    aggregator, agg_key = account(50)
    device = account(1)[0]
    key = encryption_key_of(agg_key)
    blob = seal(b"update bytes", {address_bytes(aggregator): key.public}, seal_context(TASK, 4, device))
    assert open_sealed(blob, address_bytes(aggregator), key, seal_context(TASK, 4, device)) == b"update bytes"
    with pytest.raises(SealedError):  # replayed as another round's update
        open_sealed(blob, address_bytes(aggregator), key, seal_context(TASK, 5, device))


def test_private_round_in_memory_recovers_the_noisy_mean_with_dropouts() -> None:
    rng = np.random.default_rng(0)
    global_weights = {"w": rng.normal(size=(20, 5)).astype(np.float32), "b": np.zeros(5, dtype=np.float32)}
    devices = dict(account(i) for i in range(10))
    keys = {a: encryption_key_of(k).public for a, k in devices.items()}
    ctx = round_context(TASK, 1, keys, 0.6)
    noise = DistributedNoise(1.0, 1.0, len(devices), 7)
    parties = {a: SecAggDevice(account_secret(k), address_bytes(a), ctx) for a, k in devices.items()}
    setups = {address_bytes(a): p.shares_blob() for a, p in parties.items()}
    dropped = sorted(devices)[:2]  # published a setup, then dropped out before masking
    masked, sent = [], {}
    for i, (address, party) in enumerate(sorted(parties.items())):
        if address in dropped:
            continue
        trained = {n: v + rng.normal(scale=0.5, size=v.shape).astype(np.float32) for n, v in global_weights.items()}
        noisy, _ = noise.privatize(global_weights, trained, noise_rng(i))
        vector = delta_vector(global_weights, noisy)
        sent[address] = vector
        masked.append(party.mask(vector, setups))
        # Nothing of the delta shows through the mask.
        assert abs(np.corrcoef(masked[-1].vector.astype(np.float64), vector)[0, 1]) < 0.3
    survivors = [address_bytes(a) for a in sorted(sent)]
    gone = [address_bytes(a) for a in dropped]
    reveals = [parties[a].reveal(setups, survivors, gone) for a in sorted(sent)]
    result = unmask_sum(ctx, setups, masked, reveals[: ctx.threshold])  # any t reveals will do
    expected = np.sum(list(sent.values()), axis=0)
    assert np.max(np.abs(result.total - expected)) <= result.error_bound + 1e-12
    weights = mean_weights(global_weights, result.total, len(survivors))
    flat_expected = delta_vector(global_weights, global_weights) + expected / len(survivors)
    got = delta_vector(global_weights, weights) - delta_vector(global_weights, global_weights)
    np.testing.assert_allclose(got, flat_expected - delta_vector(global_weights, global_weights), atol=1e-5)
    assert noise.covers(len(survivors))
