"""Per-round seeds: torch-free, so the light device (`fedchain.learning.light`) seeds its rounds as the torch
device does (`fedchain.learning.train` re-exports `round_seed`)."""

from __future__ import annotations

import hashlib
import json


def round_seed(task_seed: int, round_index: int, device_key: str) -> int:
    """A stable 63-bit seed from sha256 (unlike hash(), the same in every process and Python version)."""
    # JSON keeps the fields unambiguous; lower() so checksummed and lowercase addresses agree.
    payload = json.dumps(["fedchain.round_seed", int(task_seed), int(round_index), device_key.lower()])
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


__all__ = ["round_seed"]
