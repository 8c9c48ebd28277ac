"""Child processes and ports of the devnet: free ports, spawning and stopping services, recognising a previous
devnet's leftovers by their command lines, the small JSON files that record them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from fedchain.app.devnet.anvil import rpc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_rpc(port: int, proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"chain exited with code {proc.returncode}: see {log_path}")
        try:
            rpc(port, "eth_chainId", timeout=2)
            return
        except (OSError, RuntimeError, ValueError):
            if time.monotonic() > deadline:
                terminate(proc)
                raise TimeoutError(f"chain not answering on port {port} after {timeout:.0f}s: see {log_path}") from None
            time.sleep(0.1)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a] or None


def same_program(running: list[str] | None, recorded: list[str]) -> bool:
    """Whether a live process's command line is the one we started: the same arguments, and the same program
    (an npm shim such as ganache shows up as `node .../ganache ...`)."""
    if not running or not recorded:
        return False
    args = recorded[1:]
    if running[len(running) - len(args) :] != args:
        return False
    program = Path(recorded[0]).name
    return any(Path(a).name == program for a in running[: len(running) - len(args)])


def require_free_port(port: int, timeout: float = 5.0) -> int:
    """`port`, once free; fails clearly when something else listens on a port we must serve (rather than talk to
    a stranger)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {port} on 127.0.0.1 is in use by another program") from None
        time.sleep(0.1)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process that is not our child, then SIGKILL if it does not exit in time."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cmdline(pid) is None:
                return
            time.sleep(0.05)


def spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        # A new session so that Ctrl-C in a terminal reaches only us; we stop children ourselves.
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
