"""Anvil's chain kept on disk, so that no crash loses a transaction a client was told about; the devnet's RPC proxy.

Anvil keeps its chain in memory. `--state FILE` writes it only on a clean exit (and every `--state-interval`
seconds, non-atomically), so `kill -9` loses everything since the last write and can leave a torn file. Here:

- `AnvilStore` keeps numbered snapshots (`state-<gen>.json`, the JSON of `anvil_dumpState`, written atomically)
  and, beside the newest, a journal (`journal-<gen>.jsonl`) of every state-changing JSON-RPC request received
  since that snapshot, appended and fsync'ed *before* Anvil sees the request.
- `ChainProxy` listens on the devnet's RPC port and forwards to Anvil on a private port, journaling writes on
  the way (WebSocket upgrades are tunnelled as raw bytes, for eth_subscribe; a transaction sent over WebSocket is
  not journaled).
- After a crash Anvil is started with `--load-state` of the newest snapshot and the journal is replayed in order,
  while the proxy holds clients' requests: the chain comes back with every transaction, the same hashes and the
  same block numbers (timestamps and block hashes of replayed blocks differ).
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from fedchain.app.devnet.proxy import UPSTREAM_WAIT_S, HoldingProxy, ProxyHandler

log = logging.getLogger("fedchain.app.devnet")

_SNAPSHOT = re.compile(r"^state-(\d+)\.json$")
_JOURNAL = re.compile(r"^journal-(\d+)\.jsonl$")
# Anvil methods that only read; every other anvil_/evm_/hardhat_ method changes the chain and is journaled.
_READ_ONLY_CHEATS = {"anvil_dumpState", "anvil_nodeInfo", "anvil_metadata", "evm_snapshot"}


def is_write(request: Any) -> bool:
    """Whether a JSON-RPC request changes the chain (and must survive a crash)."""
    method = request.get("method") if isinstance(request, dict) else None
    if not isinstance(method, str):
        return False
    if method in ("eth_sendRawTransaction", "eth_sendTransaction"):
        return True
    return method.startswith(("anvil_", "evm_", "hardhat_")) and method not in _READ_ONLY_CHEATS


def writes_of(body: bytes) -> list[dict[str, Any]]:
    """The state-changing requests in a JSON-RPC body (one request or a batch); [] if it is not JSON."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    requests = parsed if isinstance(parsed, list) else [parsed]
    return [{"method": r["method"], "params": r.get("params", [])} for r in requests if is_write(r)]


def raw_tx_hash(raw_hex: str) -> str:
    from eth_utils import keccak  # imported late: the proxy must be listening within a fraction of a second

    return "0x" + keccak(bytes.fromhex(raw_hex.removeprefix("0x"))).hex()


