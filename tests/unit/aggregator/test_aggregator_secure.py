"""The aggregator's side of secure aggregation without chain or IPFS: `unmask_round` over the bytes a real round of
masking devices publishes (real X25519, AES and Shamir), with drop-outs, malformed or copied inputs and DP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fedchain.aggregator.secure import RoundUnrecoverable, SharesNotYetAvailable, unmask_round
from fedchain.learning.spec import PrivacySpec
from fedchain.privacy.protocol import account_secret, address_bytes, delta_vector, encryption_key_of, round_context
from fedchain.privacy.secagg import RoundContext, SecAggDevice

TASK = "0x" + "ab" * 20
ROUND = 6
GLOBAL = {"b": np.zeros(3, np.float32), "w": np.full((2, 2), 0.5, np.float32)}
SECURE = PrivacySpec(secure_aggregation=True)


def account(i: int) -> tuple[str, bytes]:
    return "0x" + f"{0xC0 + i:040x}", (i + 1).to_bytes(32, "big")


def delta(i: int) -> dict[str, np.ndarray]:
    return {"b": np.full(3, 0.01 * (i + 1)), "w": np.full((2, 2), -0.02 * (i + 1))}


@dataclass
class Published:
    """What a round put on chain and IPFS: the setups, the masked updates and the unmasking shares."""

    ctx: RoundContext
    setups: dict[bytes, bytes]
    masked: dict[str, bytes]
    reveals: dict[str, bytes]


def publish(n: int = 4, drop: tuple[int, ...] = ()) -> Published:
    """n devices set up; those in `drop` go silent after their setup; the others mask and reveal."""
    accounts = [account(i) for i in range(n)]
    ctx = round_context(TASK, ROUND, {a: encryption_key_of(k).public for a, k in accounts}, 0.6)
    devices = {a: SecAggDevice(account_secret(k), address_bytes(a), ctx) for a, k in accounts}
    setups = {address_bytes(a): d.shares_blob() for a, d in devices.items()}
    survivors = [a for i, (a, _) in enumerate(accounts) if i not in drop]
    masked = {
        a: devices[a].mask(delta_vector(GLOBAL, delta(i)), setups).to_bytes()
        for i, (a, _) in enumerate(accounts)
        if a in survivors
    }
    dropped = [address_bytes(a) for a, _ in accounts if a not in survivors]
    reveals = {
        a: devices[a].reveal(setups, [address_bytes(s) for s in survivors], dropped).to_bytes() for a in survivors
    }
    return Published(ctx, setups, masked, reveals)


def expected_mean(indices: list[int]) -> dict[str, np.ndarray]:
    return {k: GLOBAL[k] + np.mean([delta(i)[k] for i in indices], axis=0) for k in GLOBAL}


def test_every_device_survives() -> None:
    p = publish()
    result = unmask_round(p.ctx, p.setups, p.masked, p.reveals, SECURE, GLOBAL)
    assert result.note == "" and result.participants == 4 and result.shares == 4 and result.dropped == ()
    assert result.survivors == tuple(sorted(p.masked, key=str.lower))
    for k, want in expected_mean([0, 1, 2, 3]).items():
        assert result.weights[k].dtype == np.float32 and np.allclose(result.weights[k], want, atol=1e-4)


def test_a_device_that_dropped_after_its_setup_is_unmasked_away() -> None:
    p = publish(drop=(2,))
    result = unmask_round(p.ctx, p.setups, p.masked, p.reveals, SECURE, GLOBAL)
    assert result.dropped == (account(2)[0],) and len(result.survivors) == 3 and result.shares == 3
    for k, want in expected_mean([0, 1, 3]).items():
        assert np.allclose(result.weights[k], want, atol=1e-4)


def test_a_malformed_masked_update_names_its_submitter() -> None:
    p = publish()
    victim = account(1)[0]
    p.masked[victim] = b"not a masked update"
    with pytest.raises(RoundUnrecoverable) as failed:
        unmask_round(p.ctx, p.setups, p.masked, p.reveals, SECURE, GLOBAL)
    assert set(failed.value.culprits) == {victim} and failed.value.culprits[victim][0] == "masked-update-malformed"


def test_a_copied_masked_update_names_the_copier() -> None:
    p = publish()
    honest, copier = account(0)[0], account(3)[0]
    p.masked[copier] = p.masked[honest]
    with pytest.raises(RoundUnrecoverable) as failed:
        unmask_round(p.ctx, p.setups, p.masked, p.reveals, SECURE, GLOBAL)
    assert set(failed.value.culprits) == {copier} and failed.value.culprits[copier][0] == "binding-mismatch"


def test_too_few_shares_is_a_wait_not_a_failure_and_malformed_shares_are_ignored() -> None:
    p = publish()
    few = dict(list(p.reveals.items())[: p.ctx.threshold - 1])
    with pytest.raises(SharesNotYetAvailable):
        unmask_round(p.ctx, p.setups, p.masked, few, SECURE, GLOBAL)
    spoiled = {**p.reveals, account(0)[0]: b"garbage"}  # 3 good shares still reach t = 3
    result = unmask_round(p.ctx, p.setups, p.masked, spoiled, SECURE, GLOBAL)
    assert p.ctx.threshold == 3 and len(result.survivors) == 4 and result.shares == 4


def test_under_dp_too_few_survivors_keep_the_previous_model() -> None:
    dp = PrivacySpec(secure_aggregation=True, dp_clip_norm=1.0, dp_noise_multiplier=1.0, dp_min_survivors=0.9)
    p = publish(drop=(0,))
    result = unmask_round(p.ctx, p.setups, p.masked, p.reveals, dp, GLOBAL)
    assert result.weights is GLOBAL and "only 3 of 4 devices survived" in result.note
    full = publish()
    assert unmask_round(full.ctx, full.setups, full.masked, full.reveals, dp, GLOBAL).note == ""
