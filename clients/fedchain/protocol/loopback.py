"""Loopback checks: local services (the chain node, IPFS, the explorer) are reached and served on 127.0.0.0/8 or ::1.

One definition of "loopback" for every part: the name `localhost`, or an IP address (IPv6 possibly in brackets)
in 127.0.0.0/8 or ::1. Host names other than `localhost` are not resolved, so they never count.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or an IP address, IPv6 with or without brackets) is loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """Whether a URL's host is loopback (`http://127.0.0.1:8545`, `http://[::1]:5001`, `ws://localhost`)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return False
    return is_loopback_host(host or "")


def check_loopback_host(host: str) -> None:
    """Refuse to bind a server anywhere but loopback: ValueError for a non-IP name or a non-loopback address."""
    if host == "localhost":
        return
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"--host must be a loopback IP address (127.0.0.1, ::1), got {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"binding loopback addresses only (127.0.0.0/8, ::1), not {host}")


def is_loopback_peer_multiaddr(multiaddr: str) -> bool:
    """Whether a libp2p address is a TCP peer on loopback: `/ip4/127.0.0.1/tcp/N/p2p/<peer ID>` (or /ip6/::1/...)."""
    parts = multiaddr.split("/")
    return (
        len(parts) >= 7
        and parts[0] == ""
        and parts[1] in ("ip4", "ip6")
        and is_loopback_host(parts[2])
        and parts[3] == "tcp"
        and parts[-2] == "p2p"
    )


__all__ = ["check_loopback_host", "is_loopback_host", "is_loopback_peer_multiaddr", "is_loopback_url"]
