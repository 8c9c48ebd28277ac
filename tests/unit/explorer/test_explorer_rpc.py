"""The indexer's JSON-RPC client (web3's HTTPProvider underneath) against a real HTTP server on loopback that
misbehaves on purpose: lost requests (5xx, 429, garbage) are sent again, JSON-RPC errors are raised with their revert
data, batches come back in order or fall back to one call at a time, and a node that stays away is NodeUnavailable."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fedchain.explorer import rpc
from fedchain.explorer.rpc import JsonRpc, NodeUnavailable, RpcError
from fedchain.protocol.loopback import is_loopback_url

Answer = tuple[int, bytes]


class Node:
    """Answers each POST with the next scripted answer, or by `handle` once the script is used up."""

    def __init__(self, handle: Callable[[Any], Any]) -> None:
        self.handle = handle
        self.script: list[Answer] = []
        self.bodies: list[Any] = []

    def answer(self, body: Any) -> Answer:
        self.bodies.append(body)
        if self.script:
            return self.script.pop(0)
        return 200, json.dumps(self.handle(body)).encode()


def _result(request: dict[str, Any]) -> dict[str, Any]:
    method = request["method"]
    if method == "fail":
        return {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": 3, "message": "execution reverted", "data": "0x08c379a0"},
        }
    return {"jsonrpc": "2.0", "id": request["id"], "result": [method, *request["params"]]}


def answer_all(body: Any) -> Any:
    if isinstance(body, list):
        return [_result(r) for r in reversed(body)]  # any order: JSON-RPC does not promise one
    return _result(body)


@pytest.fixture
def node() -> Iterator[tuple[Node, str]]:
    state = Node(answer_all)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, payload = state.answer(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc, "_BACKOFF", rpc.Backoff((0.0,)))


def test_call_returns_the_raw_result(node: tuple[Node, str]) -> None:
    state, url = node
    client = JsonRpc(url)
    assert client.call("eth_getBlockByNumber", "0x1", False) == ["eth_getBlockByNumber", "0x1", False]
    (sent,) = state.bodies
    assert sent["jsonrpc"] == "2.0" and sent["method"] == "eth_getBlockByNumber" and sent["params"] == ["0x1", False]


def test_lost_requests_are_sent_again(node: tuple[Node, str]) -> None:
    state, url = node
    state.script = [(503, b"busy"), (429, b"slow down"), (200, b"not json"), (502, b"")]
    assert JsonRpc(url).call("eth_blockNumber") == ["eth_blockNumber"]
    assert len(state.bodies) == 5


def test_a_node_that_stays_away_is_unavailable(node: tuple[Node, str]) -> None:
    state, url = node
    state.script = [(500, b"down")] * 6
    with pytest.raises(NodeUnavailable, match="cannot reach the Ethereum node"):
        JsonRpc(url).call("eth_blockNumber")
    assert len(state.bodies) == 6  # the first request and five retries
    with pytest.raises(NodeUnavailable):
        JsonRpc("http://127.0.0.1:9", timeout=1).call("eth_blockNumber")  # nothing listens on the discard port


def test_errors_carry_code_and_revert_data_and_try_call_swallows_them(node: tuple[Node, str]) -> None:
    _, url = node
    client = JsonRpc(url)
    with pytest.raises(RpcError) as caught:
        client.call("fail")
    assert not isinstance(caught.value, NodeUnavailable)
    assert str(caught.value) == "fail: execution reverted"
    assert (caught.value.code, caught.value.data) == (3, "0x08c379a0")
    assert client.try_call("fail") is None and client.try_call("eth_chainId") == ["eth_chainId"]


def test_an_http_error_status_with_a_json_rpc_answer_is_that_answer(node: tuple[Node, str]) -> None:
    state, url = node
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "method not found"}}
    state.script = [(400, json.dumps(error).encode())]
    with pytest.raises(RpcError, match="method not found") as caught:
        JsonRpc(url).call("eth_nope")
    assert caught.value.code == -32601 and len(state.bodies) == 1


def test_batches_come_back_in_call_order_in_chunks(node: tuple[Node, str]) -> None:
    state, url = node
    client = JsonRpc(url, batch_size=3)
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(7)]
    assert client.batch(calls) == [["eth_getBlockByNumber", hex(n), False] for n in range(7)]
    assert [len(b) if isinstance(b, list) else 1 for b in state.bodies] == [3, 3, 1]
    with pytest.raises(RpcError, match="fail: execution reverted"):
        client.batch([("eth_chainId", []), ("fail", [])])


def test_a_node_refusing_batches_is_asked_one_call_at_a_time(node: tuple[Node, str]) -> None:
    state, url = node
    refusal = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batches not supported"}}
    state.script = [(200, json.dumps(refusal).encode())]
    client = JsonRpc(url)
    assert client.batch([("a", []), ("b", [1])]) == [["a"], ["b", 1]]
    assert client.batch([("c", []), ("d", [])]) == [["c"], ["d"]]
    assert [isinstance(b, list) for b in state.bodies] == [True, False, False, False, False]


def test_timeouts_default_by_where_the_node_is() -> None:
    assert is_loopback_url("http://127.0.0.1:8545") and is_loopback_url("http://localhost:8545")
    assert is_loopback_url("http://[::1]:8545") and not is_loopback_url("https://rpc.example.org")
    assert JsonRpc("http://127.0.0.1:8545")._provider.get_request_kwargs()["timeout"] == 10.0
    assert JsonRpc("https://rpc.example.org")._provider.get_request_kwargs()["timeout"] == 30.0
    assert JsonRpc("https://rpc.example.org", timeout=3)._provider.get_request_kwargs()["timeout"] == 3
