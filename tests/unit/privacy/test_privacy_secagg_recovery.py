"""Unmasking: the aggregator recovers exactly the survivors' sum, with and without drop-outs, or fails clearly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from secagg_fixtures import address, mask_all, random_updates, reveal_all, run_round, setup_round

from fedchain.privacy import (
    NotEnoughShares,
    ReconstructionError,
    Reveal,
    RevealConflict,
    ShareSetup,
    VectorLayout,
    derive_round_keys,
    unflatten,
    unmask_sum,
)
from fedchain.privacy.shamir import Share


@pytest.mark.parametrize("n", [5, 20])
def test_sum_without_dropout_equals_the_plain_sum_within_the_rounding_bound(n: int) -> None:
    sim = setup_round(n)
    updates = random_updates(sim.blobs, 5_000, seed=n)
    result = run_round(sim, updates)
    assert result.survivors == tuple(sorted(sim.blobs)) and result.dropped == ()
    assert result.error_bound == n * 2.0**-21
    true = sum(updates.values())
    assert np.max(np.abs(result.total - true)) <= result.error_bound


def test_thirty_percent_dropout_after_masking_is_recovered() -> None:
    sim = setup_round(20)
    updates = random_updates(sim.blobs, 5_000, seed=3)
    drop = set(sorted(sim.blobs)[1::3][:6])  # 6 of 20, spread through the address order
    assert len(drop) == 6
    result = run_round(sim, updates, drop=drop)
    survivors = sorted(set(sim.blobs) - drop)
    assert result.survivors == tuple(survivors)
    assert result.dropped == tuple(sorted(drop))
    true = sum(updates[a] for a in survivors)
    assert np.max(np.abs(result.total - true)) <= result.error_bound


def test_devices_that_never_published_shares_are_left_out_of_masking() -> None:
    addrs = [address(i) for i in range(10)]
    sim = setup_round(10, publishers=addrs[:9])  # the 10th registered keys, then vanished
    updates = random_updates(sim.blobs, 2_000, seed=4)
    drop = set(sorted(sim.blobs)[:2])
    result = run_round(sim, updates, drop=drop)
    assert len(result.survivors) == 7 and addrs[9] not in result.dropped
    true = sum(updates[a] for a in result.survivors)
    assert np.max(np.abs(result.total - true)) <= result.error_bound


def test_named_tensors_go_through_and_come_back() -> None:
    sim = setup_round(4)
    rng = np.random.default_rng(5)
    deltas = {
        a: {"fc.weight": rng.normal(0, 0.1, (3, 4)).astype(np.float32), "fc.bias": rng.normal(0, 0.1, 3)}
        for a in sim.blobs
    }
    masked = {a: sim.devices[a].mask(d, list(sim.blobs.values())) for a, d in deltas.items()}
    result = unmask_sum(sim.ctx, sim.blobs, masked.values(), reveal_all(sim, list(sim.blobs)))
    summed = unflatten(result.total, VectorLayout.of(next(iter(deltas.values()))))
    for name in ("fc.weight", "fc.bias"):
        true = sum(np.asarray(d[name], dtype=np.float64) for d in deltas.values())
        assert np.max(np.abs(summed[name] - true)) <= result.error_bound


def test_too_many_dropouts_raise_not_enough_shares() -> None:
    sim = setup_round(10)  # t = 6
    updates = random_updates(sim.blobs, 100)
    addrs = sorted(sim.blobs)
    masked = mask_all(sim, updates)
    drop = set(addrs[:4])
    survivors = addrs[4:]
    reveals = reveal_all(sim, survivors)
    # one survivor goes silent at the reveal stage: 5 reveals for a threshold of 6
    with pytest.raises(NotEnoughShares) as info:
        unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors], reveals[:5])
    assert (info.value.have, info.value.need) == (5, 6)
    assert info.value.device in set(addrs) and info.value.kind in ("self-mask seed", "mask key")
    # five drop-outs of ten: survivors refuse to reveal, and the aggregator cannot unmask what it has
    drop.add(addrs[4])
    with pytest.raises(ValueError, match="threshold is 6"):
        sim.devices[addrs[5]].reveal(sim.blobs, addrs[5:], drop)
    with pytest.raises(NotEnoughShares):
        unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in addrs[5:]], [])


def test_a_custom_threshold_tolerates_fewer_dropouts() -> None:
    sim = setup_round(10, threshold=8)
    updates = random_updates(sim.blobs, 500)
    addrs = sorted(sim.blobs)
    result = run_round(sim, updates, drop=addrs[:2])
    assert len(result.dropped) == 2
    sim = setup_round(10, threshold=8)
    with pytest.raises(ValueError, match="threshold is 8"):
        run_round(sim, updates, drop=addrs[:3])


def test_a_survivor_never_reveals_both_shares_of_one_peer() -> None:
    sim = setup_round(6)
    addrs = sorted(sim.blobs)
    mask_all(sim, random_updates(sim.blobs, 10))
    me = sim.devices[addrs[0]]
    # asked for both at once
    with pytest.raises(RevealConflict):
        me.reveal(sim.blobs, addrs[:5], [addrs[4], addrs[5]])
    # asked one way, then the other
    first = me.reveal(sim.blobs, addrs[:5], [addrs[5]])
    assert set(first.self_mask_shares) == set(addrs[:5]) and set(first.key_shares) == {addrs[5]}
    with pytest.raises(RevealConflict, match="already revealed"):
        me.reveal(sim.blobs, [*addrs[:4], addrs[5]], [addrs[4]])
    again = me.reveal(sim.blobs, addrs[:5], [addrs[5]])  # the same answer may be repeated
    assert again.to_bytes() == first.to_bytes()
    # and a reveal message cannot carry both
    share = Share(1, 1)
    with pytest.raises(RevealConflict):
        Reveal(addrs[0], sim.ctx.task, sim.ctx.round_id, {addrs[1]: share}, {addrs[1]: share})


def test_a_survivor_refuses_inconsistent_requests() -> None:
    sim = setup_round(6)
    addrs = sorted(sim.blobs)
    mask_all(sim, random_updates(sim.blobs, 10))
    me = sim.devices[addrs[0]]
    with pytest.raises(ValueError, match="not among the survivors"):
        me.reveal(sim.blobs, addrs[1:], [addrs[0]])
    with pytest.raises(ValueError, match="differ from the peers"):
        me.reveal(sim.blobs, addrs[:5], [])
    blobs = dict(sim.blobs)
    del blobs[addrs[3]]
    with pytest.raises(ValueError, match="no shares blob"):
        me.reveal(blobs, addrs[:5], [addrs[5]])
    blobs = dict(sim.blobs)
    blobs[addrs[3]] = sim.blobs[addrs[4]]
    with pytest.raises(ValueError, match="published by"):
        me.reveal(blobs, addrs[:5], [addrs[5]])
    # a setup of a peer that is not the one this device masked with
    other_key = derive_round_keys(b"\x42" * 32, sim.ctx.task, sim.ctx.round_id).mask_public
    blobs = {**sim.blobs, addrs[3]: replace(ShareSetup.from_bytes(sim.blobs[addrs[3]]), mask_public_key=other_key)}
    with pytest.raises(ValueError, match="differs from the one this device masked with"):
        me.reveal(blobs, addrs[:5], [addrs[5]])


def test_the_aggregator_rejects_forged_or_misplaced_shares() -> None:
    sim = setup_round(6)
    addrs = sorted(sim.blobs)
    masked = mask_all(sim, random_updates(sim.blobs, 50))
    survivors, dropped = addrs[:5], addrs[5]
    reveals = reveal_all(sim, survivors)
    good = unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors], reveals)
    assert good.dropped == (dropped,)

    def with_reveal(i: int, reveal: Reveal) -> list[Reveal]:
        return [reveal if k == i else r for k, r in enumerate(reveals)]

    r0 = reveals[0]
    # a wrong self-mask share: the reconstructed seed misses its commitment
    peer = addrs[1]
    bad_share = Share(r0.self_mask_shares[peer].x, (r0.self_mask_shares[peer].y + 1))
    forged = Reveal(r0.sender, r0.task, r0.round_id, {**r0.self_mask_shares, peer: bad_share}, r0.key_shares)
    with pytest.raises(ReconstructionError, match="self-mask seed"):
        unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors], with_reveal(0, forged))
    # a wrong mask-key share: the reconstructed key misses the mask public key of its setup
    bad_key = Share(r0.key_shares[dropped].x, r0.key_shares[dropped].y ^ 1)
    forged = Reveal(r0.sender, r0.task, r0.round_id, r0.self_mask_shares, {dropped: bad_key})
    with pytest.raises(ReconstructionError, match="mask key"):
        unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors], with_reveal(0, forged))
    # the dropped device's setup handed to the aggregator with another (valid) mask key: the reconstructed key
    # is checked against the key in the setup, which is all the chain holds of it now
    other_key = derive_round_keys(b"\x42" * 32, sim.ctx.task, sim.ctx.round_id).mask_public
    swapped = {**sim.blobs, dropped: replace(ShareSetup.from_bytes(sim.blobs[dropped]), mask_public_key=other_key)}
    with pytest.raises(ReconstructionError, match="mask key"):
        unmask_sum(sim.ctx, swapped, [masked[a] for a in survivors], reveals)
    # a share at another device's point
    moved = Reveal(r0.sender, r0.task, r0.round_id, r0.self_mask_shares, {dropped: Share(6, 1)})
    with pytest.raises(ValueError, match="its point is"):
        unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors], with_reveal(0, moved))
    # a reveal from a device that did not submit, or twice from one survivor
    with pytest.raises(ValueError, match="not a survivor"):
        unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors[:4]], [reveals[4], *reveals[:4]])
    with pytest.raises(ValueError, match="two reveals"):
        unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors], [*reveals, reveals[0]])
    # a key share for a survivor
    wrong = Reveal(r0.sender, r0.task, r0.round_id, {}, {addrs[1]: r0.self_mask_shares[addrs[1]]})
    with pytest.raises(ValueError, match="non-dropped"):
        unmask_sum(sim.ctx, sim.blobs, [masked[a] for a in survivors], with_reveal(0, wrong))


def test_the_aggregator_rejects_inconsistent_updates() -> None:
    sim = setup_round(4)
    addrs = sorted(sim.blobs)
    masked = mask_all(sim, random_updates(sim.blobs, 50))
    reveals = reveal_all(sim, addrs)
    with pytest.raises(ValueError, match="two masked updates"):
        unmask_sum(sim.ctx, sim.blobs, [*masked.values(), masked[addrs[0]]], reveals)
    blobs = {a: b for a, b in sim.blobs.items() if a != addrs[0]}
    with pytest.raises(ValueError, match="published no shares"):
        unmask_sum(sim.ctx, blobs, masked.values(), reveals)
    with pytest.raises(ValueError, match="no masked updates"):
        unmask_sum(sim.ctx, sim.blobs, [], reveals)
    other = setup_round(4, round_id=4)
    with pytest.raises(ValueError, match="not this round"):
        unmask_sum(other.ctx, sim.blobs, masked.values(), reveals)