class AnvilStore:
    """Snapshots and journal in one folder. `lock` serialises journal appends (with their forwarding) against
    taking a snapshot, so every write is in exactly one of: the newest snapshot, or its journal."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.generation = self._newest(_SNAPSHOT)
        self._journal = open(self.journal_path(self.generation), "ab")  # noqa: SIM115 - closed in close()

    def _newest(self, pattern: re.Pattern[str]) -> int:
        gens = [int(m.group(1)) for p in self.folder.iterdir() if (m := pattern.match(p.name))]
        return max(gens, default=0)

    def snapshot_path(self, generation: int | None = None) -> Path:
        return self.folder / f"state-{self.generation if generation is None else generation}.json"

    def journal_path(self, generation: int) -> Path:
        return self.folder / f"journal-{generation}.jsonl"

    def snapshot(self) -> Path | None:
        """The newest complete snapshot (None before the first one)."""
        path = self.snapshot_path()
        return path if self.generation > 0 and path.exists() else None

    def append(self, writes: list[dict[str, Any]]) -> None:
        """Journal requests durably (call with `lock` held, before forwarding them)."""
        self._journal.write(b"".join(json.dumps(w).encode() + b"\n" for w in writes))
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def journal(self) -> list[dict[str, Any]]:
        """The requests since the newest snapshot, in order (a torn last line from a crash is dropped)."""
        entries = []
        for line in self.journal_path(self.generation).read_bytes().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                log.warning("devnet: dropping a torn journal line in %s", self.journal_path(self.generation))
        return entries

    def save_snapshot(self, state_json: bytes) -> Path:
        """Write a new snapshot atomically, then start its (empty) journal and drop older generations
        (call with `lock` held). A crash between any two steps leaves a consistent pair on disk."""
        new = self.generation + 1
        path = self.snapshot_path(new)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(state_json)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        self.journal_path(new).touch()
        _fsync_dir(self.folder)
        self._journal.close()
        self.generation = new
        self._journal = open(self.journal_path(new), "ab")  # noqa: SIM115
        for p in self.folder.iterdir():
            m = _SNAPSHOT.match(p.name) or _JOURNAL.match(p.name)
            if m and int(m.group(1)) < new:
                p.unlink(missing_ok=True)
        return path

    def close(self) -> None:
        self._journal.close()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rpc(port: int, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
    """One JSON-RPC call to 127.0.0.1:port; raises RuntimeError on a JSON-RPC error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        conn.request("POST", "/", body, {"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def dump_state(port: int, timeout: float = 60.0) -> bytes:
    """Anvil's whole chain (blocks, receipts, accounts) as the JSON that `--load-state` reads."""
    data = bytes.fromhex(str(rpc(port, "anvil_dumpState", timeout=timeout)).removeprefix("0x"))
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def pending_count(port: int) -> int:
    return int(str(rpc(port, "txpool_status")["pending"]), 16)


def take_snapshot(store: AnvilStore, port: int, settle_s: float = 1.0) -> bool:
    """Snapshot the chain and rotate the journal; False (nothing written) while transactions are still pending,
    since a snapshot without them would orphan their journal entries."""
    with store.lock:
        deadline = time.monotonic() + settle_s
        while pending_count(port) > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        store.save_snapshot(dump_state(port))
        return True


def replay(store: AnvilStore, port: int) -> int:
    """Re-send the journal to a restarted Anvil (loaded from the newest snapshot); returns how many writes."""
    entries = store.journal()
    for entry in entries:
        if entry["method"] == "eth_sendRawTransaction":
            tx_hash = raw_tx_hash(entry["params"][0])
            if rpc(port, "eth_getTransactionReceipt", [tx_hash]) is not None:
                continue  # already in the snapshot
        try:
            rpc(port, entry["method"], entry["params"])
        except RuntimeError as exc:  # e.g. a transaction the node had refused the first time too
            log.warning("devnet: replaying %s: %s", entry["method"], exc)
        deadline = time.monotonic() + 10
        while pending_count(port) > 0 and time.monotonic() < deadline:  # keep the original order of blocks
            time.sleep(0.005)
    return len(entries)


class ChainProxy(HoldingProxy):
    """The chain's front door on the devnet's RPC port (see proxy.py); with a `store` (Anvil), every write is
    journaled before it is forwarded."""

    def __init__(self, port: int, upstream_port: int, store: AnvilStore | None) -> None:
        self.store = store
        super().__init__(port, upstream_port, "chain")

    def handler_class(self) -> type[ProxyHandler]:
        return _ChainHandler


class _ChainHandler(ProxyHandler):
    server: ChainProxy

    def do_POST(self) -> None:  # noqa: N802 - http.server.BaseHTTPRequestHandler naming
        body = self.read_body()
        store = self.server.store
        writes = writes_of(body) if store is not None else []
        if not writes or store is None:
            self.reply(*self.forward(body))
            return
        with store.lock:  # journal order == the order Anvil receives them
            store.append(writes)
            result = self.forward(body, hold=False)
        if result[0] is None:
            # Anvil died with the request journaled but unanswered: the restart replays it. Transactions keep
            # their hash, so the client is told it and finds the receipt once the chain is back.
            result = self._after_restart(body)
        self.reply(*result)

    def _after_restart(self, body: bytes) -> tuple[int | None, list[tuple[str, str]], bytes]:
        if not self.server.up.wait(UPSTREAM_WAIT_S):
            return None, [], b""
        parsed = json.loads(body)
        replies = []
        for request in parsed if isinstance(parsed, list) else [parsed]:
            if request.get("method") == "eth_sendRawTransaction":
                result: Any = raw_tx_hash(request["params"][0])
                replies.append({"jsonrpc": "2.0", "id": request.get("id"), "result": result})
            elif is_write(request):  # replayed already: sending it again would apply it twice
                replies.append(_rpc_error(request, "the chain restarted; this request was journaled and replayed"))
            else:
                status, _, data = self.forward(json.dumps(request).encode())
                replies.append(json.loads(data) if status == 200 else _rpc_error(request, "node restarting"))
        out = replies if isinstance(parsed, list) else replies[0]
        return 200, [("Content-Type", "application/json")], json.dumps(out).encode()


def _rpc_error(request: dict[str, Any], message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request.get("id"), "error": {"code": -32000, "message": message}}
