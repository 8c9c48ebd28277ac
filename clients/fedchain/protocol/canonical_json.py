"""Canonical JSON: the one serialisation whose bytes are hashed, pinned on IPFS or compared between processes.

Sorted keys and no whitespace, so equal values give equal bytes. Two options differ between formats, and each
caller states them because changing them would change the bytes of a format already in use:
- `ascii_only`: escape non-ASCII characters as \\uXXXX (the older formats: batch files, aggregation reports, seeds
  and digests) rather than writing UTF-8 (specs, strategy specs, job plans);
- `allow_nan`: write NaN and Infinity (not JSON; the older formats never contain them) rather than refuse them.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any, *, ascii_only: bool = False, allow_nan: bool = False) -> bytes:
    """`value` as canonical JSON, UTF-8 encoded; ValueError for NaN or infinities unless `allow_nan`."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=allow_nan)
    return text.encode("utf-8")


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads(..., object_pairs_hook=reject_duplicate_keys)`: json.loads keeps the last of duplicate keys; a
    description that says two things must be refused instead (ValueError)."""
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"duplicate key(s) {dupes}")
    return dict(pairs)


__all__ = ["canonical_json", "reject_duplicate_keys"]
