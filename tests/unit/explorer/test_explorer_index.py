"""The index: what it derives from FederatedTask's events, idempotence, resuming, and safe rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest
from explorer_fakes import (
    AGGREGATOR,
    DEVICE_A,
    DEVICE_B,
    TASK,
    FakeChain,
    FakeIpfs,
    FakeTx,
    Scenario,
    build_scenario,
    call_data,
    dump,
    encode_log,
)

from fedchain.explorer.index import Indexer


def _indexed(path: Path, s: Scenario, **kwargs: object) -> Indexer:
    indexer = Indexer(path, s.chain, s.ipfs, **kwargs)  # type: ignore[arg-type]
    indexer.sync()
    indexer.fetch_reports()
    return indexer


def test_rounds_updates_and_participants_come_from_the_events(tmp_path: Path, scenario: Scenario) -> None:
    ix = _indexed(tmp_path / "index.sqlite", scenario)
    c = ix.conn
    task = dict(c.execute("SELECT * FROM tasks").fetchone())
    assert task["address"] == TASK and task["phase"] == "finished" and task["current_round"] == 2
    assert task["model_spec_cid"] == scenario.spec_cid and task["final_model_cid"] == scenario.model_cids[2]
    roles = {(r["address"], r["role"]): r["status"] for r in c.execute("SELECT * FROM participants")}
    assert roles[(AGGREGATOR, "aggregator")] == "active"
    assert roles[(DEVICE_A, "device")] == roles[(DEVICE_B, "device")] == "approved"
    assert ("0x" + "a0" * 20).lower() in {a.lower() for a, role in roles if role == "admin"}

    rounds = {r["round"]: dict(r) for r in c.execute("SELECT * FROM rounds")}
    assert set(rounds) == {1, 2}
    for r, row in rounds.items():
        assert row["state"] == "committed" and row["received"] == 2
        assert row["model_cid"] == scenario.model_cids[r] and row["report_cid"] == scenario.report_cids[r]
        assert row["gas"] == 38_000 + 43_000 + 30_000 + 69_000  # both submissions, the commit and the reveal
        assert (row["commits"], row["reveals"], row["aggregators"], row["faults"]) == (1, 1, 1, 0)
        assert row["accuracy"] == pytest.approx(0.8 + 0.05 * r)
    updates = {(u["round"], u["device"]): dict(u) for u in c.execute("SELECT * FROM updates")}
    assert updates[(1, DEVICE_B)]["status"] == "accepted"
    assert updates[(2, DEVICE_B)]["status"] == "rejected"
    assert updates[(2, DEVICE_B)]["reason"] == "NonFiniteWeights"
    assert updates[(2, DEVICE_A)]["train_seconds"] == 1.5
    assert updates[(1, DEVICE_A)]["cid"] == scenario.update_cids[(1, DEVICE_A)]
    # The unrelated contract's log is stored raw, not decoded.
    raw = c.execute("SELECT name, args FROM logs WHERE address != ?", (TASK,)).fetchall()
    assert raw and all(r["name"] is None and r["args"] is None for r in raw)


def test_sync_is_idempotent_and_resumes_without_refetching(tmp_path: Path, scenario: Scenario) -> None:
    path = tmp_path / "index.sqlite"
    ix = _indexed(path, scenario)
    first = dump(ix.conn)
    assert ix.sync() == 0  # nothing new
    ix.rederive()  # re-deriving from the stored logs and reports gives the same tables
    assert dump(ix.conn) == first
    ix.close()

    before = scenario.chain.calls.get("eth_getBlockReceipts", 0)
    again = Indexer(path, scenario.chain, scenario.ipfs)  # type: ignore[arg-type]
    assert again.status.rebuilt is None
    assert again.sync() == 0
    assert scenario.chain.calls.get("eth_getBlockReceipts", 0) == before
    assert dump(again.conn) == first


def test_new_blocks_extend_the_index_incrementally(tmp_path: Path) -> None:
    s = build_scenario(rounds=3)
    blocks = s.chain.blocks
    s.chain.blocks = blocks[:8]  # genesis, 4 setup blocks, a transfer, round 1 submissions
    ix = Indexer(tmp_path / "index.sqlite", s.chain, s.ipfs, step_blocks=3)  # type: ignore[arg-type]
    ix.sync()
    assert ix.conn.execute("SELECT state FROM rounds WHERE round = 1").fetchone()[0] == "aggregating"
    s.chain.blocks = blocks
    ix.sync()
    ix.fetch_reports()
    full = _indexed(tmp_path / "other.sqlite", s)
    assert dump(ix.conn) == dump(full.conn)


def test_missing_index_file_is_rebuilt_identically(tmp_path: Path, scenario: Scenario) -> None:
    path = tmp_path / "index.sqlite"
    ix = _indexed(path, scenario)
    first = dump(ix.conn)
    ix.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    rebuilt = _indexed(path, scenario)
    assert rebuilt.status.rebuilt == "no index file yet"
    assert dump(rebuilt.conn) == first


def test_corrupt_index_file_is_rebuilt(tmp_path: Path, scenario: Scenario) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    ix = _indexed(path, scenario)
    assert "unreadable" in (ix.status.rebuilt or "")
    assert ix.conn.execute("SELECT COUNT(*) FROM rounds").fetchone()[0] == 2


def test_index_of_another_chain_is_discarded(tmp_path: Path, scenario: Scenario) -> None:
    path = tmp_path / "index.sqlite"
    _indexed(path, scenario).close()
    other = build_scenario(FakeChain(genesis_salt="restarted devnet"), rounds=1)
    ix = _indexed(path, other)
    assert "genesis" in (ix.status.rebuilt or "")
    assert [r[0] for r in ix.conn.execute("SELECT round FROM rounds")] == [1]


def test_reorganised_blocks_are_rolled_back(tmp_path: Path, scenario: Scenario) -> None:
    ix = _indexed(tmp_path / "index.sqlite", scenario)
    last = len(scenario.chain.blocks) - 1
    # The final reveal is replaced by an empty block with a different hash (a reorg at the head).
    scenario.chain.blocks[last] = []
    scenario.chain.salts[last] = "fork"
    scenario.chain.add_block()
    ix.sync()
    assert ix.conn.execute("SELECT state FROM rounds WHERE round = 2").fetchone()[0] == "revealing"
    assert ix.conn.execute("SELECT phase FROM tasks").fetchone()[0] == "revealing"
    assert ix.conn.execute("SELECT hash FROM blocks WHERE number = ?", (last,)).fetchone()[0] == (
        scenario.chain.block_hash(last)
    )


def test_unavailable_report_is_shown_and_retried(tmp_path: Path) -> None:
    ipfs = FakeIpfs()
    s = build_scenario(ipfs=ipfs, rounds=1)
    ipfs.down = True
    ix = Indexer(tmp_path / "index.sqlite", s.chain, ipfs)  # type: ignore[arg-type]
    ix.sync()
    assert ix.fetch_reports() == 0
    row = ix.conn.execute("SELECT report_error, accuracy FROM rounds WHERE round = 1").fetchone()
    assert "not available" in row["report_error"] and row["accuracy"] is None
    assert {r[0] for r in ix.conn.execute("SELECT status FROM updates")} == {"committed"}
    ipfs.down = False
    ix.conn.execute("UPDATE reports SET next_attempt = 0")
    assert ix.fetch_reports() == 1
    assert ix.conn.execute("SELECT report_error FROM rounds").fetchone()[0] is None


def test_task_configured_by_a_non_creation_is_ignored(tmp_path: Path) -> None:
    """Only a contract's own constructor log makes it a task: another contract emitting the event does not."""
    chain = FakeChain()
    impostor = "0x" + "66" * 20
    log = encode_log(
        impostor,
        "TaskConfigured",
        admin=DEVICE_A,
        modelSpecDigest=b"\x01" * 32,
        initialModelDigest=b"\x02" * 32,
        numRounds=1,
        minUpdates=1,
        maxUpdates=1,
        roundDuration=1,
        strategyId=0,
        aggregatorThreshold=1,
        aggregationDuration=1,
    )
    chain.add_block(FakeTx(DEVICE_A, impostor, "0x", [log]))
    ix = Indexer(tmp_path / "index.sqlite", chain, FakeIpfs())  # type: ignore[arg-type]
    ix.sync()
    assert ix.conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0


