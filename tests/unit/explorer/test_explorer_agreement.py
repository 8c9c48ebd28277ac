"""k-of-n aggregation in the index, the JSON API and the pages: three aggregators with one liar (its fault shown), a
failed round retried in the next, a late reveal after the next round opened, and reorganisations over reveals."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from explorer_fakes import (
    DEVICE_A,
    DEVICE_B,
    HONEST_1,
    HONEST_2,
    LIAR,
    TASK,
    FakeChain,
    Scenario,
    build_agreement_scenario,
    dump,
)
from fastapi.testclient import TestClient
from rich.console import Console

from fedchain.explorer.app import ExplorerRuntime, create_app
from fedchain.explorer.index import Follower, Indexer
from fedchain.explorer.live import LiveFeed
from fedchain.explorer.queries import Explorer, Settings
from fedchain.explorer.terminal import rounds_table


@pytest.fixture
def agreement() -> Scenario:
    return build_agreement_scenario()


def _indexed(path: Path, s: Scenario) -> Indexer:
    indexer = Indexer(path, s.chain, s.ipfs)  # type: ignore[arg-type]
    indexer.sync()
    indexer.fetch_reports()
    return indexer


def _rows(ix: Indexer, sql: str, *params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in ix.conn.execute(sql, params).fetchall()]


def _aggregators(ix: Indexer, r: int) -> dict[str, dict[str, Any]]:
    rows = _rows(ix, "SELECT * FROM round_aggregators WHERE round = ?", r)
    return {row["aggregator"]: row for row in rows}


def _gas(s: Scenario, *blocks: int) -> int:
    return sum(tx.gas_used for n in blocks for tx in s.chain.blocks[n])


def test_three_aggregators_with_a_liar_finalise_and_fault_it(tmp_path: Path, agreement: Scenario) -> None:
    ix = _indexed(tmp_path / "index.sqlite", agreement)
    task = _rows(ix, "SELECT * FROM tasks")[0]
    assert (task["aggregator_threshold"], task["aggregation_duration"], task["strategy_id"]) == (2, 30, 8)
    r1 = _rows(ix, "SELECT * FROM rounds WHERE round = 1")[0]
    assert r1["state"] == "committed" and r1["aggregator"] == HONEST_2
    assert (r1["aggregators"], r1["commits"], r1["reveals"], r1["faults"]) == (3, 3, 3, 1)
    assert r1["model_cid"] == agreement.model_cids[1] and r1["report_cid"] == agreement.report_cids[1]
    assert r1["commit_deadline"] is not None and r1["reveal_deadline"] == 100
    # Every transaction of the round counts: 2 submissions, 3 commitments, 3 reveals (its last 7 blocks).
    final = agreement.blocks["round 1 final"]
    assert r1["gas"] == _gas(agreement, *range(final - 6, final + 1))
    rows = _aggregators(ix, 1)
    assert {a: (r["agrees"], r["fault"]) for a, r in rows.items()} == {
        HONEST_1: (1, 0),
        HONEST_2: (1, 0),
        LIAR: (0, 1),
    }
    liar = rows[LIAR]
    assert liar["model_cid"] == agreement.revealed[(1, LIAR)] != agreement.model_cids[1]
    assert liar["fault_count"] == 1 and liar["fault_block"] == final and liar["late"] == 0
    assert liar["final_model_cid"] == agreement.model_cids[1]
    assert all(r["commitment"] and r["commit_tx"] and r["reveal_tx"] for r in rows.values())
    # The Multi-Krum report: strategy and parameters, and the update the strategy excluded.
    assert (r1["strategy"], json.loads(r1["strategy_params"]), r1["report_error"]) == (
        "multi-krum",
        {"f": 1, "m": 0},
        None,
    )
    updates = {u["device"]: u for u in _rows(ix, "SELECT * FROM updates WHERE round = 1")}
    assert updates[DEVICE_B]["status"] == "rejected" and updates[DEVICE_B]["reason"] == "excluded-by-strategy"
    assert updates[DEVICE_A]["status"] == "accepted"


def test_a_round_without_agreement_fails_and_the_next_retries_it(tmp_path: Path, agreement: Scenario) -> None:
    ix = _indexed(tmp_path / "index.sqlite", agreement)
    rounds = {r["round"]: r for r in _rows(ix, "SELECT * FROM rounds")}
    assert [rounds[r]["state"] for r in sorted(rounds)] == ["committed", "failed", "committed", "committed"]
    r2 = rounds[2]
    assert r2["failed_block"] == agreement.blocks["round 2 failed"] and r2["model_cid"] is None
    assert (r2["commits"], r2["reveals"], r2["faults"]) == (2, 2, 0)
    assert rounds[3]["global_model_cid"] == agreement.model_cids[1]  # the retry starts from the same model
    rows = _aggregators(ix, 2)
    assert set(rows) == {HONEST_1, LIAR} and all(r["agrees"] is None and not r["fault"] for r in rows.values())
    assert {(u["status"], u["reason"]) for u in _rows(ix, "SELECT status, reason FROM updates WHERE round = 2")} == {
        ("not-aggregated", "the aggregators did not agree")  # two commitments were made: they disagreed
    }
    task = _rows(ix, "SELECT * FROM tasks")[0]
    assert task["phase"] == "finished" and task["failed_rounds"] == 1 and task["current_round"] == 4
    assert task["final_model_cid"] == agreement.model_cids[4]


def test_a_late_reveal_after_the_next_round_opened_records_the_fault(tmp_path: Path, agreement: Scenario) -> None:
    ix = _indexed(tmp_path / "index.sqlite", agreement)
    late = agreement.blocks["late reveal"]
    liar = _aggregators(ix, 3)[LIAR]
    assert (liar["late"], liar["agrees"], liar["fault"], liar["fault_count"]) == (1, 0, 1, 2)
    assert liar["reveal_block"] == liar["fault_block"] == late
    r3, r4 = (_rows(ix, "SELECT * FROM rounds WHERE round = ?", n)[0] for n in (3, 4))
    assert r4["opened_block"] < late  # the reveal came after round 4 had opened
    assert (r3["reveals"], r3["faults"]) == (2, 1)  # in-window reveals only; the late fault still counts
    # Its gas counts to the round it reveals, not to the round open at the time.
    late_hash = agreement.chain.tx_hash(late, 0)
    assert _rows(ix, "SELECT round FROM round_txs WHERE tx_hash = ?", late_hash) == [{"round": 3}]
    assert r4["gas"] == _gas(agreement, *range(late + 1, late + 7))
    assert LIAR not in _aggregators(ix, 4)  # it did not commit to round 4


@pytest.mark.parametrize("where", ["round 1 final", "late reveal"])
def test_a_reorg_over_a_reveal_rolls_the_agreement_back(tmp_path: Path, where: str) -> None:
    s = build_agreement_scenario()
    original = copy.deepcopy(s.chain)
    ix = _indexed(tmp_path / "index.sqlite", s)
    first_bad = s.blocks[where]
    # The reveal and everything after it are replaced by a shorter fork of empty blocks.
    for n in range(first_bad, len(s.chain.blocks)):
        s.chain.salts[n] = "fork"
    s.chain.blocks = [*s.chain.blocks[:first_bad], [], []]
    ix.sync()
    ix.fetch_reports()
    fresh = _indexed(tmp_path / "fresh.sqlite", copy.deepcopy(s))  # the forked chain indexed from scratch
    assert dump(ix.conn) == dump(fresh.conn)
    if where == "round 1 final":
        r1 = _rows(ix, "SELECT * FROM rounds WHERE round = 1")[0]
        assert (r1["state"], r1["reveals"], r1["faults"], r1["aggregator"]) == ("revealing", 2, 0, None)
        rows = _aggregators(ix, 1)
        assert rows[LIAR]["fault"] == 0 and rows[LIAR]["agrees"] is None and rows[HONEST_2]["reveal_tx"] is None
        assert _rows(ix, "SELECT phase, failed_rounds FROM tasks") == [{"phase": "revealing", "failed_rounds": 0}]
        assert _rows(ix, "SELECT round FROM rounds WHERE round > 1") == []
    else:
        liar = _aggregators(ix, 3)[LIAR]
        assert liar["reveal_tx"] is None and liar["fault"] == 0 and liar["commit_tx"] is not None
        assert _rows(ix, "SELECT faults FROM rounds WHERE round = 3") == [{"faults": 0}]
        assert _rows(ix, "SELECT phase, current_round FROM tasks") == [{"phase": "open", "current_round": 4}]
    # The original chain wins again: the index equals one built from it directly.
    s.chain.blocks, s.chain.salts = original.blocks, original.salts
    ix.sync()
    ix.fetch_reports()
    assert dump(ix.conn) == dump(_indexed(tmp_path / "original.sqlite", s).conn)


@pytest.fixture
def client(tmp_path: Path, agreement: Scenario) -> Iterator[TestClient]:
    path = tmp_path / "index.sqlite"
    indexer = _indexed(path, agreement)
    explorer = Explorer(Settings("http://127.0.0.1:1", "http://127.0.0.1:2", 31337, path), indexer.status)
    explorer.rpc = agreement.chain  # type: ignore[assignment]
    explorer.ipfs = agreement.ipfs  # type: ignore[assignment]
    runtime = ExplorerRuntime(indexer, Follower(indexer), explorer, LiveFeed())
    with TestClient(create_app(runtime, start_follower=False)) as c:
        yield c


def _verdicts(rnd: dict[str, Any]) -> dict[str, str]:
    return {e["aggregator"]: e["verdict"] for e in rnd["agreement"]["entries"]}


def test_round_api_and_page_show_the_agreement(client: TestClient, agreement: Scenario) -> None:
    r1 = client.get(f"/api/task/{TASK}/round/1").json()
    g = r1["agreement"]
    assert g["status"] == "agreed" and g["summary"] == "2 of 3 aggregators agreed (threshold 2)"
    assert (g["threshold"], g["aggregators"], g["commits"], g["reveals"], g["agreed"]) == (2, 3, 3, 3, 2)
    assert g["faulted"] == [LIAR] and g["finalised_by"] == HONEST_2
    assert _verdicts(r1) == {HONEST_1: "agreed", HONEST_2: "agreed", LIAR: "faulted"}
    entries = {e["aggregator"]: e for e in g["entries"]}
    assert entries[HONEST_2]["finalised"] and not entries[HONEST_1]["finalised"]
    assert entries[LIAR]["model_cid"] == agreement.revealed[(1, LIAR)] and entries[LIAR]["fault_count"] == 1
    assert r1["aggregate"]["strategy"] == "multi-krum" and r1["aggregate"]["strategy_params"] == {"f": 1, "m": 0}
    page = client.get(f"/task/{TASK}/round/1").text
    assert 'id="agreement"' in page and "2 of 3 aggregators agreed" in page
    liar_row = page.split(f'<tr data-aggregator="{LIAR}">')[1].split("</tr>")[0]
    assert "faulted" in liar_row and "fault #1" in liar_row
    assert "excluded-by-strategy" in page

    r2 = client.get(f"/api/task/{TASK}/round/2").json()
    assert r2["state"] == "failed" and r2["retried_in"] == 3 and r2["aggregate"] is None
    assert r2["agreement"]["summary"].startswith("no agreement: retried in round 3")
    assert r2["agreement"]["failed"]["retried_in"] == 3
    assert _verdicts(r2) == {HONEST_1: "no-agreement", LIAR: "no-agreement", HONEST_2: "did-not-commit"}
    page = client.get(f"/task/{TASK}/round/2").text
    assert "no agreement: retried in round 3" in page and f'href="/task/{TASK}/round/3"' in page

    r3 = client.get(f"/api/task/{TASK}/round/3").json()
    assert r3["retry_of"] == 2 and _verdicts(r3)[LIAR] == "faulted"
    late = next(e for e in r3["agreement"]["entries"] if e["aggregator"] == LIAR)
    assert late["late"] and late["fault_count"] == 2
    assert "retries round" in client.get(f"/task/{TASK}/round/3").text
    assert _verdicts(client.get(f"/api/task/{TASK}/round/4").json())[LIAR] == "did-not-commit"


def test_task_api_and_page_show_threshold_aggregators_faults_and_failed_rounds(client: TestClient) -> None:
    t = client.get(f"/api/task/{TASK}").json()
    c = t["config"]
    assert (c["aggregator_threshold"], c["aggregation_duration"]) == (2, 30)
    assert (c["strategy"], c["strategy_name"], c["strategy_params"]) == ("Multi-Krum", "multi-krum", {"f": 1, "m": 0})
    faults = {a["address"]: a["faults"] for a in t["aggregators"]}
    assert faults == {HONEST_1: 0, HONEST_2: 0, LIAR: 2}
    liar = next(a for a in t["aggregators"] if a["address"] == LIAR)
    assert (liar["commits"], liar["reveals"], liar["agreed"], liar["late_reveals"]) == (3, 3, 0, 1)
    assert next(p for p in t["participants"] if p["address"] == LIAR)["faults"] == 2
    assert [(f["round"], f["retried_in"]) for f in t["failed_rounds"]] == [(2, 3)]
    assert t["totals"]["rounds_failed"] == 1 and t["totals"]["faults"] == 2 and t["totals"]["rounds_committed"] == 3
    assert [r["state"] for r in t["rounds"]] == ["committed", "failed", "committed", "committed"]
    assert [r["agreed"] for r in t["rounds"]] == [2, 0, 2, 2]
    page = client.get(f"/task/{TASK}").text
    assert "Multi-Krum" in page and "f=1, m=0" in page and "2 of 3 aggregators must agree" in page
    liar_row = page.split(f'<tr data-aggregator="{LIAR}">')[1].split("</tr>")[0]
    assert '<span class="badge faulted">2</span>' in liar_row
    assert 'id="failed-rounds"' in page
    (listed,) = client.get("/api/tasks").json()
    assert listed["failed_rounds"] == 1 and listed["aggregator_threshold"] == 2 and listed["aggregators"] == 3
    console = Console(file=io.StringIO(), width=250)
    console.print(rounds_table(t))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "none → 3" in text and "2/3 (1 faulted)" in text


def test_aggregator_address_transactions_and_content(client: TestClient, agreement: Scenario) -> None:
    a = client.get(f"/api/address/{LIAR}").json()
    assert a["kind"] == "aggregator"
    (g,) = a["aggregator_tasks"]
    assert (g["commits"], g["reveals"], g["agreed"], g["faults"], g["late_reveals"]) == (3, 3, 0, 2, 1)
    assert [(e["round"], e["verdict"]) for e in g["rounds"]] == [(1, "faulted"), (2, "no-agreement"), (3, "faulted")]
    page = client.get(f"/address/{LIAR}").text
    assert page.count('class="badge faulted"') >= 3 and "Aggregation in task" in page
    honest = client.get(f"/api/address/{HONEST_2}").json()["aggregator_tasks"][0]
    assert (honest["finalised"], honest["faults"], honest["agreed"]) == (3, 0, 3)

    late = client.get(f"/api/tx/{agreement.chain.tx_hash(agreement.blocks['late reveal'], 0)}").json()
    assert [(r["kind"], r["round"], r["aggregator"]) for r in late["related"]] == [("late reveal", 3, LIAR)]
    assert [e["name"] for e in late["events"]] == ["ResultRevealed", "AggregatorFault"]
    assert late["call"]["function"] == "revealResult"
    final = client.get(f"/api/tx/{agreement.chain.tx_hash(agreement.blocks['round 1 final'], 0)}").json()
    assert {(r["kind"], r["aggregator"]) for r in final["related"]} == {
        ("reveal", HONEST_2),
        ("fault", LIAR),
        ("aggregate", HONEST_2),
    }
    assert "Fault of aggregator" in client.get(f"/tx/{final['hash']}").text

    lie = client.get(f"/api/ipfs/{agreement.revealed[(1, LIAR)]}").json()
    assert {"revealed_model"} == {r["kind"] for r in lie["references"]}
    assert lie["references"][0]["aggregator"] == LIAR
    assert client.get(f"/ipfs/{agreement.revealed[(1, LIAR)]}").status_code == 200
    model = client.get(f"/api/ipfs/{agreement.model_cids[1]}").json()
    assert {r["kind"] for r in model["references"]} >= {"aggregate", "revealed_model", "global_model"}


def test_pages_render_while_aggregation_is_in_progress(tmp_path: Path) -> None:
    """Stop the chain in each phase of round 1: every page renders, and the round says where it stands."""
    full = build_agreement_scenario()
    final = full.blocks["round 1 final"]
    expected = {
        final - 4: ("aggregating", "collecting commitments", "2 of 3 aggregators committed"),
        final - 2: ("revealing", "revealing", "1 of 3 commitments revealed"),
    }
    for end, (state, status, summary) in expected.items():
        chain = FakeChain()
        chain.blocks = full.chain.blocks[: end + 1]
        s = Scenario(chain, full.ipfs, full.spec_cid, {}, {}, {})
        path = tmp_path / f"index-{end}.sqlite"
        indexer = _indexed(path, s)
        explorer = Explorer(Settings("http://127.0.0.1:1", None, 31337, path), indexer.status)
        runtime = ExplorerRuntime(indexer, Follower(indexer), explorer, LiveFeed())
        with TestClient(create_app(runtime, start_follower=False)) as c:
            rnd = c.get(f"/api/task/{TASK}/round/1").json()
            assert rnd["state"] == state and rnd["agreement"]["status"] == status
            assert rnd["agreement"]["summary"].startswith(summary)
            verdicts = set(_verdicts(rnd).values())
            assert verdicts <= {"awaiting-reveal", "not-committed", "revealed"}
            assert c.get(f"/api/task/{TASK}").json()["phase"] == state
            for path_ in (f"/task/{TASK}", f"/task/{TASK}/round/1", f"/address/{LIAR}", "/"):
                assert c.get(path_).status_code == 200, path_
