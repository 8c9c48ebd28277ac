"""The explorer in a real browser (Playwright driving Debian's Chromium): a newcomer's path from the overview to a
task, a round, one device's update and its transaction, the search box, live updates, and a screenshot of the task
page saved to reports/explorer-task.png."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from explorer_e2e import EXPLORER_ROUNDS, THRESHOLD, ExplorerRun, chromium_path

from fedchain.chain import TaskClient, connect, devnet_account
from fedchain.storage import digest_to_cid

pytestmark = pytest.mark.e2e

REPORTS = Path(__file__).resolve().parents[2] / "reports"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: object, explorer_run: ExplorerRun) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1300, "height": 900})  # type: ignore[attr-defined]
    pg = context.new_page()
    outside: list[str] = []
    pg.on(
        "request",
        lambda request: (
            outside.append(request.url) if not request.url.startswith((explorer_run.url, "data:")) else None
        ),
    )
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()
    assert outside == [], f"the page loaded something from outside the explorer: {outside}"


def text(pg: object, selector: str) -> str:
    return pg.locator(selector).first.inner_text().strip()  # type: ignore[attr-defined]


def test_follow_a_round_from_overview_to_transaction(page: object, explorer_run: ExplorerRun) -> None:
    pg = page
    w3 = connect(explorer_run.state.rpc_url)
    client = TaskClient(w3, explorer_run.task)
    api = httpx.get(f"{explorer_run.url}/api/task/{explorer_run.task}", timeout=30).json()

    # Overview: the chain, the IPFS node and the task.
    response = pg.goto(explorer_run.url + "/")
    assert response is not None and response.status == 200
    assert text(pg, "[data-field=chain_id]") == "1337"
    assert text(pg, "[data-field=client_version]") == w3.client_version
    assert text(pg, "[data-field=ipfs_id]").startswith(("Qm", "12D3"))
    pg.click(f"tr[data-task='{explorer_run.task}'] a")

    # Task page: configuration, rounds table, charts; screenshot for people to look at.
    pg.wait_for_url(f"**/task/{explorer_run.task}")
    assert text(pg, "#task-address") == explorer_run.task
    assert text(pg, "[data-field=current_round]") == str(EXPLORER_ROUNDS)
    rows = pg.locator("#rounds-table tbody tr")
    assert rows.count() == EXPLORER_ROUNDS
    for r in api["rounds"]:
        row = pg.locator(f"#rounds-table tr[data-round='{r['round']}']")
        assert row.locator("[data-field=accuracy]").inner_text() == f"{r['accuracy']:.4f}"
        assert row.locator("[data-field=loss]").inner_text() == f"{r['loss']:.4f}"
        assert row.locator("[data-field=gas]").inner_text() == f"{r['gas']:,}"
        assert row.locator("[data-field=updates]").inner_text().startswith(f"{r['received']} / {r['required']}")
        cid = row.locator("[data-field=model_cid] a").get_attribute("title")
        assert cid == digest_to_cid(client.round_model_digest(r["round"]))
    # Aggregators: the liar's faults, as the contract counts them; none for the honest two.
    liar = pg.locator(f"#aggregators-table tr[data-aggregator='{explorer_run.liar}']")
    assert liar.locator("[data-field=faults]").inner_text() == str(client.aggregator_info(explorer_run.liar).faults)
    for honest in explorer_run.honest_aggregators:
        assert pg.locator(f"#aggregators-table tr[data-aggregator='{honest}'] [data-field=faults]").inner_text() == "0"
    assert text(pg, "[data-field=threshold]").startswith(f"{THRESHOLD} of {len(explorer_run.aggregators)}")
    assert pg.locator("svg.chart").count() == 3
    assert pg.locator("svg.chart circle").count() == 2 * EXPLORER_ROUNDS  # accuracy and loss points
    assert "aggregator" in text(pg, "#charts .note")
    REPORTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(REPORTS / "explorer-task.png"), full_page=True)
    assert (REPORTS / "explorer-task.png").stat().st_size > 10_000

    # Round 2: every update with its outcome; the aggregate and who committed it.
    pg.click("#rounds-table tr[data-round='2'] a.round-link")
    pg.wait_for_url(f"**/task/{explorer_run.task}/round/2")
    rnd = httpx.get(f"{explorer_run.url}/api/task/{explorer_run.task}/round/2", timeout=30).json()
    assert pg.locator("#updates-table tbody tr").count() == len(rnd["updates"]) == 4
    bad = pg.locator(f"#updates-table tr[data-device='{explorer_run.bad_device}']")
    assert bad.locator("[data-field=status]").inner_text() == "rejected"
    assert "MalformedWeights" in bad.locator("[data-field=reason]").inner_text()
    assert text(pg, "#aggregate [data-field=model_cid]") == digest_to_cid(client.round_model_digest(2))
    assert text(pg, "#aggregate [data-field=aggregator]").split()[0] in explorer_run.honest_aggregators
    assert text(pg, "#aggregate [data-field=accuracy]") == f"{rnd['accuracy']:.4f}"
    # The agreement: each aggregator's commitment and reveal; the honest two agreed, the liar was faulted.
    assert pg.locator("#agreement #aggregators-table tbody tr").count() == len(explorer_run.aggregators)
    assert f"2 of {len(explorer_run.aggregators)} aggregators agreed" in text(
        pg, "#agreement [data-field=agreement-summary]"
    )
    for entry in rnd["agreement"]["entries"]:
        row = pg.locator(f"#agreement tr[data-aggregator='{entry['aggregator']}']")
        assert row.locator("[data-field=verdict] .badge").inner_text() == entry["verdict"]
        assert row.locator("[data-field=model_cid] a").get_attribute("title") == entry["model_cid"]
    faulted = [a.get_attribute("title") for a in pg.locator("#agreement [data-field=faulted] a").all()]
    assert faulted == rnd["agreement"]["faulted"] and set(faulted) <= {explorer_run.liar}

    # One honest device's update: its CID, samples, transaction, and the aggregate it went into.
    update = next(u for u in rnd["updates"] if u["status"] == "accepted")
    pg.click(f"#updates-table tr[data-device='{update['device']}'] a.update-link")
    pg.wait_for_url(f"**/round/2/update/{update['device']}")
    assert text(pg, "#update [data-field=cid]") == update["cid"]
    assert text(pg, "#update [data-field=num_samples]") == str(update["num_samples"])
    assert text(pg, "#update [data-field=status]").startswith("accepted")
    assert rnd["aggregate"]["model_cid"] in text(pg, "#update")

    # The transaction: decoded call and events, numbers from the receipt.
    pg.click("#update [data-field=tx_hash] a")
    pg.wait_for_url(f"**/tx/{update['tx_hash']}")
    receipt = w3.eth.get_transaction_receipt(update["tx_hash"])
    assert text(pg, "#tx-hash").startswith(update["tx_hash"])
    assert text(pg, "[data-field=function]") == "submitUpdate"
    assert text(pg, "[data-field=gas_used]") == f"{receipt['gasUsed']:,}"
    assert text(pg, "[data-field=block]").startswith(str(receipt["blockNumber"]))
    assert pg.locator(".event[data-event=UpdateSubmitted]").count() == 1
    assert update["cid"] in text(pg, "#call")

    # From the tx to the update's content on IPFS, then to the aggregate model.
    pg.click(f"#call a[href='/ipfs/{update['cid']}']")
    pg.wait_for_url(f"**/ipfs/{update['cid']}")
    assert text(pg, "[data-field=type]") == "model weights (safetensors)"
    pg.goto(f"{explorer_run.url}/ipfs/{rnd['aggregate']['model_cid']}")
    assert "aggregated model of" in text(pg, "ul.refs")


def _search(pg: object, query: str) -> tuple[int, str]:
    pg.fill("#search", query)  # type: ignore[attr-defined]
    with pg.expect_navigation() as nav:  # type: ignore[attr-defined]
        pg.press("#search", "Enter")  # type: ignore[attr-defined]
    response = nav.value
    return response.status, pg.url  # type: ignore[attr-defined]


def test_search_box(page: object, explorer_run: ExplorerRun) -> None:
    pg = page
    base = explorer_run.url
    rnd = httpx.get(f"{base}/api/task/{explorer_run.task}/round/1", timeout=30).json()
    update = rnd["updates"][0]
    pg.goto(base + "/")
    assert _search(pg, explorer_run.task) == (200, f"{base}/task/{explorer_run.task}")
    assert _search(pg, update["device"]) == (200, f"{base}/address/{update['device']}")
    assert text(pg, "h1").startswith("Device")
    assert _search(pg, update["tx_hash"]) == (200, f"{base}/tx/{update['tx_hash']}")
    assert _search(pg, str(update["block_number"])) == (200, f"{base}/block/{update['block_number']}")
    assert text(pg, "[data-field=number]") == str(update["block_number"])
    assert _search(pg, update["cid"]) == (200, f"{base}/ipfs/{update['cid']}")
    assert _search(pg, f"{explorer_run.task}/1") == (200, f"{base}/task/{explorer_run.task}/round/1")

    status, _ = _search(pg, "definitely not a hash")
    assert status == 400 and "Nothing to search for" in text(pg, "#message")
    status, _ = _search(pg, "0x" + "ab" * 32)
    assert status == 404 and "No transaction, block or known CID digest" in text(pg, "#message")
    status, _ = _search(pg, "QmThisIsNotARealCidAtAll")
    assert status == 400 and "not a valid CIDv0" in text(pg, "#message")
    status, _ = _search(pg, "123456789")
    assert status == 404 and "no block 123456789" in text(pg, "#message")
    assert pg.locator("#search").input_value() == "123456789"  # the query stays in the box to be corrected
    response = pg.goto(f"{base}/tx/0x" + "12" * 32)
    assert response is not None and response.status == 404 and "no transaction" in text(pg, "#message")


def test_new_blocks_appear_without_reloading(page: object, explorer_run: ExplorerRun) -> None:
    pg = page
    pg.goto(explorer_run.url + "/")
    pg.wait_for_selector("#live-status.on")
    before = int(text(pg, "#head-block").lstrip("#"))
    pg.evaluate("window.__notReloaded = true")
    w3 = connect(explorer_run.state.rpc_url)
    sender = devnet_account(9)
    tx = {
        "to": devnet_account(8).address,
        "value": 1,
        "gas": 21_000,
        "nonce": w3.eth.get_transaction_count(sender.address),
        "chainId": w3.eth.chain_id,
        "maxFeePerGas": 10 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))
    head = w3.eth.block_number
    assert head > before
    pg.wait_for_function(f"document.getElementById('head-block').textContent === '#{head}'", timeout=15_000)
    # The latest-blocks table is swapped in place, without a reload.
    deadline = time.monotonic() + 15
    while str(head) not in text(pg, "#blocks tbody tr"):
        assert time.monotonic() < deadline, "the new block never appeared in the latest-blocks table"
        time.sleep(0.2)
    assert pg.evaluate("window.__notReloaded") is True
