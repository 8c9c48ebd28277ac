"""Shamir secret sharing over GF(2^256 + 297): any t shares recover the secret, fewer do not."""

from __future__ import annotations

import itertools
import os

import pytest

from fedchain.privacy.shamir import PRIME, SHARE_BYTES, Share, combine, split


def _probably_prime(n: int) -> bool:
    """Miller-Rabin with the first 40 primes as bases (error < 4^-40 for a composite)."""
    bases = [p for p in range(2, 200) if all(p % q for q in range(2, p))][:40]
    if n < 2 or any(n % p == 0 for p in bases):
        return n in bases
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _combine_or_none(shares: list[Share], threshold: int) -> bytes | None:
    try:
        return combine(shares, threshold)
    except ValueError:
        return None


def test_the_field_is_the_smallest_prime_above_2_256() -> None:
    assert PRIME == 2**256 + 297
    assert _probably_prime(PRIME)
    assert not any(_probably_prime(2**256 + k) for k in range(1, 297))


def test_every_threshold_subset_recovers_the_secret() -> None:
    secret = os.urandom(32)
    shares = split(secret, 3, [1, 2, 3, 4, 5])
    assert [s.x for s in shares] == [1, 2, 3, 4, 5]
    for subset in itertools.combinations(shares, 3):
        assert combine(subset, 3) == secret
    assert combine(shares, 3) == secret  # more than t: the t with the smallest x are used


def test_extreme_secrets_and_large_sharings() -> None:
    for secret in (bytes(32), b"\xff" * 32):
        shares = split(secret, 51, list(range(1, 101)))
        assert combine(shares[49:], 51) == secret
    shares = split(b"\x07" * 32, 2, [65535, 9])
    assert combine(shares, 2) == b"\x07" * 32


def test_fewer_than_threshold_shares_are_refused_and_reveal_nothing_useful() -> None:
    secret = os.urandom(32)
    shares = split(secret, 4, [1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="need 4 shares, have 3"):
        combine(shares[:3], 4)
    # interpolating t-1 points as if t-1 were the threshold gives some other value (or one outside 32 bytes)
    assert _combine_or_none(shares[:3], 3) != secret


def test_duplicate_points_count_once_and_conflicting_points_are_refused() -> None:
    secret = os.urandom(32)
    a, b, c = split(secret, 3, [1, 2, 3])
    with pytest.raises(ValueError, match="need 3 shares, have 2"):
        combine([a, a, b], 3)
    with pytest.raises(ValueError, match="two different shares"):
        combine([a, Share(a.x, (a.y + 1) % PRIME), b, c], 3)


def test_a_wrong_share_changes_the_result() -> None:
    secret = os.urandom(32)
    a, b, c = split(secret, 3, [1, 2, 3])
    assert _combine_or_none([a, b, Share(c.x, (c.y + 1) % PRIME)], 3) != secret


def test_share_bytes_round_trip_and_validation() -> None:
    share = split(os.urandom(32), 2, [7, 8])[0]
    data = share.to_bytes()
    assert len(data) == SHARE_BYTES == 35
    assert Share.from_bytes(data) == share
    with pytest.raises(ValueError):
        Share.from_bytes(data[:-1])
    with pytest.raises(ValueError):
        Share.from_bytes(b"\x00\x00" + data[2:])  # x = 0 would be the secret itself
    with pytest.raises(ValueError):
        Share.from_bytes(data[:2] + PRIME.to_bytes(33, "big"))


@pytest.mark.parametrize(
    ("secret", "threshold", "xs"),
    [
        (b"short", 2, [1, 2]),
        (bytes(32), 0, [1, 2]),
        (bytes(32), 3, [1, 2]),
        (bytes(32), 2, [1, 1]),
        (bytes(32), 2, [0, 1]),
        (bytes(32), 2, [1, 65536]),
    ],
)
def test_split_refuses_bad_arguments(secret: bytes, threshold: int, xs: list[int]) -> None:
    with pytest.raises(ValueError):
        split(secret, threshold, xs)
