"""A digest counts once per round: the submission the file is bound to wins, else the first in chain order."""

from __future__ import annotations

from dataclasses import dataclass

from fedchain.aggregator.screening import duplicate_digests

A, B, C = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


@dataclass(frozen=True)
class Sub:
    device: str
    digest: bytes
    order: tuple[int, int, int]


def owner(mapping: dict[bytes, str | None]):
    calls: list[bytes] = []

    def bound_device(digest: bytes, submitters: list[str]) -> str | None:
        calls.append(digest)
        return mapping.get(digest)

    return bound_device, calls


def test_distinct_digests_are_all_kept_and_no_file_is_read() -> None:
    subs = [Sub(A, b"1", (5, 0, 0)), Sub(B, b"2", (5, 1, 0)), Sub(C, b"3", (6, 0, 0))]
    bound, calls = owner({})
    assert duplicate_digests(subs, bound) == {}
    assert calls == []


def test_the_bound_device_wins_even_when_a_copier_front_runs_it() -> None:
    # B saw A's transaction and got the same digest mined first: A's file names A, so A's submission counts.
    subs = [Sub(A, b"x", (7, 0, 0)), Sub(B, b"x", (6, 3, 0))]
    bound, calls = owner({b"x": A.upper().replace("0X", "0x")})
    left_out = duplicate_digests(subs, bound)
    assert set(left_out) == {1}
    assert A in left_out[1] and "bound to" in left_out[1]
    assert calls == [b"x"]


def test_without_an_owner_among_them_the_first_in_chain_order_wins() -> None:
    # Two accounts replaying C's digest of an earlier round: the first is kept (its binding refuses it later),
    # the second is a duplicate.
    subs = [Sub(A, b"old", (9, 0, 0)), Sub(B, b"old", (8, 2, 0))]
    bound, _ = owner({b"old": C})
    assert duplicate_digests(subs, bound) == {0: f"the same digest was submitted earlier in the round by {B}"}
    bound, _ = owner({})  # unreadable or unbound file
    assert set(duplicate_digests(subs, bound)) == {0}


def test_chain_order_covers_relayed_batch_entries() -> None:
    # A direct submission (entry 0) before a batch in the same block, and entries inside one batch in their order.
    subs = [Sub(C, b"x", (4, 2, 2)), Sub(A, b"x", (4, 2, 1)), Sub(B, b"x", (4, 1, 0))]
    bound, _ = owner({})
    assert set(duplicate_digests(subs, bound)) == {0, 1}


def test_verdicts_do_not_depend_on_the_order_given() -> None:
    subs = [Sub(A, b"x", (3, 0, 0)), Sub(B, b"x", (2, 0, 0)), Sub(C, b"y", (1, 0, 0)), Sub(C.upper(), b"z", (1, 1, 0))]
    bound, _ = owner({b"x": None})
    left_out = duplicate_digests(subs, bound)
    reversed_subs = list(reversed(subs))
    left_out_reversed = duplicate_digests(reversed_subs, bound)
    assert {subs[i].device for i in left_out} == {reversed_subs[i].device for i in left_out_reversed} == {A}
