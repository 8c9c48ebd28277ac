"""The devnet's front doors: a loopback HTTP proxy per service that holds requests while the service restarts.

A client of a service that was just killed sees its request reset and its next connections refused; most clients
give up after a few seconds. The devnet's own process therefore listens on the published port and forwards to the
service on a private port. While the service is down (`up` cleared by the supervisor) requests wait; a request
whose connection broke is sent again once the service is back, which is safe because every call clients make
through these doors is idempotent (JSON-RPC reads and signed transactions; Kubo add/cat/pin by content). Writes
that must not be repeated are the subclass's business (see anvil.ChainProxy). WebSocket upgrades
(eth_subscribe) are tunnelled as raw bytes.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UPSTREAM_WAIT_S = 60.0  # how long a request is held while its service restarts
_RETRY_PAUSE_S = 0.2  # the supervisor polls every 0.2 s: it clears `up` within about that
# Request headers that matter to the services (Kubo checks Origin; uploads carry their multipart boundary).
_FORWARDED_REQUEST_HEADERS = ("Content-Type", "Origin", "Accept", "User-Agent")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "trailer", "upgrade"}


class HoldingProxy(ThreadingHTTPServer):
    """Forwards POSTs (and WebSocket upgrades) from 127.0.0.1:port to 127.0.0.1:upstream_port."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, upstream_port: int, name: str) -> None:
        self.upstream_port = upstream_port
        self.name = name
        self.up = threading.Event()
        self.closing = False
        super().__init__(("127.0.0.1", port), self.handler_class())
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return ProxyHandler

    def start(self) -> None:
        self.thread.start()

    def fail_fast(self) -> None:
        """The service is gone for good: release held requests and answer 503 at once from now on."""
        self.closing = True
        self.up.set()

    def close(self) -> None:
        self.fail_fast()
        self.shutdown()
        self.server_close()


class ProxyHandler(BaseHTTPRequestHandler):
    server: HoldingProxy
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.reply(*self.forward(self.read_body()))

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while size := int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16):
                body += self.rfile.read(size)
                self.rfile.readline(8)
            while self.rfile.readline(1024).strip():  # trailers
                pass
            return bytes(body)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def forward(self, body: bytes, hold: bool = True) -> tuple[int | None, list[tuple[str, str]], bytes]:
        """The service's answer (status, headers, body); status None when it is down (with `hold`: after waiting
        up to UPSTREAM_WAIT_S for it to come back, retrying on every broken connection)."""
        deadline = time.monotonic() + UPSTREAM_WAIT_S
        while True:
            if hold and not self.server.up.wait(max(0.0, deadline - time.monotonic())):
                break
            reused = self._upstream is not None
            try:
                return self._post(body)
            except (OSError, http.client.HTTPException):
                self._close_upstream()
                if reused:
                    continue  # a kept-alive connection to a service that has since restarted: a fresh one decides
                if not hold or self.server.closing or time.monotonic() > deadline:
                    break
                time.sleep(_RETRY_PAUSE_S)
        return None, [], b""

    def _post(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=300)
        headers = {k: v for k in _FORWARDED_REQUEST_HEADERS if (v := self.headers.get(k)) is not None}
        self._upstream.request("POST", self.path, body, headers)
        response = self._upstream.getresponse()
        data = response.read()
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        return response.status, kept, data

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def finish(self) -> None:
        super().finish()
        self._close_upstream()

    def reply(self, status: int | None, headers: list[tuple[str, str]], data: bytes) -> None:
        if status is None:
            status, headers = HTTPStatus.SERVICE_UNAVAILABLE, [("Content-Type", "application/json")]
            data = f'{{"error": "the devnet {self.server.name} is restarting", "Message": "unavailable"}}'.encode()
        lines = [f"HTTP/1.1 {int(status)} {http.client.responses.get(int(status), '')}"]
        lines += [f"{k}: {v}" for k, v in headers] + [f"Content-Length: {len(data)}", "", ""]
        # One write: headers and body apart meet Nagle and delayed ACKs, 40 ms per call.
        self.wfile.write("\r\n".join(lines).encode("latin-1") + data)

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() != "websocket":
            self.reply(HTTPStatus.METHOD_NOT_ALLOWED, [("Content-Type", "text/plain")], b"POST only\n")
            return
        self.close_connection = True
        if not self.server.up.wait(UPSTREAM_WAIT_S):
            self.reply(None, [], b"")
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.server.upstream_port), timeout=5)
        except OSError:
            self.reply(None, [], b"")
            return
        upstream.settimeout(None)
        head = self.requestline + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
        upstream.sendall(head.encode("latin-1"))
        _tunnel(self.connection, upstream)


def _tunnel(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    other = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    other.start()
    pump(client, upstream)
    other.join(timeout=5)
    upstream.close()
