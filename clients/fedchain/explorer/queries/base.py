"""What every page family shares: the errors pages turn into 4xx, the explorer's settings, input checks, and the
`Reader` (index connections per thread, the node and IPFS clients, the contract ABI, the IPFS node's status)."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from fedchain.chain.artifacts import load_artifact
from fedchain.explorer.abi import AbiCodec
from fedchain.explorer.chains import chain_info, explorer_link
from fedchain.explorer.index import TASK_CONTRACT, SyncStatus, connect_db
from fedchain.explorer.rpc import JsonRpc, NodeUnavailable, RpcError
from fedchain.storage import IpfsClient, StorageError


class NotFound(LookupError):
    """Nothing matches; the message says what was looked for."""


class BadInput(ValueError):
    """The request itself is malformed (not a hash, a negative round, ...)."""


@dataclass
class Settings:
    rpc_url: str
    ipfs_api: str | None
    chain_id: int
    index_path: Path


def fmt_time(ts: int | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def checked_address(value: str) -> str:
    try:
        return to_checksum_address(value)
    except ValueError:
        raise BadInput(f"{value[:80]!r} is not an address (0x and 40 hex digits)") from None


def checked_hash(value: str) -> str:
    text = value.lower()
    if len(text) != 66 or not text.startswith("0x") or any(ch not in "0123456789abcdef" for ch in text[2:]):
        raise BadInput(f"{value[:80]!r} is not a 32-byte hash (0x and 64 hex digits)")
    return text


def row_dict(row: sqlite3.Row | None) -> dict[str, Any]:
    return {} if row is None else {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row has no iteration of keys


class Reader:
    """The read side's plumbing: one per process, index connections per thread."""

    def __init__(
        self,
        settings: Settings,
        status: SyncStatus | None = None,
        rpc: JsonRpc | None = None,
        ipfs: IpfsClient | None = None,
    ) -> None:
        self.settings = settings
        self.status = status or SyncStatus()
        self.rpc = rpc
        self.ipfs = ipfs
        artifact = load_artifact(TASK_CONTRACT)
        self.codec = AbiCodec(artifact.abi)
        self.bytecode = artifact.bytecode
        self.chain = chain_info(settings.chain_id)
        self._local = threading.local()
        self._client_version: str | None = None
        self._ipfs_info: dict[str, Any] = {}
        self._ipfs_info_at = 0.0
        self._ipfs_lock = threading.Lock()

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_db(self.settings.index_path)
            self._local.conn = conn
        return conn

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [row_dict(r) for r in self.db.execute(sql, params).fetchall()]

    def row(self, sql: str, *params: Any) -> dict[str, Any] | None:
        row = self.db.execute(sql, params).fetchone()
        return None if row is None else row_dict(row)

    def task_row(self, address: str) -> dict[str, Any]:
        task = self.row("SELECT * FROM tasks WHERE address = ?", checked_address(address))
        if task is None:
            raise NotFound(f"no FederatedTask at {checked_address(address)} in the index")
        return task

    def link(self, kind: str, value: str | int) -> str | None:
        return explorer_link(self.settings.chain_id, kind, value)

    def client_version(self) -> str | None:
        if self._client_version is None and self.rpc is not None:
            try:
                self._client_version = str(self.rpc.call("web3_clientVersion"))
            except (RpcError, NodeUnavailable):
                return None
        return self._client_version

    def ipfs_info(self, max_age: float = 10.0) -> dict[str, Any]:
        """The IPFS node's id, version and pin count; refreshed in the background when older than `max_age`."""
        if self.ipfs is None:
            return {"api_url": None, "error": "no IPFS API configured"}
        stale = time.monotonic() - self._ipfs_info_at > max_age
        if stale and self._ipfs_lock.acquire(blocking=False):
            if not self._ipfs_info:
                self._refresh_ipfs()  # the first request waits; later ones get the cached answer at once
            else:
                threading.Thread(target=self._refresh_ipfs, daemon=True).start()
                return self._ipfs_info
        return self._ipfs_info

    def _refresh_ipfs(self) -> None:
        assert self.ipfs is not None
        try:
            info: dict[str, Any] = {"api_url": self.settings.ipfs_api, "error": None}
            try:
                ident = self.ipfs.id()
                version = self.ipfs.version()
                pins = self.ipfs.pin_ls()
                info.update(
                    id=ident.get("ID"),
                    agent_version=ident.get("AgentVersion"),
                    version=version.get("Version"),
                    pins=len(pins),
                )
            except (StorageError, OSError) as exc:
                info["error"] = f"{type(exc).__name__}: {exc}"[:300]
            self._ipfs_info = info
            self._ipfs_info_at = time.monotonic()
        finally:
            self._ipfs_lock.release()
