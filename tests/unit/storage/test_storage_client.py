"""IpfsClient against httpx MockTransport daemons: verification, error mapping, retries, limits."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import httpx
import numpy as np
import pytest

import fedchain.storage.kubo_rpc as kubo_rpc
from fedchain.protocol.retry import Backoff
from fedchain.storage import (
    ContentMismatch,
    ContentTooLarge,
    InvalidCid,
    IpfsClient,
    IpfsUnavailable,
    StorageError,
    compute_cid,
)

DATA = b"model weights, honestly"
CID = compute_cid(DATA)


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> IpfsClient:
    return IpfsClient("http://127.0.0.1:5001", timeout=5, transport=httpx.MockTransport(handler))


def test_cat_rejects_tampered_bytes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == "/api/v0/cat"
        assert request.url.params["arg"] == CID
        return httpx.Response(200, content=b"model weights, poisoned")

    with client_for(handler) as client, pytest.raises(ContentMismatch, match=CID):
        client.cat(CID)


def test_cat_returns_verified_bytes() -> None:
    with client_for(lambda request: httpx.Response(200, content=DATA)) as client:
        assert client.cat(CID) == DATA


def test_cat_enforces_max_size_while_streaming() -> None:
    oversized = client_for(lambda request: httpx.Response(200, content=b"x" * 5000))
    with oversized as client, pytest.raises(ContentTooLarge, match="1000"):
        client.cat(CID, max_size=1000)


def test_cat_rejects_announced_oversize_early() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"X-Content-Length": "999999"}, content=b"")

    with client_for(handler) as client, pytest.raises(ContentTooLarge, match="999999"):
        client.cat(CID, max_size=10)


def test_invalid_cid_fails_before_any_request() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    with client_for(handler) as client:
        for bad in ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "Qm123", ""):
            with pytest.raises(InvalidCid):
                client.cat(bad)
            with pytest.raises(InvalidCid):
                client.pin_add(bad)
    assert calls == []


def test_add_checks_the_daemon_cid() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["cid-version"] == "0" and request.url.params["pin"] == "false"
        assert b'name="file"' in request.read()
        return httpx.Response(200, text=json.dumps({"Name": "file", "Hash": compute_cid(b"other"), "Size": "13"}))

    with client_for(handler) as client, pytest.raises(ContentMismatch, match=CID):
        client.add(DATA, pin=False)


def test_add_parses_the_last_json_line() -> None:
    lines = [{"Name": "file", "Bytes": 10}, {"Name": "file", "Hash": CID, "Size": str(len(DATA) + 6)}]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    with client_for(lambda request: httpx.Response(200, text=text)) as client:
        assert client.add(DATA) == CID


def test_daemon_errors_carry_the_daemon_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"Message": "block was not found locally (offline)", "Code": 0, "Type": "error"}
        return httpx.Response(500, json=body)

    with client_for(handler) as client:
        with pytest.raises(StorageError, match="not found locally") as info:
            client.cat(CID)
        assert not isinstance(info.value, IpfsUnavailable)
        with pytest.raises(StorageError, match=r"HTTP 500.*not found locally"):
            client.version()


def test_pin_ls_and_pin_add() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v0/pin/ls":
            assert request.url.params["type"] == "recursive"
            return httpx.Response(200, json={"Keys": {CID: {"Type": "recursive"}}})
        return httpx.Response(200, json={"Pins": [request.url.params["arg"]]})

    with client_for(handler) as client:
        assert client.pin_ls() == [CID]
        client.pin_add(CID)


def test_retries_connection_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubo_rpc, "_BACKOFF", Backoff((0.0,)))
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"Version": "0.22.0"})

    with client_for(handler) as client:
        assert client.version()["Version"] == "0.22.0"
    assert len(attempts) == 3


def test_a_reset_mid_request_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The devnet's supervisor restarted the node under a call: an add (content-addressed) is simply sent again,
    # and a read cut off after part of its answer starts over (nothing of the first attempt is kept).
    monkeypatch.setattr(kubo_rpc, "_BACKOFF", Backoff((0.0,)))
    attempts: list[str] = []
    data = b"weights" * 1000

    class CutOff(httpx.SyncByteStream):
        def __iter__(self):
            yield data[:100]
            raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        if request.url.path.endswith("/add"):
            if attempts.count(request.url.path) == 1:
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
            return httpx.Response(200, text=json.dumps({"Hash": compute_cid(data)}))
        if attempts.count(request.url.path) == 1:
            return httpx.Response(200, stream=CutOff())
        return httpx.Response(200, content=data)

    with client_for(handler) as client:
        assert client.add(data) == compute_cid(data)
        assert client.cat(compute_cid(data)) == data
    assert attempts == ["/api/v0/add", "/api/v0/add", "/api/v0/cat", "/api/v0/cat"]


def test_unreachable_daemon_is_ipfs_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubo_rpc, "_BACKOFF", Backoff((0.0,)))
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with IpfsClient(url, timeout=2) as client, pytest.raises(IpfsUnavailable, match=url):
        client.id()


def test_weights_helpers_round_trip_through_a_fake_daemon() -> None:
    store: dict[str, bytes] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v0/add":
            body = request.read()
            boundary = request.headers["content-type"].split("boundary=")[1].encode()
            content = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--" + boundary, 1)[0]
            store[compute_cid(content)] = content
            return httpx.Response(200, json={"Name": "file", "Hash": compute_cid(content), "Size": "1"})
        return httpx.Response(200, content=store[request.url.params["arg"]])

    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros((), np.float64)}
    with client_for(handler) as client:
        cid = client.put_weights(weights, {"round": "1"})
        back = client.get_weights(cid)
    assert back.keys() == weights.keys()
    np.testing.assert_array_equal(back["w"], weights["w"])
