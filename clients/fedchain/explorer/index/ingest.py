"""The explorer's incremental index: blocks, transactions and logs from the node, kept in SQLite (WAL) on disk, and
the task/round/update state projected from FederatedTask's events (projection.py).

Requests never touch the node: they read this index. The `Indexer` moves a cursor forward over the chain in steps
(one SQLite transaction each), so a restart resumes where it stopped. The index is thrown away and rebuilt from
block 0 when its file is missing or unreadable, when its schema is older than this code, or when the node's genesis
block is not the one it was built from (a restarted devnet). A reorganisation is handled by rolling back to the
last block whose hash still matches and re-deriving the task tables from the stored logs.

Two modes:
- full (local devnets): every block, transaction and receipt is stored; tasks are found among contract creations
  whose receipt carries a TaskConfigured log emitted by the created contract.
- light (public networks, read-only): only FederatedTask logs (eth_getLogs by topic), their blocks, transactions
  and receipts, plus the headers of recent blocks.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from eth_utils import keccak, to_checksum_address

from fedchain.chain.artifacts import load_artifact
from fedchain.chain.tx import ErrorDecoder
from fedchain.explorer.abi import AbiCodec
from fedchain.explorer.index.projection import apply_event
from fedchain.explorer.index.records import (
    TASK_CONTRACT,
    Change,
    ContentSource,
    SyncStatus,
    checksum,
    cid,
    hex_int,
    opt_hex_int,
)
from fedchain.explorer.index.reports import apply_report, fetch_due_reports
from fedchain.explorer.index.schema import (
    DERIVED_TABLES,
    SCHEMA,
    SCHEMA_VERSION,
    connect_db,
    set_next_block,
    transaction,
)
from fedchain.explorer.rpc import JsonRpc, NodeUnavailable, RpcError

log = logging.getLogger("fedchain.explorer.index")

DEVNET_CHAIN_IDS = frozenset({1337, 31337})
RECENT_HEADERS = 20


class Indexer:
    """Builds and extends the index of one chain. Only one Indexer writes a given file at a time."""

    def __init__(
        self,
        path: Path,
        rpc: JsonRpc,
        ipfs: ContentSource | None = None,
        *,
        mode: str = "auto",
        from_block: int | None = None,
        confirmations: int | None = None,
        step_blocks: int = 200,
        watch_tasks: Iterable[str] = (),
    ) -> None:
        self.path = Path(path)
        self.rpc = rpc
        self.ipfs = ipfs
        artifact = load_artifact(TASK_CONTRACT)
        self.codec = AbiCodec(artifact.abi)
        self.bytecode = artifact.bytecode
        self.errors = ErrorDecoder(artifact.abi)
        self.topics = self.codec.event_topics()
        self.chain_id = hex_int(rpc.call("eth_chainId"))
        devnet = self.chain_id in DEVNET_CHAIN_IDS
        self.mode = ("full" if devnet else "light") if mode == "auto" else mode
        if self.mode not in ("full", "light"):
            raise ValueError(f"unknown index mode {mode!r}: choose auto, full or light")
        self.confirmations = (0 if devnet else 3) if confirmations is None else confirmations
        self.step_blocks = step_blocks
        self.watch_tasks = [to_checksum_address(a) for a in watch_tasks]
        self._requested_from = from_block
        self._block_receipts: bool | None = None
        self.status = SyncStatus(mode=self.mode)
        self.listeners: list[Callable[[list[Change]], None]] = []
        self.conn = self._open()

    # ------------------------------------------------------------------ opening, rebuilding

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        genesis = self.rpc.call("eth_getBlockByNumber", "0x0", False)
        genesis_hash = genesis["hash"] if genesis else "unknown"
        reason: str | None = None
        conn: sqlite3.Connection | None = None
        if not self.path.exists():
            reason = "no index file yet"
        else:
            try:
                conn = connect_db(self.path)
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if meta.get("schema") != str(SCHEMA_VERSION):
                    reason = f"index schema {meta.get('schema')} is not {SCHEMA_VERSION}"
                elif meta.get("genesis") != genesis_hash or meta.get("chain_id") != str(self.chain_id):
                    reason = "the node's genesis block differs from the one the index was built from"
                elif meta.get("mode") != self.mode:
                    reason = f"the index was built in {meta.get('mode')} mode, {self.mode} was asked for"
            except sqlite3.DatabaseError as exc:
                reason = f"index file unreadable ({exc})"
        if reason is not None:
            if conn is not None:
                conn.close()
            self._discard_files()
            log.info("building a new index at %s: %s", self.path, reason)
            self.status.rebuilt = reason
            conn = connect_db(self.path)
            conn.executescript(SCHEMA)
            start = self._initial_block()
            with transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("schema", str(SCHEMA_VERSION)),
                        ("genesis", genesis_hash),
                        ("chain_id", str(self.chain_id)),
                        ("mode", self.mode),
                        ("next_block", str(start)),
                        ("started_block", str(start)),
                    ],
                )
        assert conn is not None
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.status.next_block = int(meta["next_block"])
        self.status.started_block = int(meta.get("started_block", "0"))
        return conn

    def _discard_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    def _initial_block(self) -> int:
        if self._requested_from is not None:
            return max(0, self._requested_from)
        if self.mode == "full":
            return 0
        head = hex_int(self.rpc.call("eth_blockNumber"))
        return max(0, head - 5000)  # a public chain: recent history only unless --from-block says otherwise

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ syncing

    def head(self) -> int:
        return hex_int(self.rpc.call("eth_blockNumber"))

    def sync(self, until: int | None = None, max_steps: int | None = None) -> int:
        """Index up to `until` (default: the head less confirmations); returns the number of blocks indexed."""
        done = 0
        steps = 0
        while max_steps is None or steps < max_steps:
            n = self.step(until)
            steps += 1
            done += n
            if n == 0:
                break
        return done

    def step(self, until: int | None = None) -> int:
        """Index one batch of blocks (one SQLite transaction); 0 when caught up."""
        head = self.head()
        self.status.head = head
        target = head - self.confirmations if until is None else min(until, head)
        start = self.status.next_block
        if not self._check_continuity(start):
            start = self.status.next_block
        if start > target:
            self.status.last_sync = time.time()
            self.status.error = None
            return 0
        end = min(target, start + self.step_blocks - 1)
        changes = self._index_full(start, end) if self.mode == "full" else self._index_light(start, end, head)
        self.status.next_block = end + 1
        self.status.last_sync = time.time()
        self.status.error = None
        self._notify(changes)
        return end - start + 1

    def _notify(self, changes: list[Change]) -> None:
        if not changes:
            return
        for listener in self.listeners:
            try:
                listener(changes)
            except Exception:  # a broken listener must not stop indexing
                log.exception("index listener failed")

    def _check_continuity(self, start: int) -> bool:
        """True when the stored block below `start` is still on the chain; otherwise roll back (a reorg)."""
        row = self.conn.execute(
            "SELECT number, hash FROM blocks WHERE number < ? ORDER BY number DESC LIMIT 1", (start,)
        ).fetchone()
        if row is None:
            return True
        block = self.rpc.call("eth_getBlockByNumber", hex(row["number"]), False)
        if block is not None and block["hash"] == row["hash"]:
            return True
        for older in self.conn.execute(
            "SELECT number, hash FROM blocks WHERE number < ? ORDER BY number DESC LIMIT 256", (row["number"],)
        ).fetchall():
            block = self.rpc.call("eth_getBlockByNumber", hex(older["number"]), False)
            if block is not None and block["hash"] == older["hash"]:
                log.warning("chain reorganised: rolling the index back to block %d", older["number"])
                self.rollback(older["number"] + 1)
                return False
        log.warning("chain reorganised beyond the indexed window: rebuilding the index")
        self.rollback(self.status.started_block)
        return False

    def rollback(self, first_bad: int) -> None:
        """Forget blocks >= first_bad and re-derive the task tables from the logs that remain."""
        with transaction(self.conn) as c:
            for table, column in (("blocks", "number"), ("txs", "block_number"), ("logs", "block_number")):
                c.execute(f"DELETE FROM {table} WHERE {column} >= ?", (first_bad,))
            set_next_block(c, first_bad)
            self._rederive(c)
        self.status.next_block = first_bad

    def rederive(self) -> None:
        """Rebuild tasks, rounds, updates and participants from the stored logs and reports."""
        with transaction(self.conn) as c:
            self._rederive(c)

    def _rederive(self, c: sqlite3.Connection) -> None:
        for table in DERIVED_TABLES:
            c.execute(f"DELETE FROM {table}")
        for address in self.watch_tasks:
            self._ensure_watched(c, address)
        rows = c.execute(
            "SELECT l.*, t.created AS created, t.from_addr AS tx_from FROM logs l "
            "LEFT JOIN txs t ON t.hash = l.tx_hash ORDER BY l.block_number, l.log_index"
        ).fetchall()
        for row in rows:
            apply_event(c, row, json.loads(row["args"]) if row["args"] else None, row["created"], row["tx_from"])
        for report in c.execute("SELECT cid, body FROM reports WHERE body IS NOT NULL").fetchall():
            apply_report(c, report["cid"], json.loads(report["body"]))

    # ------------------------------------------------------------------ full mode

    def _receipts(self, blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        with_txs = [b for b in blocks if b["transactions"]]
        if not with_txs:
            return {}
        out: dict[str, dict[str, Any]] = {}
        if self._block_receipts is not False:
            try:
                results = self.rpc.batch([("eth_getBlockReceipts", [b["number"]]) for b in with_txs])
                if all(isinstance(r, list) for r in results):
                    self._block_receipts = True
                    for receipts in results:
                        out.update({r["transactionHash"]: r for r in receipts})
                    return out
            except NodeUnavailable:
                raise
            except RpcError:
                pass
            self._block_receipts = False
        hashes = [tx["hash"] for b in with_txs for tx in b["transactions"]]
        receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        for tx_hash, receipt in zip(hashes, receipts, strict=True):
            if receipt is None:
                raise RpcError(f"the node has no receipt for {tx_hash} yet")
            out[tx_hash] = receipt
        return out

    def _index_full(self, start: int, end: int) -> list[Change]:
        blocks = self.rpc.batch([("eth_getBlockByNumber", [hex(n), True]) for n in range(start, end + 1)])
        if any(b is None for b in blocks):
            raise RpcError(f"the node lacks a block in {start}..{end}")
        if start > 0:
            prev = self.conn.execute("SELECT hash FROM blocks WHERE number = ?", (start - 1,)).fetchone()
            if prev is not None and prev["hash"] != blocks[0]["parentHash"]:
                raise RpcError(f"block {start} does not follow the indexed block {start - 1} (a reorg in progress)")
        receipts = self._receipts(blocks)
        tx_items: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for block in blocks:
            for tx in block["transactions"]:
                tx_items.append((tx, receipts[tx["hash"]]))
        logs = [lg for _, receipt in tx_items for lg in receipt.get("logs", [])]
        return self._store(blocks, tx_items, logs, full=True, end=end)

    # ------------------------------------------------------------------ light mode

    def _index_light(self, start: int, end: int, head: int) -> list[Change]:
        logs: list[dict[str, Any]] = self._get_logs(start, end)
        block_numbers = sorted({hex_int(lg["blockNumber"]) for lg in logs})
        recent = [n for n in range(max(start, head - RECENT_HEADERS), end + 1) if n not in block_numbers]
        full_blocks = self.rpc.batch([("eth_getBlockByNumber", [hex(n), True]) for n in block_numbers])
        headers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in recent])
        wanted = sorted({lg["transactionHash"] for lg in logs})
        receipts = dict(zip(wanted, self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in wanted]), strict=True))
        tx_items = []
        for block in full_blocks:
            for tx in block["transactions"]:
                if tx["hash"] in receipts:
                    tx_items.append((tx, receipts[tx["hash"]]))
        blocks = [b for b in full_blocks + headers if b is not None]
        blocks.sort(key=lambda b: hex_int(b["number"]))
        # Logs from receipts: all of the transaction's logs, so a tx page shows its every event.
        all_logs = [lg for _, receipt in tx_items for lg in receipt.get("logs", [])]
        return self._store(blocks, tx_items, all_logs, full=False, end=end)

    def _get_logs(self, start: int, end: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        span = end - start + 1
        lo = start
        while lo <= end:
            hi = min(end, lo + span - 1)
            try:
                out.extend(
                    self.rpc.call("eth_getLogs", {"fromBlock": hex(lo), "toBlock": hex(hi), "topics": [self.topics]})
                    or []
                )
                lo = hi + 1
            except NodeUnavailable:
                raise
            except RpcError:
                if span == 1:
                    raise
                span = max(1, span // 2)  # the provider limits the range or the result size
        return out

    # ------------------------------------------------------------------ storing and deriving

    def _store(
        self,
        blocks: list[dict[str, Any]],
        tx_items: list[tuple[dict[str, Any], dict[str, Any]]],
        logs: list[dict[str, Any]],
        *,
        full: bool,
        end: int,
    ) -> list[Change]:
        """One step in one transaction: blocks, transactions and logs as served, the logs projected into the task
        tables, the cursor moved past `end`. Returns the new blocks (newest first), then what the events changed."""
        c = self.conn
        with transaction(c):
            c.executemany(
                "INSERT OR REPLACE INTO blocks VALUES (?,?,?,?,?,?,?,?,?,?)", [_block_row(b, full) for b in blocks]
            )
            creations = {tx["hash"]: created for tx, r in tx_items if (created := checksum(r.get("contractAddress")))}
            known_tasks = self._known_tasks(c, logs, creations)
            tx_rows = [self._tx_row(tx, receipt, creations.get(tx["hash"]), known_tasks) for tx, receipt in tx_items]
            c.executemany("INSERT OR REPLACE INTO txs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", tx_rows)
            tx_info = {row[0]: (row[5], row[3]) for row in tx_rows}  # hash -> (created, from)
            changes = self._store_logs(c, logs, known_tasks, tx_info)
            set_next_block(c, end + 1)
        return [_block_change(b) for b in reversed(blocks)] + changes

    def _known_tasks(self, c: sqlite3.Connection, logs: list[dict[str, Any]], creations: dict[str, str]) -> set[str]:
        """The indexed tasks and the new ones: a creation's TaskConfigured log makes its contract a task from that
        block on."""
        known = {r[0] for r in c.execute("SELECT address FROM tasks")}
        configured = self.codec.event_topic("TaskConfigured")
        for lg in logs:
            address = to_checksum_address(lg["address"])
            if lg["topics"] and lg["topics"][0] == configured and creations.get(lg["transactionHash"]) == address:
                known.add(address)
        return known

    def _tx_row(
        self, tx: dict[str, Any], receipt: dict[str, Any], created: str | None, known_tasks: set[str]
    ) -> tuple[Any, ...]:
        """A txs row; a call to a task is decoded, and a failed one gets the reason it reverted."""
        to = checksum(tx.get("to"))
        task = to if to in known_tasks else (created if created in known_tasks else None)
        fn_name = None
        if task is not None and to is not None:
            call = self.codec.decode_call(tx["input"])
            fn_name = call.name if call else None
        elif task is not None:
            fn_name = "constructor"
        status = opt_hex_int(receipt.get("status"))
        revert = None
        if status == 0 and task is not None and to is not None:
            revert = self._revert_reason(tx, hex_int(tx["blockNumber"]))
        return (
            tx["hash"],
            hex_int(tx["blockNumber"]),
            hex_int(tx["transactionIndex"]),
            to_checksum_address(tx["from"]),
            to,
            created,
            str(hex_int(tx.get("value"))),
            hex_int(tx["nonce"]),
            hex_int(tx["gas"]),
            opt_hex_int(receipt.get("gasUsed")),
            opt_hex_int(receipt.get("effectiveGasPrice") or tx.get("gasPrice")),
            status,
            tx["input"],
            task,
            fn_name,
            revert,
        )

    def _store_logs(
        self,
        c: sqlite3.Connection,
        logs: list[dict[str, Any]],
        known_tasks: set[str],
        tx_info: dict[str, tuple[str | None, str]],
    ) -> list[Change]:
        """Store the logs in chain order, decoding those of tasks and projecting them (projection.py)."""
        changes: list[Change] = []
        for lg in sorted(logs, key=lambda x: (hex_int(x["blockNumber"]), hex_int(x["logIndex"]))):
            address = to_checksum_address(lg["address"])
            decoded = self.codec.decode_log(lg["topics"], lg["data"]) if address in known_tasks else None
            args = decoded.args if decoded else None
            c.execute(
                "INSERT OR REPLACE INTO logs VALUES (?,?,?,?,?,?,?,?)",
                (
                    hex_int(lg["blockNumber"]),
                    hex_int(lg["logIndex"]),
                    lg["transactionHash"],
                    address,
                    json.dumps(lg["topics"]),
                    lg["data"],
                    decoded.name if decoded else None,
                    json.dumps(args) if args is not None else None,
                ),
            )
            if decoded is not None:
                created, sender = tx_info.get(lg["transactionHash"], (None, None))
                row = {
                    "block_number": hex_int(lg["blockNumber"]),
                    "log_index": hex_int(lg["logIndex"]),
                    "tx_hash": lg["transactionHash"],
                    "address": address,
                    "name": decoded.name,
                }
                change = apply_event(c, row, args, created, sender)
                if change is not None:
                    changes.append(change)
        return changes

    def _revert_reason(self, tx: dict[str, Any], block: int) -> str | None:
        call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx.get("value", "0x0")}
        try:
            self.rpc.call("eth_call", call, hex(max(0, block - 1)))
        except NodeUnavailable:
            raise
        except RpcError as exc:
            data = getattr(exc, "data", None)
            if isinstance(data, str):
                return str(self.errors.decode(data))
            return str(exc)
        return "reverted (reason not reproducible)"

    def _ensure_watched(self, c: sqlite3.Connection, address: str) -> None:
        """A task named with --task whose creation lies before the indexed range: read its configuration."""
        if c.execute("SELECT 1 FROM tasks WHERE address = ?", (address,)).fetchone():
            return
        calls = [
            "modelSpecDigest",
            "initialModelDigest",
            "numRounds",
            "minUpdates",
            "maxUpdates",
            "roundDuration",
            "strategyId",
        ]
        values = []
        for name in calls:
            selector = "0x" + keccak(text=f"{name}()")[:4].hex()
            result = self.rpc.try_call("eth_call", {"to": address, "data": selector}, "latest")
            if not result or result == "0x":
                log.warning("%s does not look like a FederatedTask (no %s()): not watched", address, name)
                return
            values.append(result)
        # k-of-n aggregation settings: absent from tasks deployed before commit-reveal (shown as unknown).
        optional = []
        for name in ("aggregatorThreshold", "aggregationDuration"):
            selector = "0x" + keccak(text=f"{name}()")[:4].hex()
            result = self.rpc.try_call("eth_call", {"to": address, "data": selector}, "latest")
            optional.append(hex_int(result) if result and result != "0x" else None)
        c.execute(
            "INSERT INTO tasks(address, model_spec_cid, initial_model_cid, num_rounds, min_updates, max_updates, "
            "round_duration, strategy_id, phase, current_round, aggregator_threshold, aggregation_duration) "
            "VALUES (?,?,?,?,?,?,?,?, 'registering', 0, ?, ?)",
            (
                address,
                cid("0x" + values[0][2:66]),
                cid("0x" + values[1][2:66]),
                *(hex_int(v) for v in values[2:]),
                *optional,
            ),
        )

    def add_watched_tasks(self) -> None:
        if not self.watch_tasks:
            return
        with transaction(self.conn) as c:
            for address in self.watch_tasks:
                self._ensure_watched(c, address)

    # ------------------------------------------------------------------ aggregation reports

    def fetch_reports(self, limit: int = 20) -> int:
        """Fetch reports of committed rounds not yet fetched (with backoff on failures); returns how many landed."""
        if self.ipfs is None:
            return 0
        landed = fetch_due_reports(self.conn, self.ipfs, limit)
        self._notify(landed)
        return len(landed)


def _block_row(b: dict[str, Any], full: bool) -> tuple[Any, ...]:
    """A blocks row; `full` when the block came with its transactions (a header alone is not)."""
    return (
        hex_int(b["number"]),
        b["hash"],
        b["parentHash"],
        hex_int(b["timestamp"]),
        len(b["transactions"]),
        hex_int(b["gasUsed"]),
        hex_int(b["gasLimit"]),
        opt_hex_int(b.get("baseFeePerGas")),
        checksum(b.get("miner")),
        1 if full or (b["transactions"] and isinstance(b["transactions"][0], dict)) else 0,
    )


def _block_change(b: dict[str, Any]) -> Change:
    return Change(
        "block",
        {
            "number": hex_int(b["number"]),
            "hash": b["hash"],
            "timestamp": hex_int(b["timestamp"]),
            "tx_count": len(b["transactions"]),
            "gas_used": hex_int(b["gasUsed"]),
            "base_fee": opt_hex_int(b.get("baseFeePerGas")),
        },
    )
