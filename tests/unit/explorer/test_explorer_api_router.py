"""The JSON API router (explorer/api.py) alone on a FastAPI app, over a real index: each route serves its Explorer
method's dict as JSON, raw content is the verified bytes, and lookups that fail raise the Explorer's errors (the
full app turns them into 4xx: test_explorer_app.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from explorer_fakes import DEVICE_A, DEVICE_B, TASK, Scenario
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedchain.explorer import api
from fedchain.explorer.queries import BadInput, Explorer, NotFound
from fedchain.explorer.search import SearchError


@pytest.fixture
def client(indexed_explorer: Explorer) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(api.router(indexed_explorer))
    with TestClient(app) as c:
        yield c


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _routes(s: Scenario, ex: Explorer) -> list[tuple[str, Callable[[], Any]]]:
    created_tx = ex.task(TASK)["config"]["created_tx"]
    update_tx = ex.round(TASK, 1)["updates"][0]["tx_hash"]
    return [
        ("/api/overview", ex.overview),
        ("/api/tasks", ex.tasks),
        (f"/api/task/{TASK}", lambda: ex.task(TASK)),
        (f"/api/task/{TASK}/rounds", lambda: ex.rounds(TASK)),
        (f"/api/task/{TASK}/round/2", lambda: ex.round(TASK, 2)),
        (f"/api/task/{TASK}/round/2/update/{DEVICE_B}", lambda: ex.update(TASK, 2, DEVICE_B)),
        (f"/api/address/{DEVICE_A}", lambda: ex.address(DEVICE_A)),
        (f"/api/device/{DEVICE_A}", lambda: ex.address(DEVICE_A)),
        (f"/api/tx/{created_tx}", lambda: ex.tx(created_tx)),
        (f"/api/tx/{update_tx}", lambda: ex.tx(update_tx)),
        ("/api/block/3", lambda: ex.block("3")),
        (f"/api/ipfs/{s.report_cids[1]}", lambda: ex.content(s.report_cids[1])),
        (f"/api/search?q={TASK}/2", lambda: ex.resolve(f"{TASK}/2")),
    ]


def test_every_route_serves_its_explorer_dict(
    client: TestClient, scenario: Scenario, indexed_explorer: Explorer
) -> None:
    for path, expected in _routes(scenario, indexed_explorer):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert response.headers["content-type"] == "application/json"
        assert response.json() == _as_json(expected()), path


def test_routes_serve_the_indexed_run(client: TestClient, scenario: Scenario) -> None:
    task = client.get(f"/api/task/{TASK}").json()
    assert task["address"] == TASK and [r["round"] for r in task["rounds"]] == [1, 2]
    assert [r["model_cid"] for r in client.get(f"/api/task/{TASK}/rounds").json()] == [
        scenario.model_cids[1],
        scenario.model_cids[2],
    ]
    update = client.get(f"/api/task/{TASK}/round/2/update/{DEVICE_B}").json()
    assert update["cid"] == scenario.update_cids[(2, DEVICE_B)] and update["status"] == "rejected"
    assert [t["address"] for t in client.get("/api/tasks").json()] == [TASK]
    found = client.get("/api/search", params={"q": f"{TASK}/2"}).json()
    assert found["url"] == f"/task/{TASK}/round/2" and found["api"] == f"/api/task/{TASK}/round/2"


def test_health_reports_the_index_progress(client: TestClient, indexed_explorer: Explorer) -> None:
    status = indexed_explorer.status
    health = client.get("/api/health").json()
    assert health["ok"] is True and health["chain_id"] == 31337
    assert health["indexed_block"] == status.next_block - 1 and health["mode"] == "full"
    status.error = "RpcError: the node went away"
    health = client.get("/api/health").json()
    assert health["ok"] is False and health["error"] == "RpcError: the node went away"


def test_raw_content_is_the_verified_bytes_as_an_attachment(client: TestClient, scenario: Scenario) -> None:
    cid = scenario.report_cids[2]
    response = client.get(f"/api/ipfs/{cid}/raw")
    assert response.status_code == 200 and response.content == scenario.ipfs.blobs[cid]
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{cid}"'


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/api/task/garbage", BadInput),
        ("/api/task/0x" + "00" * 19 + "01", NotFound),
        (f"/api/task/{TASK}/round/9", NotFound),
        (f"/api/task/{TASK}/round/2/update/{TASK}", NotFound),
        ("/api/tx/0x12", BadInput),
        ("/api/ipfs/QmNope", BadInput),
        ("/api/search?q=nonsense", SearchError),
    ],
)
def test_failed_lookups_raise_the_explorers_errors(client: TestClient, path: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        client.get(path)


def test_bad_path_parameters_and_long_queries_are_refused_by_the_router(client: TestClient) -> None:
    assert client.get(f"/api/task/{TASK}/round/x").status_code == 422
    assert client.get("/api/search", params={"q": "x" * 1001}).status_code == 422


def test_every_route_is_documented_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert len(paths) == 14
    for path, operations in paths.items():
        assert path.startswith("/api/") and operations["get"]["summary"], path
