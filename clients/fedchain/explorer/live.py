"""Live updates: the indexer publishes changes (new blocks, round state) to a feed; browsers follow it through
server-sent events (`GET /api/live`), scripts can poll it (`GET /api/live/poll?after=SEQ`)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from fedchain.explorer.index import Change

KEEPALIVE_S = 15.0
POLL_S = 0.3
MAX_PER_FLUSH = 50


class LiveFeed:
    """A bounded, numbered list of recent changes, shared between the indexer thread and the web server."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._events: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=maxlen)
        self._seq = 0
        self._lock = threading.Lock()

    def publish(self, changes: list[Change]) -> None:
        with self._lock:
            for change in changes:
                self._seq += 1
                self._events.append((self._seq, change.kind, change.data))

    @property
    def last_seq(self) -> int:
        return self._seq

    def since(self, seq: int) -> list[tuple[int, str, dict[str, Any]]]:
        with self._lock:
            return [e for e in self._events if e[0] > seq]


def sse_message(seq: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def router(feed: LiveFeed) -> APIRouter:
    api = APIRouter()

    @api.get("/api/live", summary="Server-sent events: `block` and `round` (and `task`) changes as they are indexed")
    async def live(request: Request, after: int | None = Query(None, ge=0)) -> StreamingResponse:
        header = request.headers.get("last-event-id")
        start = after if after is not None else (int(header) if header and header.isdigit() else feed.last_seq)

        async def stream() -> AsyncIterator[str]:
            seq = start
            yield "retry: 2000\n: connected\n\n"
            last_sent = time.monotonic()
            while not await request.is_disconnected():
                events = feed.since(seq)
                if events:
                    seq = events[-1][0]
                    # A burst (an index catching up) is thinned to its newest events.
                    for event in events[-MAX_PER_FLUSH:]:
                        yield sse_message(*event)
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent > KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                await asyncio.sleep(POLL_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.get("/api/live/poll", summary="Changes after sequence number `after` (polling alternative to /api/live)")
    def poll(after: int = Query(0, ge=0)) -> dict[str, Any]:
        events = feed.since(after)
        return {
            "last": feed.last_seq,
            "events": [{"seq": s, "kind": k, "data": d} for s, k, d in events[-200:]],
        }

    return api