def test_nodes_without_block_receipts_are_served_per_transaction(tmp_path: Path) -> None:
    s = build_scenario(FakeChain(receipts_by_block=False), rounds=1)
    ix = _indexed(tmp_path / "index.sqlite", s)
    assert ix.conn.execute("SELECT state FROM rounds").fetchone()[0] == "committed"
    assert s.chain.calls["eth_getTransactionReceipt"] > 0


def test_a_relayed_batch_counts_its_entries_and_gas_to_the_round(tmp_path: Path, scenario: Scenario) -> None:
    """UpdateBatchSubmitted: one transaction, `entries` updates received (the relayer's claim, as on chain)."""
    before = _indexed(tmp_path / "before.sqlite", scenario).conn
    row = dict(before.execute("SELECT received, gas FROM rounds WHERE round = 2").fetchone())
    relayer = "0x" + "7e" * 20
    values = (2, b"\x01" * 32, b"\x02" * 32, 5, 500)
    types = ("uint32", "bytes32", "bytes32", "uint32", "uint64")
    log = encode_log(
        TASK,
        "UpdateBatchSubmitted",
        round=2,
        relayer=relayer,
        batchDigest=values[1],
        entriesRoot=values[2],
        entries=5,
        totalSamples=500,
    )
    data = call_data("submitUpdateBatch(uint32,bytes32,bytes32,uint32,uint64)", types, values)
    scenario.chain.add_block(FakeTx(relayer, TASK, data, [log], gas_used=34_386))
    after = _indexed(tmp_path / "after.sqlite", scenario).conn
    assert dict(after.execute("SELECT received, gas FROM rounds WHERE round = 2").fetchone()) == {
        "received": row["received"] + 5,
        "gas": row["gas"] + 34_386,
    }
