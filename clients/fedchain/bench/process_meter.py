"""Measuring a benchmark's subprocess: the peak memory of its whole process tree, sampled in a thread, the moment a
marker line appears on its stderr, its wall time; stopping the tree afterwards (psutil, the `bench` extra).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GB = 1 << 30
SAMPLE_INTERVAL = 0.2


class TreeMemorySampler:
    """Samples the memory of a process and all its descendants every `interval` s in a thread; keeps the peak.

    The sum of USS (memory unique to each process: shared libraries counted once at most, never per process) where
    psutil can read it, else of RSS (over-counts shared pages); `metric` says which was used ("uss", "rss", or
    "uss+rss" when only some processes allowed USS)."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self.peak_processes = 0
        self.samples = 0
        self.metrics: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sample(self) -> int:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            try:
                try:
                    total += proc.memory_full_info().uss
                    self.metrics.add("uss")
                except psutil.AccessDenied:
                    total += proc.memory_info().rss
                    self.metrics.add("rss")
            except psutil.Error:  # exited between listing and reading
                continue
        self.samples += 1
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_processes = total, len(procs)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def result(self) -> dict[str, Any]:
        metric = "+".join(sorted(self.metrics, reverse=True)) or None
        return {
            "peak_bytes": self.peak_bytes or None,
            "peak_gb": round(self.peak_bytes / GB, 3) if self.peak_bytes else None,
            "processes_at_peak": self.peak_processes,
            "metric": metric,
            "samples": self.samples,
            "interval_seconds": self.interval,
        }


class MarkerWatcher:
    """Notes when `marker` first appears in a growing log file (checked every `interval` s): the moment, from
    outside, that a process reached a point it prints (the demo's "round 1 is open")."""

    def __init__(self, path: Path, marker: str, interval: float = 0.05) -> None:
        self.path, self.marker, self.interval = path, marker.encode(), interval
        self.seen_at: float | None = None
        self._offset = 0
        self._tail = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="marker-watcher", daemon=True)

    def __enter__(self) -> MarkerWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.check()

    def check(self) -> bool:
        if self.seen_at is not None:
            return True
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return False
        now = time.time()
        self._offset += len(chunk)
        text = self._tail + chunk
        if self.marker in text:
            self.seen_at = now
            return True
        self._tail = text[-len(self.marker) :]
        return False

    def _run(self) -> None:
        while not self._stop.is_set() and not self.check():
            self._stop.wait(self.interval)


def run_measured(
    cmd: Sequence[str],
    env: dict[str, str],
    stdout: Path,
    stderr: Path,
    timeout: float,
    stderr_marker: str | None = None,
) -> tuple[int | None, float, float, dict[str, Any], float | None]:
    """Start `cmd`, sample its tree's memory until it exits; returns (exit code or None on timeout, launch
    time.time(), wall seconds, memory, seconds from launch until `stderr_marker` appeared in its stderr)."""
    stdout.parent.mkdir(parents=True, exist_ok=True)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        launched = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        watcher = MarkerWatcher(stderr, stderr_marker or "")
        with TreeMemorySampler(proc.pid) as sampler, watcher if stderr_marker else contextlib.nullcontext():
            try:
                code: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
                code = None
        marked = round(watcher.seen_at - launched, 3) if watcher.seen_at is not None else None
        return code, launched, time.perf_counter() - started, sampler.result(), marked


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process we started and its descendants (by pid), then kill what is left."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
