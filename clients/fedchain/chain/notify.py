"""Push, not poll: wake a waiting client the moment a contract emits an event.

Both Ganache and Anvil serve JSON-RPC over WebSocket on their HTTP port. `EventNotifier` holds one
`eth_subscribe("logs", {address: ...})` subscription in a background thread and sets a flag for every log it is
pushed; a client's loop is "read the state, act, `wait()`". The flag is cleared only by `wait()`, so an event that
lands between reading the state and waiting is never lost: the next `wait()` returns at once.

RPC URLs that serve only HTTP (many hosted testnet endpoints) fall back to polling: `wait()` then sleeps one poll
interval and returns, and the caller polls for logs as before. A subscription that drops is reconnected in the
background; meanwhile `wait()` polls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from fedchain.protocol.retry import Backoff

log = logging.getLogger("fedchain.chain.notify")
# Waits between reconnection attempts: 0.2 s doubling up to 5 s.
RECONNECT_BACKOFF = Backoff.exponential(0.2, cap=5.0)

# websockets' sync client: web3.py already depends on it.
try:  # pragma: no cover - exercised by the e2e tests
    from websockets.sync.client import connect as ws_connect
except ImportError:  # pragma: no cover
    ws_connect = None


def websocket_url(rpc_url: str) -> str | None:
    """The WebSocket endpoint beside an RPC URL (`http://h:p/x` -> `ws://h:p/x`), or None for other schemes."""
    parts = urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        return None
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


class EventNotifier:
    """Wakes `wait()` when any of `addresses` emits a log; polls every `poll_interval` when no push is possible."""

    def __init__(
        self,
        rpc_url: str,
        addresses: Iterable[str],
        *,
        poll_interval: float = 0.25,
        push: bool = True,
        connect_timeout: float = 3.0,
    ) -> None:
        self.poll_interval = poll_interval
        self.addresses = [a for a in addresses]
        self._flag = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._ws_url = websocket_url(rpc_url) if push and ws_connect is not None else None
        self._socket = None
        self._thread: threading.Thread | None = None
        self.notifications = 0
        if self._ws_url is not None:
            self._thread = threading.Thread(target=self._run, name="fedchain-notifier", daemon=True)
            self._thread.start()
            # A short grace for the first subscription, so a caller's first wait is already pushed.
            self._connected.wait(connect_timeout)

    @property
    def pushing(self) -> bool:
        """Whether a live subscription delivers events now (False: `wait` falls back to polling)."""
        return self._connected.is_set()

    def wait(self, timeout: float) -> bool:
        """Block until an event was pushed since the last wait (True), or `timeout` passed (False). Without a live
        subscription, returns after at most one poll interval so the caller polls."""
        if not self.pushing:
            timeout = min(timeout, self.poll_interval)
        woke = self._flag.wait(max(0.0, timeout))
        if woke:
            self._flag.clear()
        return woke or not self.pushing

    def notify(self) -> None:
        """Wake the waiter now (e.g. another thread changed what it waits for)."""
        self._flag.set()

    def close(self) -> None:
        self._stop.set()
        self._flag.set()
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(Exception):  # already closed by the server
                sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> EventNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        failures = 0  # reconnection attempts since the last subscription that worked
        warned = False
        while not self._stop.is_set():
            try:
                self._subscribe_and_listen()
                failures = 0
            except Exception as exc:  # connection refused, closed, or a node without eth_subscribe
                if self._stop.is_set():
                    return
                if not warned:
                    log.info("no subscription at %s (%s): polling every %.2fs", self._ws_url, exc, self.poll_interval)
                    warned = True
            finally:
                self._connected.clear()
                self._socket = None
            # Wake the waiter: what happened while the socket was down is found by its next poll.
            self._flag.set()
            if self._stop.wait(RECONNECT_BACKOFF.delay(failures)):
                return
            failures += 1

    def _subscribe_and_listen(self) -> None:
        assert self._ws_url is not None and ws_connect is not None
        with ws_connect(self._ws_url, open_timeout=3, max_size=2**24, compression=None) as sock:
            self._socket = sock
            params: dict[str, object] = {"address": self.addresses} if self.addresses else {}
            sock.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["logs", params]}))
            deadline = time.monotonic() + 5
            while True:  # the subscription's answer comes first
                reply = json.loads(sock.recv(timeout=max(0.1, deadline - time.monotonic())))
                if reply.get("id") == 1:
                    if "error" in reply:
                        raise RuntimeError(f"eth_subscribe refused: {reply['error']}")
                    break
            self._connected.set()
            log.debug("subscribed to logs of %s over %s", self.addresses, self._ws_url)
            # Anything emitted before the subscription existed is found by the caller's first poll.
            self._flag.set()
            while not self._stop.is_set():
                message = json.loads(sock.recv())
                if message.get("method") == "eth_subscription":
                    self.notifications += 1
                    self._flag.set()
