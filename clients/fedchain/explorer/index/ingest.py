"""The explorer's incremental index: blocks, transactions and logs from the node, and the task/round/update state
derived from FederatedTask's events, kept in SQLite (WAL) on disk.

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

Aggregation is k-of-n commit-reveal among the task's aggregators: every ResultCommitted and ResultRevealed lands in
`round_aggregators` (one row per round and aggregator: commitment, revealed model and report, whether it agrees
with the final result, AggregatorFault), and the round goes open -> aggregating (commit window) -> revealing ->
committed (k reveals agreed: AggregateCommitted) or failed (AggregationFailed: the next round retries it).

The final aggregation report (JSON on IPFS, digest in AggregateCommitted) is fetched once, verified against its CID
by the storage client, and folded into the round (accuracy, loss: evaluated by the aggregator; strategy and its
parameters) and its updates (accepted or rejected, with the reason).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eth_utils import keccak, to_checksum_address

from fedchain.chain.artifacts import load_artifact
from fedchain.chain.tx import ErrorDecoder
from fedchain.explorer.abi import AbiCodec
from fedchain.explorer.rpc import JsonRpc, NodeUnavailable, RpcError
from fedchain.storage import digest_to_cid

log = logging.getLogger("fedchain.explorer.index")

SCHEMA_VERSION = 4
TASK_CONTRACT = "FederatedTask"
AGGREGATOR_ROLE = "0x" + keccak(text="AGGREGATOR_ROLE").hex()
DEFAULT_ADMIN_ROLE = "0x" + "00" * 32
DEVNET_CHAIN_IDS = frozenset({1337, 31337})
# Events that attribute their transaction's gas to a round. The finalising reveal and a failed round's window close
# also open the next round: they count to the round they end, not there. A late reveal (after the round was final,
# possibly after later rounds opened) counts to the round it reveals.
ROUND_GAS_EVENTS = frozenset(
    {
        "UpdateSubmitted",
        "UpdateBatchSubmitted",
        "RoundExtended",
        "RoundReadyForAggregation",
        "ResultCommitted",
        "RevealOpened",
        "ResultRevealed",
        "AggregateCommitted",
        "AggregatorFault",
        "AggregationFailed",
        "SetupSubmitted",
        "SetupSetFrozen",
        "UnmaskSharesSubmitted",
    }
)
# Task phases by the contract's Phase enum; round states: open, aggregating (the commit window), revealing, committed
# (k reveals agreed), failed (no agreement: the next round retries), cancelled.
PHASES = ("registering", "open", "aggregating", "finished", "cancelled", "revealing")
# The on-chain strategy ids (fedchain.learning.aggregation.registry.STRATEGY_IDS, kept here without importing the
# learning stack): a report naming another strategy than its task's is flagged.
STRATEGY_NAMES = {
    0: "fedavg",
    1: "fedavgm",
    2: "fedadam",
    3: "fedyogi",
    4: "fedprox",
    5: "median",
    6: "trimmed-mean",
    7: "krum",
    8: "multi-krum",
    9: "bulyan",
}
MAX_REPORT_BYTES = 4 << 20
REPORT_RETRY_S = (1.0, 2.0, 5.0, 15.0, 60.0)
RECENT_HEADERS = 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY, hash TEXT NOT NULL, parent_hash TEXT NOT NULL, timestamp INTEGER NOT NULL,
    tx_count INTEGER NOT NULL, gas_used INTEGER NOT NULL, gas_limit INTEGER NOT NULL, base_fee INTEGER,
    miner TEXT, full INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_hash ON blocks(hash);
CREATE TABLE IF NOT EXISTS txs (
    hash TEXT PRIMARY KEY, block_number INTEGER NOT NULL, tx_index INTEGER NOT NULL, from_addr TEXT NOT NULL,
    to_addr TEXT, created TEXT, value TEXT NOT NULL, nonce INTEGER NOT NULL, gas_limit INTEGER NOT NULL,
    gas_used INTEGER, gas_price INTEGER, status INTEGER, input TEXT NOT NULL, task TEXT, fn_name TEXT, revert TEXT
);
CREATE INDEX IF NOT EXISTS txs_block ON txs(block_number, tx_index);
CREATE INDEX IF NOT EXISTS txs_from ON txs(from_addr, block_number);
CREATE INDEX IF NOT EXISTS txs_to ON txs(to_addr, block_number);
CREATE INDEX IF NOT EXISTS txs_task ON txs(task, block_number);
CREATE TABLE IF NOT EXISTS logs (
    block_number INTEGER NOT NULL, log_index INTEGER NOT NULL, tx_hash TEXT NOT NULL, address TEXT NOT NULL,
    topics TEXT NOT NULL, data TEXT NOT NULL, name TEXT, args TEXT, PRIMARY KEY (block_number, log_index)
);
CREATE INDEX IF NOT EXISTS logs_tx ON logs(tx_hash);
CREATE INDEX IF NOT EXISTS logs_address ON logs(address, block_number);
CREATE TABLE IF NOT EXISTS tasks (
    address TEXT PRIMARY KEY, created_block INTEGER, created_tx TEXT, creator TEXT, admin TEXT,
    model_spec_cid TEXT, initial_model_cid TEXT, num_rounds INTEGER, min_updates INTEGER, max_updates INTEGER,
    round_duration INTEGER, strategy_id INTEGER, phase TEXT NOT NULL, current_round INTEGER NOT NULL,
    final_model_cid TEXT, ended_block INTEGER, aggregator_threshold INTEGER, aggregation_duration INTEGER,
    failed_rounds INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS participants (
    task TEXT NOT NULL, address TEXT NOT NULL, role TEXT NOT NULL, status TEXT NOT NULL, since_round INTEGER,
    since_block INTEGER, changed_block INTEGER, PRIMARY KEY (task, address, role)
);
CREATE INDEX IF NOT EXISTS participants_address ON participants(address);
CREATE TABLE IF NOT EXISTS rounds (
    task TEXT NOT NULL, round INTEGER NOT NULL, state TEXT NOT NULL, opened_block INTEGER, opened_tx TEXT,
    opened_at INTEGER, global_model_cid TEXT, deadline INTEGER, extensions INTEGER NOT NULL DEFAULT 0,
    received INTEGER NOT NULL DEFAULT 0, ready_block INTEGER, ready_tx TEXT, total_samples INTEGER,
    inputs_hash TEXT, committed_block INTEGER, committed_tx TEXT, committed_at INTEGER, aggregator TEXT,
    model_cid TEXT, report_cid TEXT, accepted_updates INTEGER, rejected_updates INTEGER, accuracy REAL, loss REAL,
    report_error TEXT, gas INTEGER NOT NULL DEFAULT 0, aggregators INTEGER, commit_deadline INTEGER,
    commits INTEGER NOT NULL DEFAULT 0, reveal_block INTEGER, reveal_tx TEXT, reveal_opened_at INTEGER,
    reveal_deadline INTEGER, reveals INTEGER NOT NULL DEFAULT 0, faults INTEGER NOT NULL DEFAULT 0,
    failed_block INTEGER, failed_tx TEXT, failed_at INTEGER, strategy TEXT, strategy_params TEXT,
    server_state_cid TEXT, report_note TEXT, PRIMARY KEY (task, round)
);
CREATE TABLE IF NOT EXISTS round_aggregators (
    task TEXT NOT NULL, round INTEGER NOT NULL, aggregator TEXT NOT NULL, commitment TEXT, commit_tx TEXT,
    commit_block INTEGER, commit_log INTEGER, committed_at INTEGER, model_cid TEXT, report_cid TEXT,
    accepted INTEGER, reveal_tx TEXT, reveal_block INTEGER, reveal_log INTEGER, revealed_at INTEGER,
    late INTEGER NOT NULL DEFAULT 0, agrees INTEGER, fault INTEGER NOT NULL DEFAULT 0, fault_tx TEXT,
    fault_block INTEGER, fault_count INTEGER, final_model_cid TEXT, PRIMARY KEY (task, round, aggregator)
);
CREATE INDEX IF NOT EXISTS round_aggregators_address ON round_aggregators(aggregator, task, round);
CREATE INDEX IF NOT EXISTS round_aggregators_model ON round_aggregators(model_cid);
CREATE INDEX IF NOT EXISTS round_aggregators_report ON round_aggregators(report_cid);
CREATE INDEX IF NOT EXISTS round_aggregators_commit_tx ON round_aggregators(commit_tx);
CREATE INDEX IF NOT EXISTS round_aggregators_reveal_tx ON round_aggregators(reveal_tx);
CREATE INDEX IF NOT EXISTS rounds_report ON rounds(report_cid);
CREATE INDEX IF NOT EXISTS rounds_committed_tx ON rounds(committed_tx);
CREATE TABLE IF NOT EXISTS round_txs (
    task TEXT NOT NULL, round INTEGER NOT NULL, tx_hash TEXT NOT NULL, PRIMARY KEY (task, round, tx_hash)
);
CREATE TABLE IF NOT EXISTS updates (
    task TEXT NOT NULL, round INTEGER NOT NULL, device TEXT NOT NULL, cid TEXT NOT NULL, num_samples INTEGER NOT NULL,
    tx_hash TEXT NOT NULL, block_number INTEGER NOT NULL, log_index INTEGER NOT NULL, status TEXT NOT NULL,
    reason TEXT, detail TEXT, train_seconds REAL, PRIMARY KEY (task, round, device)
);
CREATE INDEX IF NOT EXISTS updates_device ON updates(device, task, round);
CREATE INDEX IF NOT EXISTS updates_tx ON updates(tx_hash);
CREATE INDEX IF NOT EXISTS updates_cid ON updates(cid);
CREATE TABLE IF NOT EXISTS reports (
    cid TEXT PRIMARY KEY, task TEXT NOT NULL, round INTEGER NOT NULL, body TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL DEFAULT 0
);
"""
DERIVED_TABLES = ("tasks", "participants", "rounds", "round_txs", "updates", "round_aggregators")


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


