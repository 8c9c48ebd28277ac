"""The demo's processes: aggregators, devices or pools of virtual devices (started before the devnet, waiting for
the launch file), a crashed pool's restart, waiting until all are ready, and the optional explorer."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from fedchain.app.demo.options import FIRST_DEVICE_INDEX, MAX_POOL_RESTARTS, DemoOptions

if TYPE_CHECKING:
    from fedchain.app.devnet import DevnetState


def start_explorer(options: DemoOptions, state: DevnetState, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`fedchain explorer` against the demo's devnet, as its own process; returns it once it answers."""
    import httpx

    from fedchain.app.devnet import terminate

    port = options.explorer_port or 8000
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "fedchain.cli", "explorer", "--port", str(port)]
    cmd += ["--rpc-url", state.rpc_url, "--ipfs-api", state.ipfs_api, "--index", str(workdir / "explorer.sqlite")]
    with open(workdir / "logs" / "explorer.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the explorer exited with code {proc.returncode} (is port {port} in use? --explorer-port picks "
                f"another); see {workdir}/logs/explorer.log"
            )
        try:
            if httpx.get(url + "api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    terminate(proc)
    raise TimeoutError(f"the explorer did not answer at {url} within 60s; see {workdir}/logs/explorer.log")


def clear_handover(ready_dir: Path, launch_file: Path) -> None:
    """Remove an earlier run's ready markers and launch file: this run's processes must not take them for theirs."""
    ready_dir.mkdir(parents=True, exist_ok=True)
    for marker in ready_dir.iterdir():
        marker.unlink()
    launch_file.unlink(missing_ok=True)


def launch_processes(
    options: DemoOptions, launch_file: Path, logs: Path, ready_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """Aggregators first (`follow_rounds` watches them), then one process per device or one pool per share of devices;
    each waits for `launch_file` (the task and endpoints) and writes a file into `ready_dir` once it is ready for
    round 1. With `options.fork` they are forked from the fork server (forked.py), pools and devices first: the
    first fork waits for the server's imports, so call this off the main thread."""
    common = ["--launch-file", str(launch_file)]
    commands = []
    for j, index in enumerate(options.aggregator_indices()):
        cmd = [sys.executable, "-m", "fedchain.cli", "aggregator", *common, "--account", str(index)]
        cmd += ["--ready-file", str(ready_dir / f"aggregator-{j}")]
        if j >= options.aggregators - options.lying_aggregators:
            cmd.append("--lie")
        # Only the first evaluates: the others' reports would be the same, and evaluation costs the shared CPU.
        commands.append((f"aggregator-{j}" if options.aggregators > 1 else "aggregator", cmd))
    data = ["--online" if options.online else "--no-online"]
    if options.non_iid is not None:
        data += ["--non-iid", str(options.non_iid)]
    if options.stream_buffer:  # device processes only (DemoOptions.check refuses it with virtual devices)
        data += ["--stream-buffer", str(options.stream_buffer), "--stream-speed", str(options.stream_speed)]
    if options.use_virtual():
        pools = options.pool_count()
        for p in range(pools):
            first, end = p * options.devices // pools, (p + 1) * options.devices // pools
            cmd = [sys.executable, "-m", "fedchain.cli", "pool", *common, *data]
            cmd += ["--accounts", f"{FIRST_DEVICE_INDEX + first}:{FIRST_DEVICE_INDEX + end}"]
            cmd += ["--first-partition", str(first), "--num-partitions", str(options.devices)]
            cmd += ["--ready-file", str(ready_dir / f"pool-{p}")]
            relayers = options.relayer_indices()
            if relayers:
                cmd += ["--relayer-account", str(relayers[p])]
            commands.append((f"pool-{p}", cmd))
    for i in range(0 if options.use_virtual() else options.devices):
        cmd = [sys.executable, "-m", "fedchain.cli", "device", *common, *data]
        cmd += ["--account", str(FIRST_DEVICE_INDEX + i), "--partition", f"{i}/{options.devices}"]
        cmd += ["--ready-file", str(ready_dir / f"device-{i}")]
        if i < options.attacker_count():
            cmd += ["--attack", options.attack]
        if i >= options.devices - options.dropout_count():
            cmd += ["--drop-after-setup"]
        commands.append((f"device-{i}", cmd))
    if not options.fork:
        return [_spawn(name, cmd, logs) for name, cmd in commands]
    # The devices' start-up (their accounts, data, models) is round 1's critical path; the aggregators' is not.
    aggregators = options.aggregators
    forked = {name: _fork(name, cmd, logs) for name, cmd in commands[aggregators:] + commands[:aggregators]}
    return [forked[name] for name, _ in commands]


def _spawn(name: str, cmd: list[str], logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc.fedchain_name = name  # type: ignore[attr-defined]
    return proc


def _fork(name: str, cmd: list[str], logs: Path) -> subprocess.Popen[bytes]:
    from fedchain.app.demo.forked import fork_command

    proc = fork_command(cmd, logs / f"{name}.log")
    proc.fedchain_name = name  # type: ignore[attr-defined]
    return proc  # type: ignore[return-value]  # the part of Popen the demo uses


def restart_crashed_pools(processes: list[subprocess.Popen[bytes]], logs: Path, console: Console) -> int:
    """A pool that died (killed, out of memory) is started again: its devices resume from chain state. Returns
    how many were restarted."""
    restarted = 0
    for i, proc in enumerate(processes):
        name = getattr(proc, "fedchain_name", "")
        if name.startswith("pool-") and proc.poll() is not None and proc.returncode != 0:
            lives = getattr(proc, "fedchain_lives", 1)
            if lives > MAX_POOL_RESTARTS:
                raise RuntimeError(f"{name} keeps failing (exit code {proc.returncode}, {lives} lives): see its log")
            console.print(f"[yellow]{name} exited with code {proc.returncode}: restarting it[/]")
            processes[i] = _spawn(name, list(map(str, proc.args)), logs)  # type: ignore[arg-type]
            processes[i].fedchain_lives = lives + 1  # type: ignore[attr-defined]
            restarted += 1
    return restarted


def wait_ready(ready_dir: Path, count: int, processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Block until `count` ready files exist; a process that exits first, or the timeout, is an error."""
    deadline = time.monotonic() + timeout
    while len(list(ready_dir.iterdir())) < count:
        for proc in processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, proc.args[3:5]))} exited before round 1 (see its log)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(ready_dir.iterdir()))} of {count} processes were ready in {timeout}s")
        time.sleep(0.02)
