"""Pages and JSON API over an index of the fake chain: same data in both, and bad input is a 4xx, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from explorer_fakes import DEVICE_B, TASK, Scenario
from fastapi.testclient import TestClient

from fedchain.explorer.app import ExplorerRuntime, create_app
from fedchain.explorer.index import Follower, Indexer
from fedchain.explorer.live import LiveFeed
from fedchain.explorer.queries import Explorer, Settings
from fedchain.protocol.loopback import check_loopback_host


@pytest.fixture
def client(tmp_path: Path, scenario: Scenario) -> Iterator[TestClient]:
    path = tmp_path / "index.sqlite"
    indexer = Indexer(path, scenario.chain, scenario.ipfs)  # type: ignore[arg-type]
    indexer.sync()
    indexer.fetch_reports()
    explorer = Explorer(Settings("http://127.0.0.1:1", "http://127.0.0.1:2", 31337, path), indexer.status)
    explorer.rpc = scenario.chain  # type: ignore[assignment]
    explorer.ipfs = scenario.ipfs  # type: ignore[assignment]
    runtime = ExplorerRuntime(indexer, Follower(indexer), explorer, LiveFeed())
    with TestClient(create_app(runtime, start_follower=False)) as c:
        yield c


def test_pages_render_and_match_the_api(client: TestClient, scenario: Scenario) -> None:
    task = client.get(f"/api/task/{TASK}").json()
    assert [r["round"] for r in task["rounds"]] == [1, 2]
    page = client.get(f"/task/{TASK}")
    assert page.status_code == 200
    for r in task["rounds"]:
        assert f"{r['accuracy']:.4f}" in page.text and r["model_cid"] in page.text
    rnd = client.get(f"/task/{TASK}/round/2")
    assert rnd.status_code == 200 and "NonFiniteWeights" in rnd.text
    update = client.get(f"/task/{TASK}/round/2/update/{DEVICE_B}")
    assert update.status_code == 200 and "rejected" in update.text
    for path in ("/", f"/address/{DEVICE_B}", "/block/3", f"/ipfs/{scenario.report_cids[1]}"):
        assert client.get(path).status_code == 200, path
    assert client.get(f"/address/{TASK}", follow_redirects=False).headers["location"] == f"/task/{TASK}"
    creation = client.get(f"/api/tx/{task['config']['created_tx']}").json()
    assert creation["created"] == TASK and [e["name"] for e in creation["events"]] == ["RoleGranted", "TaskConfigured"]
    assert "http://" not in client.get("/").text.split("<body")[1].replace("http://127.0.0.1", "")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/search?q=nonsense", 400),
        ("/search?q=0x" + "ab" * 32, 404),
        ("/search?q=999999", 404),
        ("/task/garbage", 400),
        ("/task/0x" + "00" * 19 + "01", 404),
        (f"/task/{TASK}/round/9", 404),
        (f"/task/{TASK}/round/x", 400),
        (f"/task/{TASK}/round/-1", 400),
        ("/tx/0x12", 400),
        ("/tx/0x" + "cd" * 32, 404),
        ("/block/0x12", 400),
        ("/ipfs/QmNope", 400),
        ("/no/such/page", 404),
        ("/api/search?q=", 400),
        ("/api/task/garbage", 400),
    ],
)
def test_bad_input_is_a_clear_4xx(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    if path.startswith("/api/"):
        assert response.json()["error"]
    else:
        assert 'id="message"' in response.text


def test_search_redirects(client: TestClient) -> None:
    response = client.get(f"/search?q={TASK}/1", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/task/{TASK}/round/1"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org", "::"])
def test_only_loopback_hosts_are_served(host: str) -> None:
    with pytest.raises(ValueError):
        check_loopback_host(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    check_loopback_host(host)