def _int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return int(value, 16) if isinstance(value, str) and value.startswith("0x") else int(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _addr(value: str | None) -> str | None:
    return None if not value else to_checksum_address(value)


def _cid(hex_digest: str) -> str:
    return digest_to_cid(hex_digest)


def connect_db(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the settings every user of the index shares (WAL, foreign-free, row access by name)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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
        self.chain_id = _int(rpc.call("eth_chainId"))
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
            with _transaction(conn):
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
        head = _int(self.rpc.call("eth_blockNumber"))
        return max(0, head - 5000)  # a public chain: recent history only unless --from-block says otherwise

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ syncing

    def head(self) -> int:
        return _int(self.rpc.call("eth_blockNumber"))

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
        with _transaction(self.conn) as c:
            for table, column in (("blocks", "number"), ("txs", "block_number"), ("logs", "block_number")):
                c.execute(f"DELETE FROM {table} WHERE {column} >= ?", (first_bad,))
            self._set_next_block(c, first_bad)
            self._rederive(c)
        self.status.next_block = first_bad

    def rederive(self) -> None:
        """Rebuild tasks, rounds, updates and participants from the stored logs and reports."""
        with _transaction(self.conn) as c:
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
            self._apply(c, row, json.loads(row["args"]) if row["args"] else None, row["created"], row["tx_from"])
        for report in c.execute("SELECT cid, body FROM reports WHERE body IS NOT NULL").fetchall():
            self._apply_report(c, report["cid"], json.loads(report["body"]))

    @staticmethod
    def _set_next_block(c: sqlite3.Connection, value: int) -> None:
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_block', ?)", (str(value),))

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
        block_numbers = sorted({_int(lg["blockNumber"]) for lg in logs})
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
        blocks.sort(key=lambda b: _int(b["number"]))
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
        changes: list[Change] = []
        c = self.conn
        with _transaction(c):
            c.executemany(
                "INSERT OR REPLACE INTO blocks VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        _int(b["number"]),
                        b["hash"],
                        b["parentHash"],
                        _int(b["timestamp"]),
                        len(b["transactions"]),
                        _int(b["gasUsed"]),
                        _int(b["gasLimit"]),
                        _opt_int(b.get("baseFeePerGas")),
                        _addr(b.get("miner")),
                        1 if full or (b["transactions"] and isinstance(b["transactions"][0], dict)) else 0,
                    )
                    for b in blocks
                ],
            )
            known_tasks = {r[0] for r in c.execute("SELECT address FROM tasks")}
            # New tasks first: a creation's TaskConfigured log makes its contract a task from that block on.
            creations: dict[str, str] = {}
            for tx, receipt in tx_items:
                created = _addr(receipt.get("contractAddress"))
                if created:
                    creations[tx["hash"]] = created
            for lg in logs:
                address = to_checksum_address(lg["address"])
                if (
                    lg["topics"]
                    and lg["topics"][0] == self.codec.event_topic("TaskConfigured")
                    and creations.get(lg["transactionHash"]) == address
                ):
                    known_tasks.add(address)
            tx_rows = []
            for tx, receipt in tx_items:
                to = _addr(tx.get("to"))
                created = creations.get(tx["hash"])
                task = to if to in known_tasks else (created if created in known_tasks else None)
                fn_name = None
                if task is not None and to is not None:
                    call = self.codec.decode_call(tx["input"])
                    fn_name = call.name if call else None
                elif task is not None:
                    fn_name = "constructor"
                status = _opt_int(receipt.get("status"))
                revert = None
                if status == 0 and task is not None and to is not None:
                    revert = self._revert_reason(tx, _int(tx["blockNumber"]))
                tx_rows.append(
                    (
                        tx["hash"],
                        _int(tx["blockNumber"]),
                        _int(tx["transactionIndex"]),
                        to_checksum_address(tx["from"]),
                        to,
                        created,
                        str(_int(tx.get("value"))),
                        _int(tx["nonce"]),
                        _int(tx["gas"]),
                        _opt_int(receipt.get("gasUsed")),
                        _opt_int(receipt.get("effectiveGasPrice") or tx.get("gasPrice")),
                        status,
                        tx["input"],
                        task,
                        fn_name,
                        revert,
                    )
                )
            c.executemany("INSERT OR REPLACE INTO txs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", tx_rows)
            tx_info = {row[0]: (row[5], row[3]) for row in tx_rows}  # hash -> (created, from)
            for lg in sorted(logs, key=lambda x: (_int(x["blockNumber"]), _int(x["logIndex"]))):
                address = to_checksum_address(lg["address"])
                decoded = self.codec.decode_log(lg["topics"], lg["data"]) if address in known_tasks else None
                args = decoded.args if decoded else None
                c.execute(
                    "INSERT OR REPLACE INTO logs VALUES (?,?,?,?,?,?,?,?)",
                    (
                        _int(lg["blockNumber"]),
                        _int(lg["logIndex"]),
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
                        "block_number": _int(lg["blockNumber"]),
                        "log_index": _int(lg["logIndex"]),
                        "tx_hash": lg["transactionHash"],
                        "address": address,
                        "name": decoded.name,
                    }
                    change = self._apply(c, row, args, created, sender)
                    if change is not None:
                        changes.append(change)
            self._set_next_block(c, end + 1)
        for b in blocks:
            changes.insert(
                0,
                Change(
                    "block",
                    {
                        "number": _int(b["number"]),
                        "hash": b["hash"],
                        "timestamp": _int(b["timestamp"]),
                        "tx_count": len(b["transactions"]),
                        "gas_used": _int(b["gasUsed"]),
                        "base_fee": _opt_int(b.get("baseFeePerGas")),
                    },
                ),
            )
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
            optional.append(_int(result) if result and result != "0x" else None)
        c.execute(
            "INSERT INTO tasks(address, model_spec_cid, initial_model_cid, num_rounds, min_updates, max_updates, "
            "round_duration, strategy_id, phase, current_round, aggregator_threshold, aggregation_duration) "
            "VALUES (?,?,?,?,?,?,?,?, 'registering', 0, ?, ?)",
            (
                address,
                _cid("0x" + values[0][2:66]),
                _cid("0x" + values[1][2:66]),
                *(_int(v) for v in values[2:]),
                *optional,
            ),
        )

    def add_watched_tasks(self) -> None:
        if not self.watch_tasks:
            return
        with _transaction(self.conn) as c:
            for address in self.watch_tasks:
                self._ensure_watched(c, address)

    def _apply(
        self,
        c: sqlite3.Connection,
        row: Any,
        args: dict[str, Any] | None,
        created: str | None,
        sender: str | None,
    ) -> Change | None:
        """Fold one decoded FederatedTask log into the task tables."""
        if args is None or row["name"] is None:
            return None
        name: str = row["name"]
        task: str = row["address"]
        block: int = row["block_number"]
        tx_hash: str = row["tx_hash"]
        if name == "TaskConfigured":
            if created != task:
                return None  # only the constructor's own log configures a task
            c.execute(
                "INSERT OR REPLACE INTO tasks(address, created_block, created_tx, creator, admin, model_spec_cid, "
                "initial_model_cid, num_rounds, min_updates, max_updates, round_duration, strategy_id, phase, "
                "current_round, aggregator_threshold, aggregation_duration) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?, 'registering', 0, ?, ?)",
                (
                    task,
                    block,
                    tx_hash,
                    sender,
                    args["admin"],
                    _cid(args["modelSpecDigest"]),
                    _cid(args["initialModelDigest"]),
                    args["numRounds"],
                    args["minUpdates"],
                    args["maxUpdates"],
                    args["roundDuration"],
                    args["strategyId"],
                    args.get("aggregatorThreshold"),
                    args.get("aggregationDuration"),
                ),
            )
            c.execute(
                "INSERT OR REPLACE INTO participants VALUES (?,?, 'admin', 'active', 0, ?, ?)",
                (task, args["admin"], block, block),
            )
            return Change("task", {"task": task, "phase": "registering"})
        if c.execute("SELECT 1 FROM tasks WHERE address = ?", (task,)).fetchone() is None:
            return None
        if name in ("RoleGranted", "RoleRevoked"):
            role = {AGGREGATOR_ROLE: "aggregator", DEFAULT_ADMIN_ROLE: "admin"}.get(args["role"], args["role"])
            status = "active" if name == "RoleGranted" else "revoked"
            current = c.execute("SELECT current_round FROM tasks WHERE address = ?", (task,)).fetchone()[0]
            c.execute(
                "INSERT INTO participants VALUES (?,?,?,?,?,?,?) ON CONFLICT(task, address, role) DO UPDATE SET "
                "status = excluded.status, changed_block = excluded.changed_block",
                (task, args["account"], role, status, current, block, block),
            )
            return None
        if name == "DeviceJoinRequested":
            c.execute(
                "INSERT INTO participants VALUES (?,?, 'device', 'requested', NULL, ?, ?) "
                "ON CONFLICT(task, address, role) DO UPDATE SET status = 'requested', "
                "changed_block = excluded.changed_block",
                (task, args["device"], block, block),
            )
            return None
        if name == "DeviceApproved":
            c.execute(
                "INSERT INTO participants VALUES (?,?, 'device', 'approved', ?, ?, ?) "
                "ON CONFLICT(task, address, role) DO UPDATE SET status = 'approved', "
                "since_round = excluded.since_round, since_block = excluded.since_block, "
                "changed_block = excluded.changed_block",
                (task, args["device"], args["round"], block, block),
            )
            return None
        if name == "DeviceRemoved":
            status = "left" if args["by"] == args["device"] else "removed"
            c.execute(
                "UPDATE participants SET status = ?, changed_block = ? "
                "WHERE task = ? AND address = ? AND role = 'device'",
                (status, block, task, args["device"]),
            )
            return None
        if name == "TaskFinished":
            c.execute(
                "UPDATE tasks SET phase = 'finished', final_model_cid = ?, ended_block = ? WHERE address = ?",
                (_cid(args["finalModelDigest"]), block, task),
            )
            return Change("task", {"task": task, "phase": "finished"})
        if name == "TaskCancelled":
            c.execute("UPDATE tasks SET phase = 'cancelled', ended_block = ? WHERE address = ?", (block, task))
            c.execute(
                "UPDATE rounds SET state = 'cancelled' WHERE task = ? AND round = ? "
                "AND state NOT IN ('committed', 'failed')",
                (task, args["round"]),
            )
            return Change("task", {"task": task, "phase": "cancelled", "round": args["round"]})
        r = args.get("round")
        if r is None:
            return None
        if name in ROUND_GAS_EVENTS:
            self._attribute_gas(c, task, r, tx_hash)
        timestamp = self._timestamp(c, block)
        if name == "RoundOpened":
            c.execute(
                "INSERT OR REPLACE INTO rounds(task, round, state, opened_block, opened_tx, opened_at, "
                "global_model_cid, deadline, gas) VALUES (?,?, 'open', ?,?,?,?,?, "
                "COALESCE((SELECT gas FROM rounds WHERE task = ? AND round = ?), 0))",
                (task, r, block, tx_hash, timestamp, _cid(args["globalModelDigest"]), args["deadline"], task, r),
            )
            c.execute("UPDATE tasks SET phase = 'open', current_round = ? WHERE address = ?", (r, task))
        elif name == "UpdateSubmitted":
            c.execute(
                "INSERT OR REPLACE INTO updates VALUES (?,?,?,?,?,?,?,?, 'pending', NULL, NULL, NULL)",
                (
                    task,
                    r,
                    args["device"],
                    _cid(args["updateDigest"]),
                    args["numSamples"],
                    tx_hash,
                    block,
                    row["log_index"],
                ),
            )
            c.execute("UPDATE rounds SET received = received + 1 WHERE task = ? AND round = ?", (task, r))
        elif name == "UpdateBatchSubmitted":
            # A relayed batch: its entries count as received (the relayer's claim, as on chain); which of them the
            # aggregators accepted is in the round's report. The entries themselves are in the batch file on IPFS.
            c.execute(
                "UPDATE rounds SET received = received + ? WHERE task = ? AND round = ?", (args["entries"], task, r)
            )
        elif name == "RoundExtended":
            c.execute(
                "UPDATE rounds SET deadline = ?, extensions = extensions + 1 WHERE task = ? AND round = ?",
                (args["newDeadline"], task, r),
            )
        elif name == "RoundReadyForAggregation":
            # The commit window opens; its deadline is not in the event: the block's time plus aggregationDuration.
            # n is the number of aggregators holding the role now (the contract's aggregatorCount).
            c.execute(
                "UPDATE rounds SET state = 'aggregating', ready_block = ?, ready_tx = ?, total_samples = ?, "
                "inputs_hash = ?, commit_deadline = ? + (SELECT aggregation_duration FROM tasks WHERE address = ?), "
                "aggregators = (SELECT COUNT(*) FROM participants WHERE task = ? AND role = 'aggregator' "
                "AND status = 'active') WHERE task = ? AND round = ?",
                (block, tx_hash, args["totalSamples"], args["inputsHash"], timestamp, task, task, task, r),
            )
            c.execute("UPDATE tasks SET phase = 'aggregating' WHERE address = ? AND current_round = ?", (task, r))
        elif name == "ResultCommitted":
            c.execute(
                "INSERT INTO round_aggregators(task, round, aggregator, commitment, commit_tx, commit_block, "
                "commit_log, committed_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(task, round, aggregator) DO UPDATE "
                "SET commitment = excluded.commitment, commit_tx = excluded.commit_tx, "
                "commit_block = excluded.commit_block, commit_log = excluded.commit_log, "
                "committed_at = excluded.committed_at",
                (task, r, args["aggregator"], args["commitment"], tx_hash, block, row["log_index"], timestamp),
            )
            c.execute("UPDATE rounds SET commits = commits + 1 WHERE task = ? AND round = ?", (task, r))
        elif name == "RevealOpened":
            c.execute(
                "UPDATE rounds SET state = 'revealing', reveal_block = ?, reveal_tx = ?, reveal_opened_at = ?, "
                "reveal_deadline = ?, commits = ? WHERE task = ? AND round = ?",
                (block, tx_hash, timestamp, args["deadline"], args["commits"], task, r),
            )
            c.execute("UPDATE tasks SET phase = 'revealing' WHERE address = ? AND current_round = ?", (task, r))
        elif name == "ResultRevealed":
            self._apply_reveal(c, task, r, args, tx_hash, block, row["log_index"], timestamp)
        elif name == "AggregatorFault":
            c.execute(
                "INSERT INTO round_aggregators(task, round, aggregator, fault, fault_tx, fault_block, fault_count, "
                "final_model_cid, agrees) VALUES (?,?,?, 1, ?,?,?,?, 0) ON CONFLICT(task, round, aggregator) "
                "DO UPDATE SET fault = 1, fault_tx = excluded.fault_tx, fault_block = excluded.fault_block, "
                "fault_count = excluded.fault_count, final_model_cid = excluded.final_model_cid, agrees = 0",
                (task, r, args["aggregator"], tx_hash, block, args["faults"], _cid(args["finalModelDigest"])),
            )
            c.execute("UPDATE rounds SET faults = faults + 1 WHERE task = ? AND round = ?", (task, r))
        elif name == "AggregationFailed":
            # The next round (RoundOpened, same transaction) retries with the unchanged global model.
            c.execute(
                "UPDATE rounds SET state = 'failed', failed_block = ?, failed_tx = ?, failed_at = ?, commits = ?, "
                "reveals = ? WHERE task = ? AND round = ?",
                (block, tx_hash, timestamp, args["commits"], args["reveals"], task, r),
            )
            c.execute("UPDATE tasks SET failed_rounds = failed_rounds + 1 WHERE address = ?", (task,))
            # No commitment at all: a secure round short of minUpdates at its deadline, or no aggregator committed.
            reason = (
                "the aggregators did not agree"
                if int(args["commits"]) > 0
                else "the round failed before any result was committed (too few updates, or no aggregator answered)"
            )
            c.execute(
                "UPDATE updates SET status = 'not-aggregated', reason = ? WHERE task = ? AND round = ? "
                "AND status = 'pending'",
                (reason, task, r),
            )
        elif name == "AggregateCommitted":
            report_cid = _cid(args["reportDigest"])
            c.execute(
                "UPDATE rounds SET state = 'committed', committed_block = ?, committed_tx = ?, committed_at = ?, "
                "aggregator = ?, model_cid = ?, report_cid = ?, accepted_updates = ?, inputs_hash = ? "
                "WHERE task = ? AND round = ?",
                (
                    block,
                    tx_hash,
                    timestamp,
                    args["aggregator"],
                    _cid(args["modelDigest"]),
                    report_cid,
                    args["acceptedUpdates"],
                    args["inputsHash"],
                    task,
                    r,
                ),
            )
            c.execute(
                "UPDATE updates SET status = 'committed' WHERE task = ? AND round = ? AND status = 'pending'", (task, r)
            )
            # Which reveals so far agree with the final result (model and accepted count: the contract's key within
            # the reveal window, where every reveal used the round's inputs hash). Faults follow as their own events.
            c.execute(
                "UPDATE round_aggregators SET agrees = CASE WHEN model_cid = ? AND accepted = ? THEN 1 ELSE 0 END, "
                "final_model_cid = ? WHERE task = ? AND round = ? AND model_cid IS NOT NULL AND fault = 0",
                (_cid(args["modelDigest"]), args["acceptedUpdates"], _cid(args["modelDigest"]), task, r),
            )
            c.execute(
                "INSERT OR IGNORE INTO reports(cid, task, round) VALUES (?,?,?)",
                (report_cid, task, r),
            )
            stored = c.execute("SELECT body FROM reports WHERE cid = ?", (report_cid,)).fetchone()
            if stored is not None and stored["body"]:
                self._apply_report(c, report_cid, json.loads(stored["body"]))
        state = c.execute("SELECT state, received FROM rounds WHERE task = ? AND round = ?", (task, r)).fetchone()
        return Change(
            "round",
            {
                "task": task,
                "round": r,
                "event": name,
                "state": state["state"] if state else None,
                "received": state["received"] if state else None,
                "block": block,
            },
        )

    @staticmethod
    def _apply_reveal(
        c: sqlite3.Connection,
        task: str,
        r: int,
        args: dict[str, Any],
        tx_hash: str,
        block: int,
        log_index: int,
        timestamp: int | None,
    ) -> None:
        """A ResultRevealed: in the reveal window it counts towards the round's reveals; after the round was
        finalised (a late reveal, possibly rounds later) it is compared with the final result at once."""
        rnd = c.execute(
            "SELECT state, model_cid, accepted_updates FROM rounds WHERE task = ? AND round = ?", (task, r)
        ).fetchone()
        model_cid = _cid(args["modelDigest"])
        late = rnd is not None and rnd["state"] == "committed"
        agrees = None
        if late:
            agrees = int(model_cid == rnd["model_cid"] and args["acceptedUpdates"] == rnd["accepted_updates"])
        c.execute(
            "INSERT INTO round_aggregators(task, round, aggregator, model_cid, report_cid, accepted, reveal_tx, "
            "reveal_block, reveal_log, revealed_at, late, agrees, final_model_cid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(task, round, aggregator) DO UPDATE SET model_cid = excluded.model_cid, "
            "report_cid = excluded.report_cid, accepted = excluded.accepted, reveal_tx = excluded.reveal_tx, "
            "reveal_block = excluded.reveal_block, reveal_log = excluded.reveal_log, "
            "revealed_at = excluded.revealed_at, late = excluded.late, "
            "agrees = CASE WHEN fault = 1 THEN 0 ELSE excluded.agrees END, "
            "final_model_cid = COALESCE(final_model_cid, excluded.final_model_cid)",
            (
                task,
                r,
                args["aggregator"],
                model_cid,
                _cid(args["reportDigest"]),
                args["acceptedUpdates"],
                tx_hash,
                block,
                log_index,
                timestamp,
                int(late),
                agrees,
                rnd["model_cid"] if late else None,
            ),
        )
        if not late:
            c.execute("UPDATE rounds SET reveals = reveals + 1 WHERE task = ? AND round = ?", (task, r))

    @staticmethod
    def _timestamp(c: sqlite3.Connection, block: int) -> int | None:
        row = c.execute("SELECT timestamp FROM blocks WHERE number = ?", (block,)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _attribute_gas(c: sqlite3.Connection, task: str, r: int, tx_hash: str) -> None:
        cur = c.execute("INSERT OR IGNORE INTO round_txs VALUES (?,?,?)", (task, r, tx_hash))
        if cur.rowcount:
            gas = c.execute("SELECT gas_used FROM txs WHERE hash = ?", (tx_hash,)).fetchone()
            if gas is not None and gas[0] is not None:
                c.execute(
                    "INSERT INTO rounds(task, round, state, gas) VALUES (?,?, 'open', ?) "
                    "ON CONFLICT(task, round) DO UPDATE SET gas = gas + excluded.gas",
                    (task, r, int(gas[0])),
                )

    # ------------------------------------------------------------------ aggregation reports

    def fetch_reports(self, limit: int = 20) -> int:
        """Fetch reports of committed rounds not yet fetched (with backoff on failures); returns how many landed."""
        if self.ipfs is None:
            return 0
        now = time.time()
        due = self.conn.execute(
            "SELECT cid, task, round, attempts FROM reports WHERE body IS NULL AND next_attempt <= ? "
            "ORDER BY task, round LIMIT ?",
            (now, limit),
        ).fetchall()
        landed: list[Change] = []
        for row in due:
            try:
                body = json.loads(self.ipfs.cat(row["cid"], max_size=MAX_REPORT_BYTES))
                if not isinstance(body, dict):
                    raise ValueError("the report is not a JSON object")
            except Exception as exc:  # unreachable IPFS, a mismatching or malformed report: shown, retried later
                attempts = row["attempts"] + 1
                delay = REPORT_RETRY_S[min(attempts - 1, len(REPORT_RETRY_S) - 1)]
                message = f"{type(exc).__name__}: {exc}"[:300]
                with _transaction(self.conn) as c:
                    c.execute(
                        "UPDATE reports SET error = ?, attempts = ?, next_attempt = ? WHERE cid = ?",
                        (message, attempts, now + delay, row["cid"]),
                    )
                    c.execute(
                        "UPDATE rounds SET report_error = ? WHERE report_cid = ?",
                        (f"aggregation report not available yet: {message}", row["cid"]),
                    )
                continue
            with _transaction(self.conn) as c:
                c.execute(
                    "UPDATE reports SET body = ?, error = NULL, attempts = attempts + 1 WHERE cid = ?",
                    (json.dumps(body, sort_keys=True), row["cid"]),
                )
                self._apply_report(c, row["cid"], body)
            landed.append(Change("round", {"task": row["task"], "round": row["round"], "event": "report"}))
        self._notify(landed)
        return len(landed)

    def _apply_report(self, c: sqlite3.Connection, report_cid: str, body: dict[str, Any]) -> None:
        rnd = c.execute("SELECT task, round, model_cid FROM rounds WHERE report_cid = ?", (report_cid,)).fetchone()
        if rnd is None:
            return
        task, r = rnd["task"], rnd["round"]
        problems = []
        if body.get("round") != r:
            problems.append(f"report says round {body.get('round')}, chain says {r}")
        if body.get("model_cid") not in (None, rnd["model_cid"]):
            problems.append(f"report's model {body.get('model_cid')} differs from the committed {rnd['model_cid']}")
        submitted = {
            u["device"]: u["cid"]
            for u in c.execute("SELECT device, cid FROM updates WHERE task = ? AND round = ?", (task, r))
        }
        for status, entries in (("accepted", body.get("accepted")), ("rejected", body.get("rejected"))):
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict):
                    continue
                device = entry.get("device")
                try:
                    device = to_checksum_address(device) if isinstance(device, str) else None
                except ValueError:
                    device = None
                if device is None or device not in submitted:
                    problems.append(f"report lists {entry.get('device')!r}, which submitted nothing this round")
                    continue
                if entry.get("cid") != submitted[device]:
                    problems.append(f"report's CID for {device} differs from the one on chain")
                train = entry.get("train_seconds")
                c.execute(
                    "UPDATE updates SET status = ?, reason = ?, detail = ?, train_seconds = ? "
                    "WHERE task = ? AND round = ? AND device = ?",
                    (
                        status,
                        str(entry.get("reason")) if status == "rejected" and entry.get("reason") else None,
                        str(entry.get("detail"))[:500] if entry.get("detail") else None,
                        float(train) if isinstance(train, int | float) else None,
                        task,
                        r,
                        device,
                    ),
                )
        c.execute(
            "UPDATE updates SET status = 'unreported', reason = 'not listed in the aggregation report' "
            "WHERE task = ? AND round = ? AND status IN ('pending', 'committed')",
            (task, r),
        )
        metrics = body.get("metrics") if isinstance(body.get("metrics"), dict) else {}
        rejected = body.get("rejected") if isinstance(body.get("rejected"), list) else []
        accuracy, loss = metrics.get("accuracy"), metrics.get("loss")
        strategy = body.get("strategy") if isinstance(body.get("strategy"), str) else None
        params = body.get("strategy_params") if isinstance(body.get("strategy_params"), dict) else None
        configured = c.execute("SELECT strategy_id FROM tasks WHERE address = ?", (task,)).fetchone()
        expected = STRATEGY_NAMES.get(configured[0]) if configured is not None else None
        if strategy is not None and expected is not None and strategy != expected:
            problems.append(f"report says strategy {strategy}, the task's configuration says {expected}")
        state_cid = body.get("server_state_cid")
        note = body.get("note")
        c.execute(
            "UPDATE rounds SET accuracy = ?, loss = ?, rejected_updates = ?, report_error = ?, strategy = ?, "
            "strategy_params = ?, server_state_cid = ?, report_note = ? WHERE task = ? AND round = ?",
            (
                float(accuracy) if isinstance(accuracy, int | float) else None,
                float(loss) if isinstance(loss, int | float) else None,
                len(rejected),
                "; ".join(problems)[:500] or None,
                strategy,
                json.dumps(params, sort_keys=True) if params is not None else None,
                state_cid if isinstance(state_cid, str) and state_cid else None,
                str(note)[:500] if note else None,
                task,
                r,
            ),
        )


class Follower:
    """A daemon thread that keeps an Indexer caught up with the chain and fetches reports."""

    def __init__(self, indexer: Indexer, interval: float = 0.5) -> None:
        self.indexer = indexer
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedchain-explorer-index", daemon=True)
        self.caught_up = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self.interval
        try:
            self.indexer.add_watched_tasks()
        except Exception as exc:
            log.warning("cannot read the watched tasks: %s", exc)
        while not self._stop.is_set():
            try:
                indexed = self.indexer.step()
                self.indexer.fetch_reports()
                backoff = self.interval
                if indexed:
                    continue
                self.caught_up.set()
            except Exception as exc:  # the node went away, a reorg in progress: show it, retry with backoff
                self.indexer.status.error = f"{type(exc).__name__}: {exc}"[:400]
                log.warning("indexing paused: %s", exc)
                backoff = min(10.0, backoff * 2)
            self._stop.wait(backoff)
