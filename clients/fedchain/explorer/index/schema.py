"""The index's SQLite schema and connection settings.

Raw chain data (blocks, txs, logs) is kept as the node served it; the task tables (DERIVED_TABLES) are a projection
of the stored logs and reports, so a reorganisation or a rebuild re-derives them (projection.py, reports.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A file built by an older schema is thrown away and rebuilt from the chain.
SCHEMA_VERSION = 4
# Task phases by the contract's Phase enum (tasks.phase); round states (rounds.state): open, aggregating (the commit
# window), revealing, committed (k reveals agreed), failed (no agreement: the next round retries), cancelled.
PHASES = ("registering", "open", "aggregating", "finished", "cancelled", "revealing")

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
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: taken at once (IMMEDIATE), so a reader never sees half of an indexing step."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def set_next_block(c: sqlite3.Connection, value: int) -> None:
    c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_block', ?)", (str(value),))
