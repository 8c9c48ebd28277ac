"""Splitting a range of devices into pool actors (pure; the actors themselves run in tests/e2e)."""

from __future__ import annotations

import pytest

from fedchain.device.ray_pool import PoolShare, split_accounts


def test_shares_are_contiguous_cover_every_device_and_carry_their_relayer() -> None:
    shares = split_accounts(2, 9, 3, relayers=[40, 41, 42])
    assert shares == [PoolShare(2, 4, 0, 40), PoolShare(4, 6, 2, 41), PoolShare(6, 9, 4, 42)]
    assert [s.first_partition for s in split_accounts(10, 14, 2)] == [0, 2]
    assert split_accounts(5, 6, 1) == [PoolShare(5, 6, 0, None)]


@pytest.mark.parametrize(("start", "end", "pools", "relayers"), [(2, 4, 3, None), (2, 4, 0, None), (2, 6, 2, [7])])
def test_impossible_splits_are_refused(start: int, end: int, pools: int, relayers: list[int] | None) -> None:
    with pytest.raises(ValueError):
        split_accounts(start, end, pools, relayers)
