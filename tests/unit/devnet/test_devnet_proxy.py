"""The devnet's holding proxy against a real (tiny) HTTP service on loopback: forwarding, chunked uploads, and a
request held while the service is down, then answered by its restarted self on the same port."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fedchain.app.devnet import free_port
from fedchain.app.devnet.proxy import HoldingProxy


class _Echo(BaseHTTPRequestHandler):
    """Answers a POST with 'life N: <body>' and an extra header, like a service that can be restarted."""

    protocol_version = "HTTP/1.1"
    life = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        data = f"life {self.life}: ".encode() + body + f" ({self.headers['Content-Type']})".encode()
        self.send_response(201)
        self.send_header("X-Stream-Output", "1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _serve(port: int, life: int) -> ThreadingHTTPServer:
    handler = type("Echo", (_Echo,), {"life": life})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def proxy() -> Iterator[HoldingProxy]:
    front = HoldingProxy(free_port(), free_port(), "test service")
    front.start()
    try:
        yield front
    finally:
        front.close()


def _post(port: int, body: bytes, chunked: bool = False) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/api/v0/x?arg=1",
        iter([body]) if chunked else body,
        {"Content-Type": "text/x-test"},
        encode_chunked=chunked,
    )
    response = conn.getresponse()
    out = response.status, str(response.getheader("X-Stream-Output")), response.read()
    conn.close()
    return out


def test_forwards_status_headers_and_chunked_bodies(proxy: HoldingProxy) -> None:
    service = _serve(proxy.upstream_port, 1)
    proxy.up.set()
    try:
        assert _post(proxy.server_address[1], b"hello") == (201, "1", b"life 1: hello (text/x-test)")
        assert _post(proxy.server_address[1], b"in chunks", chunked=True)[2] == b"life 1: in chunks (text/x-test)"
    finally:
        service.shutdown()
        service.server_close()


def test_a_request_made_while_the_service_is_down_is_held_and_answered_after_its_restart(proxy: HoldingProxy) -> None:
    service = _serve(proxy.upstream_port, 1)
    proxy.up.set()
    assert _post(proxy.server_address[1], b"a")[2].startswith(b"life 1")
    service.shutdown()
    service.server_close()
    proxy.up.clear()  # what the supervisor does when it sees the service die

    answer: list[tuple[int, str, bytes]] = []
    waiting = threading.Thread(target=lambda: answer.append(_post(proxy.server_address[1], b"b")))
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive() and not answer  # held, not refused

    restarted = _serve(proxy.upstream_port, 2)
    proxy.up.set()
    waiting.join(timeout=10)
    try:
        assert answer == [(201, "1", b"life 2: b (text/x-test)")]
    finally:
        restarted.shutdown()
        restarted.server_close()


def test_a_proxy_whose_service_is_given_up_on_answers_503_instead_of_holding(proxy: HoldingProxy) -> None:
    port = proxy.server_address[1]
    answer: list[tuple[int, str, bytes]] = []
    waiting = threading.Thread(target=lambda: answer.append(_post(port, b"c")))
    waiting.start()
    waiting.join(timeout=0.3)
    proxy.fail_fast()  # what the supervisor does when it gives up on the service
    waiting.join(timeout=10)
    assert answer and answer[0][0] == 503
