"""The plain values the index passes around: progress, changes for live pages, and the conversions of the node's
raw JSON-RPC values (hex quantities, lower-case addresses, digests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from eth_utils import keccak, to_checksum_address

from fedchain.storage import digest_to_cid

TASK_CONTRACT = "FederatedTask"
AGGREGATOR_ROLE = "0x" + keccak(text="AGGREGATOR_ROLE").hex()
DEFAULT_ADMIN_ROLE = "0x" + "00" * 32


class ContentSource(Protocol):
    """What the indexer needs from IPFS: verified bytes by CID (fedchain.storage.IpfsClient fits)."""

    def cat(self, cid: str, max_size: int = ...) -> bytes: ...


@dataclass
class SyncStatus:
    """The follower's progress, shown on every page and by /api/health."""

    mode: str = "full"
    next_block: int = 0
    head: int | None = None
    last_sync: float | None = None
    error: str | None = None
    started_block: int = 0
    rebuilt: str | None = None

    @property
    def lag(self) -> int | None:
        return None if self.head is None else max(0, self.head + 1 - self.next_block)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "indexed_block": self.next_block - 1,
            "head": self.head,
            "lag": self.lag,
            "last_sync": self.last_sync,
            "error": self.error,
            "started_block": self.started_block,
            "rebuilt": self.rebuilt,
        }


@dataclass(frozen=True)
class Change:
    """Something a live page may want to show: a new block or a round that changed state."""

    kind: str  # "block" | "round" | "task"
    data: dict[str, Any] = field(default_factory=dict)


def hex_int(value: Any) -> int:
    """A JSON-RPC quantity (0x-hex, or already an int; None as 0)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return int(value, 16) if isinstance(value, str) and value.startswith("0x") else int(value)


def opt_hex_int(value: Any) -> int | None:
    return None if value is None else hex_int(value)


def checksum(value: str | None) -> str | None:
    return None if not value else to_checksum_address(value)


def cid(hex_digest: str) -> str:
    """The CID of a digest the contract stores (bytes32, 0x-hex)."""
    return digest_to_cid(hex_digest)
