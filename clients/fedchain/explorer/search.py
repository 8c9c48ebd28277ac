"""Parsing what a person types in the search box. Pure: no index, no node; resolving happens elsewhere.

Accepted:
- an address: `0x` and 40 hex digits (a mixed-case address must carry a valid EIP-55 checksum);
- a 32-byte hash: `0x` and 64 hex digits (a transaction, a block, or a bytes32 digest of a CID);
- a block number: decimal digits, optionally `#123` or `block 123`;
- a CID: CIDv0 (`Qm…`, 46 characters);
- a task's round: `ADDRESS/ROUND` (also `ADDRESS round ROUND`, `ADDRESS#ROUND`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eth_utils import is_checksum_address, to_checksum_address

from fedchain.storage.cid import cid_to_digest
from fedchain.storage.errors import InvalidCid

MAX_QUERY = 200
_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"0x[0-9a-fA-F]{64}")
_BLOCK = re.compile(r"(?:#|block\s*)?(\d{1,18})", re.IGNORECASE)
_TASK_ROUND = re.compile(r"(0x[0-9a-fA-F]{40})\s*(?:/|#|\s+round\s+|\s+)\s*(\d{1,9})", re.IGNORECASE)


class SearchError(ValueError):
    """The input is not something the explorer can look up; the message says what is accepted."""


@dataclass(frozen=True)
class Query:
    """A parsed search: `kind` is address, hash, block, cid or round; `value` its normalised form."""

    kind: str
    value: str
    round: int | None = None


HELP = "Search by address, transaction or block hash, block number, CID (Qm…) or task/round (0xTASK/3)."


def _address(text: str) -> str:
    has_upper = any(ch.isupper() for ch in text[2:])
    has_lower = any(ch.islower() for ch in text[2:])
    if has_upper and has_lower and not is_checksum_address(text):
        raise SearchError(f"{text} has mixed case but an invalid EIP-55 checksum: check the address for a typo")
    return to_checksum_address(text.lower())


def parse_query(raw: str) -> Query:
    """Parse search input; SearchError with a clear message for anything else."""
    if raw is None:
        raise SearchError(f"Empty search. {HELP}")
    text = raw.strip()
    if not text:
        raise SearchError(f"Empty search. {HELP}")
    if len(text) > MAX_QUERY:
        raise SearchError(f"Search input is {len(text)} characters long, more than the {MAX_QUERY} accepted. {HELP}")
    if text[:2] == "0X":
        text = "0x" + text[2:]
    shown = text if len(text) <= 80 else text[:77] + "…"

    if match := _TASK_ROUND.fullmatch(text):
        return Query("round", _address(match.group(1)), int(match.group(2)))
    if _HEX40.fullmatch(text):
        return Query("address", _address(text))
    if _HEX64.fullmatch(text):
        return Query("hash", text.lower())
    if match := _BLOCK.fullmatch(text):
        return Query("block", str(int(match.group(1))))
    if text.startswith("Qm"):
        try:
            cid_to_digest(text)
        except InvalidCid as exc:
            raise SearchError(f"{shown!r} looks like a CID but is not a valid CIDv0: {exc}") from None
        return Query("cid", text)
    if text.startswith("0x"):
        digits = text[2:]
        if not re.fullmatch(r"[0-9a-fA-F]*", digits):
            raise SearchError(f"{shown!r} starts with 0x but is not hexadecimal. {HELP}")
        raise SearchError(
            f"{shown!r} has {len(digits)} hex digits: an address has 40, a transaction or block hash 64. {HELP}"
        )
    raise SearchError(f"Nothing to search for in {shown!r}. {HELP}")
