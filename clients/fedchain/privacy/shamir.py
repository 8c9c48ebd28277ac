"""Shamir secret sharing of 32-byte secrets over the prime field GF(p), p = 2^256 + 297.

Why our own prime field and not pycryptodome's `Crypto.Protocol.SecretSharing.Shamir`: that one shares 16-byte
secrets over GF(2^128) with pure-Python carry-less arithmetic, so a 32-byte secret (an X25519 key, a self-mask seed)
must be cut into two halves shared separately, and its polynomial arithmetic (one Python loop per bit, inversions by
exponentiation) is slow for the hundreds of shares and thresholds a round with hundreds of devices needs. Over a prime
just above 2^256 a whole 32-byte secret is one field element, Python's big integers do the arithmetic in C, and
Lagrange coefficients are computed once per set of share holders and reused for every secret they reconstruct.

p = 2^256 + 297 is the smallest prime above 2^256 (checked by a Miller-Rabin test in the unit tests); a share's value
is an element of GF(p), serialised as 33 bytes big-endian, and its x coordinate (1..65535) as 2 bytes.
Coefficients are drawn with `secrets.randbelow(p)`: any t-1 shares are independent of the secret (perfect hiding).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

PRIME = 2**256 + 297
SECRET_BYTES = 32
VALUE_BYTES = 33
MAX_X = 2**16 - 1
SHARE_BYTES = 2 + VALUE_BYTES


@dataclass(frozen=True)
class Share:
    """One point (x, y) of a sharing polynomial: x in 1..65535, y in GF(p)."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not 1 <= self.x <= MAX_X:
            raise ValueError(f"share x must be in [1, {MAX_X}], got {self.x}")
        if not 0 <= self.y < PRIME:
            raise ValueError("share value is not a field element")

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(2, "big") + self.y.to_bytes(VALUE_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) != SHARE_BYTES:
            raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        return cls(int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big"))


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Shares of a 32-byte `secret` at the points `xs` (distinct, 1..65535); any `threshold` of them recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(xs)) != len(xs):
        raise ValueError("share points must be distinct")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        if not 1 <= x <= MAX_X:
            raise ValueError(f"share x must be in [1, {MAX_X}], got {x}")
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        shares.append(Share(x, acc))
    return shares


@lru_cache(maxsize=64)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """lambda_i = prod_{j != i} x_j / (x_j - x_i) mod p: the weights that evaluate the polynomial at 0."""
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def combine(shares: Iterable[Share], threshold: int) -> bytes:
    """The 32-byte secret from at least `threshold` shares (the `threshold` with the smallest x are used).

    Raises ValueError for too few shares, two different values at one x, or a result that is not a 32-byte secret
    (a sign of wrong shares; a wrong share usually goes unnoticed otherwise: check the result against a commitment).
    """
    by_x: dict[int, int] = {}
    for share in shares:
        if by_x.setdefault(share.x, share.y) != share.y:
            raise ValueError(f"two different shares at x = {share.x}")
    if threshold < 1 or len(by_x) < threshold:
        raise ValueError(f"need {threshold} shares, have {len(by_x)}")
    xs = tuple(sorted(by_x)[:threshold])
    weights = _lagrange_at_zero(xs)
    value = sum(w * by_x[x] for w, x in zip(weights, xs, strict=True)) % PRIME
    if value >= 2 ** (8 * SECRET_BYTES):
        raise ValueError("the shares do not interpolate to a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


__all__ = ["MAX_X", "PRIME", "SECRET_BYTES", "SHARE_BYTES", "VALUE_BYTES", "Share", "combine", "split"]
