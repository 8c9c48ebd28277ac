"""The HTML pages router (explorer/pages.py) alone on a FastAPI app, over a real index: each page renders its
Explorer dict with its title, its JSON twin and its live-update channel; the template filters and charts; the
redirects of search and of a task's address page; the message page."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from explorer_fakes import DEVICE_A, DEVICE_B, TASK, Scenario
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from jinja2 import Undefined

from fedchain.explorer import pages
from fedchain.explorer.queries import Explorer, NotFound


@pytest.fixture
def client(indexed_explorer: Explorer) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(pages.router(indexed_explorer))

    @app.get("/message/{code}")
    def message(request: Request, code: int) -> object:
        return pages.message_page(request, code, "Not found", "no <such> thing", indexed_explorer)

    with TestClient(app) as c:
        yield c


def _title(html: str) -> str:
    match = re.search(r"<title>(.*?)</title>", html, re.S)
    assert match is not None
    return match.group(1)


def _api_link(html: str) -> str | None:
    match = re.search(r'id="api-link">([^<]*)<', html)
    return match.group(1) if match else None


def _live(html: str) -> str:
    match = re.search(r'<body data-live="([^"]*)"', html)
    assert match is not None
    return match.group(1)


def test_each_page_has_its_title_json_twin_and_live_channel(client: TestClient, scenario: Scenario) -> None:
    cid = scenario.report_cids[1]
    expected = [
        ("/", "Overview", "/api/overview", "block round:*"),
        (f"/task/{TASK}", f"Task {pages.short(TASK)}", f"/api/task/{TASK}", f"round:{TASK}"),
        (
            f"/task/{TASK}/round/2",
            f"Round 2 · task {pages.short(TASK)}",
            f"/api/task/{TASK}/round/2",
            f"round:{TASK}/2",
        ),
        (
            f"/task/{TASK}/round/2/update/{DEVICE_B}",
            f"Update of {pages.short(DEVICE_B)} · round 2",
            f"/api/task/{TASK}/round/2/update/{DEVICE_B}",
            f"round:{TASK}/2",
        ),
        (f"/address/{DEVICE_A}", f"Device {pages.short(DEVICE_A)}", f"/api/address/{DEVICE_A}", "round:*"),
        ("/block/3", "Block 3", "/api/block/3", ""),
        (f"/ipfs/{cid}", f"IPFS {pages.short(cid)}", f"/api/ipfs/{cid}", ""),
    ]
    for path, title, api, live in expected:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert _title(html) == f"{title} · fedchain explorer", path
        assert _api_link(html) == api, path
        assert _live(html) == live, path


def test_pages_show_what_the_explorer_returns(client: TestClient, indexed_explorer: Explorer) -> None:
    task = indexed_explorer.task(TASK)
    html = client.get(f"/task/{TASK}").text
    for r in task["rounds"]:
        assert r["model_cid"] in html and f"{r['accuracy']:.4f}" in html
    assert html.count("<svg") >= 3  # accuracy, loss and gas charts
    rnd = indexed_explorer.round(TASK, 2)
    html = client.get(f"/task/{TASK}/round/2").text
    for u in rnd["updates"]:
        assert u["cid"] in html
    tx_hash = rnd["updates"][0]["tx_hash"]
    html = client.get(f"/tx/{tx_hash}").text
    assert _title(html) == f"Transaction {pages.short(tx_hash)} · fedchain explorer"
    assert 'id="events"' in html and "UpdateSubmitted" in html


def test_a_tasks_address_page_redirects_to_the_task_but_its_device_page_does_not(client: TestClient) -> None:
    response = client.get(f"/address/{TASK}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/task/{TASK}"
    assert client.get(f"/device/{TASK}", follow_redirects=False).status_code == 200


def test_search_redirects_to_the_resolved_page(client: TestClient, indexed_explorer: Explorer) -> None:
    block = indexed_explorer.block("3")
    for query, location in (
        (f"{TASK}/1", f"/task/{TASK}/round/1"),
        (TASK, f"/task/{TASK}"),
        ("3", "/block/3"),
        (block["hash"], "/block/3"),
    ):
        response = client.get("/search", params={"q": query}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == location, query


def test_raw_content_and_failed_lookups(client: TestClient, scenario: Scenario) -> None:
    cid = scenario.report_cids[1]
    assert client.get(f"/ipfs/{cid}/raw").content == scenario.ipfs.blobs[cid]
    with pytest.raises(NotFound):
        client.get(f"/task/{TASK}/round/9")


def test_message_page_escapes_the_message_and_keeps_the_status(client: TestClient) -> None:
    response = client.get("/message/404")
    assert response.status_code == 404
    assert 'id="message"' in response.text and "no &lt;such&gt; thing" in response.text
    assert _title(response.text) == "Not found · fedchain explorer"


def test_filters() -> None:
    undefined = Undefined()
    assert pages.short("0x" + "ab" * 20) == "0xababab…ababab" and pages.short("0x1234") == "0x1234"
    assert pages.short(None) == ""
    assert (pages.num(1234567), pages.num(1.5), pages.num(None), pages.num(undefined), pages.num("n/a")) == (
        "1,234,567",
        "1.50",
        "—",
        "—",
        "n/a",
    )
    assert (pages.metric(0.91234), pages.metric(0.5, 2), pages.metric(None)) == ("0.9123", "0.50", "—")
    assert (pages.gwei(1_500_000_000), pages.gwei(None), pages.gwei(undefined)) == ("1.5 gwei", "—", "—")
    assert (pages.eth("0"), pages.eth(str(10**18)), pages.eth(None), pages.eth("")) == ("0 ETH", "1 ETH", "—", "—")


def test_task_charts_plot_each_round() -> None:
    rounds = [
        {"round": 1, "accuracy": 0.5, "loss": 1.2, "gas": 100_000},
        {"round": 2, "accuracy": 0.75, "loss": 0.8, "gas": None},
    ]
    charts = pages.task_charts(rounds)
    assert set(charts) == {"accuracy", "loss", "gas"}
    for name, svg in charts.items():
        assert str(svg).startswith("<svg") and str(svg).rstrip().endswith("</svg>"), name
    assert "Accuracy per round" in charts["accuracy"] and "Gas per round" in charts["gas"]
