"""One definition of loopback for hosts, URLs, servers' bind addresses and libp2p peer addresses."""

from __future__ import annotations

import pytest

from fedchain.protocol.loopback import (
    check_loopback_host,
    is_loopback_host,
    is_loopback_peer_multiaddr,
    is_loopback_url,
)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)
    check_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::", "127.example.com", ""])
def test_other_hosts(host: str) -> None:
    assert not is_loopback_host(host)
    with pytest.raises(ValueError):
        check_loopback_host(host)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8545", True),
        ("http://localhost:5001/api", True),
        ("http://[::1]:5001", True),
        ("ws://127.0.0.1:8545", True),
        ("https://sepolia.example.org", False),
        ("http://10.0.0.1:8545", False),
        ("http://[::1", False),
        ("not a url", False),
    ],
)
def test_urls(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


@pytest.mark.parametrize(
    ("addr", "ok"),
    [
        ("/ip4/127.0.0.1/tcp/4001/p2p/QmPeer", True),
        ("/ip6/::1/tcp/4001/p2p/QmPeer", True),
        ("/ip4/10.0.0.1/tcp/4001/p2p/QmPeer", False),
        ("/ip4/127.0.0.1/udp/4001/quic/p2p/QmPeer", False),
        ("/ip4/127.0.0.1/tcp/4001", False),
        ("/dns4/localhost/tcp/4001/p2p/QmPeer", False),
    ],
)
def test_peer_multiaddrs(addr: str, ok: bool) -> None:
    assert is_loopback_peer_multiaddr(addr) is ok
