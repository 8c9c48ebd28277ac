"""The follower thread: keeps an Indexer caught up with the chain and fetches reports, backing off on errors."""

from __future__ import annotations

import logging
import threading

from fedchain.explorer.index.ingest import Indexer

log = logging.getLogger("fedchain.explorer.index")


class Follower:
    """A daemon thread that keeps an Indexer caught up with the chain and fetches reports."""

    def __init__(self, indexer: Indexer, interval: float = 0.5) -> None:
        self.indexer = indexer
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedchain-explorer-index", daemon=True)
        self.caught_up = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self.interval
        try:
            self.indexer.add_watched_tasks()
        except Exception as exc:
            log.warning("cannot read the watched tasks: %s", exc)
        while not self._stop.is_set():
            try:
                indexed = self.indexer.step()
                self.indexer.fetch_reports()
                backoff = self.interval
                if indexed:
                    continue
                self.caught_up.set()
            except Exception as exc:  # the node went away, a reorg in progress: show it, retry with backoff
                self.indexer.status.error = f"{type(exc).__name__}: {exc}"[:400]
                log.warning("indexing paused: %s", exc)
                backoff = min(10.0, backoff * 2)
            self._stop.wait(backoff)
