"""An update digest counts once per round: which of several submissions of the same digest is kept.

The chain lets any approved device submit any digest (a "digest once per task" mapping would cost a fresh 22.1k-gas
SSTORE per update), so the aggregator decides, the same way in every aggregator:
* when the file's binding (`fedchain.storage.binding`) names one of the submitters, that submission is kept,
  wherever it stands in chain order: a device that copies another's digest and front-runs it gains nothing;
* otherwise (no binding, or it names none of them) the first submission in chain order is kept.
Every other submission of the digest is left out as "duplicate-digest" before its file is fetched again; the kept one
still goes through every other check (its binding included, so a digest replayed from an earlier round by two
accounts is refused twice, once for each reason).

Pure: the worker passes the round's submissions and a way to read the device a file is bound to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

REASON_DUPLICATE_DIGEST = "duplicate-digest"


class Submitted(Protocol):
    """What the screening needs of a submission: who sent which digest, and where it stands in chain order."""

    @property
    def device(self) -> str: ...

    @property
    def digest(self) -> bytes: ...

    @property
    def order(self) -> tuple[int, int, int]: ...


def duplicate_digests(
    subs: Sequence[Submitted], bound_device: Callable[[bytes, list[str]], str | None]
) -> dict[int, str]:
    """{index in `subs`: why it is left out} for every submission another one of the same digest wins over.

    `bound_device(digest, submitters)` returns the device the file names as its owner (or None when it names none
    or cannot be read); it is called only for digests submitted more than once.
    """
    groups: dict[bytes, list[int]] = {}
    for index, sub in enumerate(subs):
        groups.setdefault(bytes(sub.digest), []).append(index)
    left_out: dict[int, str] = {}
    for digest, indices in groups.items():
        if len(indices) < 2:
            continue
        in_order = sorted(indices, key=lambda i: (subs[i].order, subs[i].device.lower()))
        owner = bound_device(digest, [subs[i].device for i in in_order])
        owned = [i for i in in_order if owner is not None and subs[i].device.lower() == owner.lower()]
        keep = owned[0] if owned else in_order[0]
        why = (
            f"the same digest was submitted by {subs[keep].device}, the device the update is bound to"
            if owned
            else f"the same digest was submitted earlier in the round by {subs[keep].device}"
        )
        for i in in_order:
            if i != keep:
                left_out[i] = why
    return left_out


__all__ = ["REASON_DUPLICATE_DIGEST", "Submitted", "duplicate_digests"]
