"""The explorer's web application (FastAPI + uvicorn), its index follower, and how `fedchain explorer` starts them.

It binds 127.0.0.1 by default and refuses any address outside 127.0.0.0/8 (and ::1): the explorer is a local tool.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedchain.explorer import api, live, pages
from fedchain.explorer.index import Follower, Indexer
from fedchain.explorer.live import LiveFeed
from fedchain.explorer.queries import BadInput, Explorer, NotFound, Settings
from fedchain.explorer.rpc import JsonRpc
from fedchain.explorer.search import SearchError
from fedchain.protocol.loopback import check_loopback_host, is_loopback_url
from fedchain.storage import IpfsClient

log = logging.getLogger("fedchain.explorer")
STATIC = Path(__file__).parent / "static"
DEFAULT_INDEX_DIR = Path(".fedchain") / "explorer"


@dataclass
class ExplorerConfig:
    rpc_url: str
    ipfs_api: str | None
    index_path: Path | None = None
    mode: str = "auto"
    from_block: int | None = None
    confirmations: int | None = None
    watch_tasks: list[str] = field(default_factory=list)
    poll_interval: float | None = None


def default_index_path(rpc_url: str) -> Path:
    """One index file per RPC endpoint (the file itself also checks it belongs to the node's chain)."""
    tag = hashlib.sha256(rpc_url.encode()).hexdigest()[:12]
    return DEFAULT_INDEX_DIR / f"index-{tag}.sqlite"


@dataclass
class ExplorerRuntime:
    """Everything a running explorer holds: the indexer (writer), its follower thread, the read side, the feed."""

    indexer: Indexer
    follower: Follower
    explorer: Explorer
    feed: LiveFeed

    def close(self) -> None:
        self.follower.stop()
        self.indexer.close()


def build_runtime(config: ExplorerConfig) -> ExplorerRuntime:
    rpc = JsonRpc(config.rpc_url)
    ipfs = IpfsClient(config.ipfs_api, timeout=15.0) if config.ipfs_api else None
    index_path = config.index_path or default_index_path(config.rpc_url)
    indexer = Indexer(
        index_path,
        rpc,
        ipfs,
        mode=config.mode,
        from_block=config.from_block,
        confirmations=config.confirmations,
        watch_tasks=config.watch_tasks,
    )
    feed = LiveFeed()
    indexer.listeners.append(feed.publish)
    interval = config.poll_interval or (0.5 if is_loopback_url(config.rpc_url) else 4.0)
    follower = Follower(indexer, interval=interval)
    # The read side gets its own RPC and IPFS clients: the follower thread owns the indexer's.
    explorer = Explorer(
        Settings(config.rpc_url, config.ipfs_api, indexer.chain_id, index_path),
        indexer.status,
        JsonRpc(config.rpc_url),
        IpfsClient(config.ipfs_api, timeout=15.0) if config.ipfs_api else None,
    )
    return ExplorerRuntime(indexer, follower, explorer, feed)


def create_app(runtime: ExplorerRuntime, start_follower: bool = True) -> FastAPI:
    explorer = runtime.explorer

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_follower:
            runtime.follower.start()
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="fedchain explorer",
        description="Rounds, updates and transactions of FederatedTask contracts; the same data as the pages.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads assets from a CDN: nothing here loads from outside 127.0.0.1
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def error(request: Request, code: int, title: str, message: str) -> Response:
        if wants_json(request):
            return JSONResponse({"error": message, "status": code}, status_code=code)
        return pages.message_page(request, code, title, message, explorer)

    @app.exception_handler(SearchError)
    async def on_search_error(request: Request, exc: SearchError) -> Response:
        return error(request, 400, "Cannot search for that", str(exc))

    @app.exception_handler(BadInput)
    async def on_bad_input(request: Request, exc: BadInput) -> Response:
        return error(request, 400, "Bad request", str(exc))

    @app.exception_handler(NotFound)
    async def on_not_found(request: Request, exc: NotFound) -> Response:
        return error(request, 404, "Not found", str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'/'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in exc.errors())
        return error(request, 400, "Bad request", f"Malformed request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error(request, 404, "Not found", f"There is no page at {request.url.path}.")
        return error(request, exc.status_code, "Error", str(exc.detail))

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("error serving %s", request.url.path)
        return error(request, 500, "Internal error", f"{type(exc).__name__}: {exc}")

    app.include_router(api.router(explorer))
    app.include_router(live.router(runtime.feed))
    app.include_router(pages.router(explorer))
    return app


def serve(config: ExplorerConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Build the index runtime and serve until interrupted."""
    import uvicorn

    check_loopback_host(host)
    runtime = build_runtime(config)
    app = create_app(runtime)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="on",
        )
    )
    server.run()
