"""The hand-over file between a supervisor (`fedchain demo`) and the processes it starts before the task exists.

Device, pool and aggregator processes spend most of their start-up importing torch and web3. Started with
`--launch-file`, they import and warm up while the supervisor starts the devnet and deploys the task; the supervisor
then writes the task's address and endpoints here, atomically (a reader never sees half a file).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

POLL_SECONDS = 0.02


@dataclass(frozen=True)
class LaunchTarget:
    task: str
    rpc_url: str | None = None
    ipfs_api: str | None = None


def write_launch(path: Path, target: LaunchTarget) -> None:
    """Write `target` to `path` atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(target)))
    os.replace(tmp, path)


def read_launch(path: Path) -> LaunchTarget:
    """The target in `path`; ValueError naming the file when it is not a launch file."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("task"), str) or not data["task"]:
        raise ValueError(f"{path} has no task address: {data!r}")
    unknown = sorted(set(data) - {"task", "rpc_url", "ipfs_api"})
    if unknown:
        raise ValueError(f"{path} has unknown field(s) {unknown}")
    return LaunchTarget(data["task"], data.get("rpc_url"), data.get("ipfs_api"))


def wait_for_launch(path: Path, timeout: float) -> LaunchTarget:
    """Block until `path` exists, then read it; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no launch file {path} after {timeout:.0f}s (did the supervisor fail?)")
        time.sleep(POLL_SECONDS)
    return read_launch(path)


__all__ = ["LaunchTarget", "read_launch", "wait_for_launch", "write_launch"]
