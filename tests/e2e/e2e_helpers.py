"""Helpers for the end-to-end tests (imported by the tests and the conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fedchain.app.demo.forked import ForkedProcess, fork_command
from fedchain.app.devnet import DevnetState, terminate
from fedchain.chain import EventFollower, Phase, TaskClient, connect
from fedchain.chain.buffered import BufferedTaskClient, Status
from fedchain.learning.data import load_dataset
from fedchain.learning.model import build_model, set_weights
from fedchain.learning.spec import TaskSpec
from fedchain.learning.train import evaluate
from fedchain.storage import IpfsClient, compute_cid, decode_weights, digest_to_cid


class Cli:
    """Runs `fedchain` subcommands as separate OS processes against one devnet.

    Each process is forked from the demo's fork server (`fedchain.app.demo.forked`: torch, web3 and fedchain
    imported once per test worker), not started as a new Python: the same command line in a process of its own, but
    without ~2.5 s of CPU for its imports, which made up most of the end-to-end tests' CPU on two cores.
    FEDCHAIN_TESTS_NO_FORK=1 starts every process as a new Python instead."""

    def __init__(self, state: DevnetState, logs: Path) -> None:
        self.state = state
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes] | ForkedProcess] = []
        self.fork = os.environ.get("FEDCHAIN_TESTS_NO_FORK", "") in ("", "0")
        self._runs = 0

    def endpoints(self) -> list[str]:
        return ["--rpc-url", self.state.rpc_url, "--ipfs-api", self.state.ipfs_api]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "fedchain.cli", *args]
        if self.fork:
            self._runs += 1
            out, err = self.logs / f"run-{self._runs}.out", self.logs / f"run-{self._runs}.err"
            forked = fork_command(cmd, out, dict(os.environ), err)
            try:
                returncode = forked.wait(timeout)
            except subprocess.TimeoutExpired:
                terminate(forked)
                raise
            proc = subprocess.CompletedProcess(cmd, returncode, out.read_text(), err.read_text())
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise AssertionError(f"fedchain {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def deploy(self, *args: str) -> dict:
        out = self.run("deploy", *args, *self.endpoints(), "--json")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def spawn(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes] | ForkedProcess:
        cmd = [sys.executable, "-m", "fedchain.cli", *args, *self.endpoints()]
        proc: subprocess.Popen[bytes] | ForkedProcess
        if self.fork:
            proc = fork_command(cmd, self.logs / f"{name}.log", {**os.environ, **(env or {})})
        else:
            log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed when the process object is collected
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
            )
        self.processes.append(proc)
        return proc

    def log_text(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.processes:
            terminate(proc)


def wait_for_phase(rpc_url: str, task: str, phases: set[Phase], timeout: float, procs=()) -> Phase:
    """Poll the chain until the task reaches one of `phases`; fail early if a watched process dies badly."""
    client = TaskClient(connect(rpc_url), task)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = client.current_round().phase
        if phase in phases:
            return phase
        for proc in procs:
            if proc.poll() not in (None, 0):
                raise AssertionError(f"process {proc.args[3:5]} exited with {proc.returncode}")
        time.sleep(0.25)
    raise AssertionError(f"task {task} did not reach {phases} within {timeout:.0f}s (now {phase.name})")


def committed_rounds(rpc_url: str, task: str) -> dict[int, list[dict]]:
    """Every AggregateCommitted event of the task, grouped by round."""
    client = TaskClient(connect(rpc_url), task)
    rounds: dict[int, list[dict]] = {}
    for event in EventFollower(client.w3, task, client.abi).history("AggregateCommitted"):
        rounds.setdefault(event.args["round"], []).append(event.args)
    return rounds


def evaluate_cid(ipfs: IpfsClient, spec: TaskSpec, cid: str) -> float:
    """Fetch a model by CID (checked independently with compute_cid) and return its held-out accuracy."""
    blob = ipfs.cat(cid)
    assert compute_cid(blob) == cid, "model bytes on IPFS do not hash to the CID on chain"
    model = build_model(spec.model, seed=spec.seed)
    set_weights(model, {k: np.asarray(v) for k, v in decode_weights(blob).items()})
    return evaluate(model, load_dataset(spec.dataset)[1]).accuracy


def task_spec(rpc_url: str, ipfs: IpfsClient, task: str) -> TaskSpec:
    client = TaskClient(connect(rpc_url), task)
    return TaskSpec.from_json(ipfs.cat(digest_to_cid(client.config().model_spec_digest)))


def report_of(ipfs: IpfsClient, commit_args: dict) -> dict:
    return json.loads(ipfs.cat(digest_to_cid(bytes(commit_args["reportDigest"]))))


def start_explorer(state: DevnetState, logs: Path, index: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`fedchain explorer` against a devnet on a free port, as its own process; returns it once it answers."""
    import httpx

    from fedchain.app.devnet import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(logs / "explorer.log", "ab")  # noqa: SIM115 - closed when the process object is collected
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "fedchain.cli", "explorer", "--port", str(port), "--index", str(index)),
            *("--rpc-url", state.rpc_url, "--ipfs-api", state.ipfs_api),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"explorer exited with {proc.returncode}: {(logs / 'explorer.log').read_text()}")
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    terminate(proc)
    raise AssertionError("explorer did not answer within 60s")


def wait_explorer_synced(url: str, rpc_url: str, timeout: float = 60) -> None:
    """Until the explorer has indexed the chain's head and fetched every committed round's report."""
    import httpx

    w3 = connect(rpc_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(url + "/api/health", timeout=5).json()
        if health["indexed_block"] >= w3.eth.block_number:
            tasks = httpx.get(url + "/api/tasks", timeout=5).json()
            pending = 0
            for task in tasks:
                rounds = httpx.get(f"{url}/api/task/{task['address']}/rounds", timeout=5).json()
                pending += sum(1 for r in rounds if r["state"] == "committed" and r["accuracy"] is None)
            if pending == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"explorer at {url} did not catch up within {timeout:.0f}s")


def wait_until_finished(rpc_url: str, task: str, timeout: float, procs: list) -> None:
    """Wait until a buffered task has published its last version; a process that died fails the wait at once."""
    client = BufferedTaskClient(connect(rpc_url), task)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.filling_buffer().status == Status.FINISHED:
            return
        for proc in procs:
            if proc.poll() not in (None, 0):
                raise AssertionError(f"process {proc.args[3:5]} exited with {proc.returncode}")
        time.sleep(0.5)
    raise AssertionError(f"task {task} did not finish within {timeout:.0f}s (version {client.current_version()})")
