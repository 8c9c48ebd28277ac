"""EventNotifier: its pure parts and its fallback (pushing over a real WebSocket: tests/e2e/test_virtual_devices.py)."""

from __future__ import annotations

import socket
import time

import pytest

from fedchain.chain.notify import EventNotifier, websocket_url


@pytest.mark.parametrize(
    ("rpc", "ws"),
    [
        ("http://127.0.0.1:8545", "ws://127.0.0.1:8545"),
        ("https://node.example/v3/key", "wss://node.example/v3/key"),
        ("ws://127.0.0.1:8546", "ws://127.0.0.1:8546"),
        ("ipc:///tmp/geth.ipc", None),
    ],
)
def test_websocket_url_beside_the_rpc_url(rpc: str, ws: str | None) -> None:
    assert websocket_url(rpc) == ws


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_a_subscription_wait_polls_at_the_poll_interval() -> None:
    notifier = EventNotifier(f"http://127.0.0.1:{_dead_port()}", [], poll_interval=0.05, connect_timeout=0.5)
    try:
        assert not notifier.pushing
        started = time.monotonic()
        assert notifier.wait(5.0)  # "go and poll": after one poll interval, not the whole timeout
        assert time.monotonic() - started < 1.0
    finally:
        notifier.close()


def test_push_disabled_never_connects_and_notify_wakes_the_waiter() -> None:
    notifier = EventNotifier("http://127.0.0.1:9", [], poll_interval=10.0, push=False)
    try:
        assert not notifier.pushing
        notifier.notify()
        started = time.monotonic()
        assert notifier.wait(5.0)
        assert time.monotonic() - started < 0.5
    finally:
        notifier.close()
