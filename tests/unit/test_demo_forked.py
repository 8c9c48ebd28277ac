"""The demo's forked processes (fedchain.app.demo.forked): a `fedchain` command forked from the fork server runs as
it would as a process of its own (its output in its log, its exit code, stopped by SIGTERM), and the helper process
builds the same initial model and evaluates a model as the demo's own process would. Real fork server, real torch."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedchain.app.demo import DemoOptions
from fedchain.app.demo.forked import ForkedProcess, Helper, fork_command
from fedchain.app.deploy import initial_model_weights
from fedchain.app.devnet import terminate

FEDCHAIN = [sys.executable, "-m", "fedchain.cli"]


def test_a_forked_command_writes_its_log_and_exits_with_its_code(tmp_path: Path) -> None:
    log = tmp_path / "help.log"
    proc = fork_command([*FEDCHAIN, "pool", "--help"], log)
    assert isinstance(proc, ForkedProcess) and proc.args[3:] == ["pool", "--help"]
    assert proc.wait(timeout=120) == 0 and proc.poll() == 0
    assert "--accounts" in log.read_text()

    bad = fork_command([*FEDCHAIN, "no-such-command"], tmp_path / "bad.log")
    assert bad.wait(timeout=60) == 2  # typer's usage error, as `python -m fedchain.cli no-such-command` exits
    assert "no-such-command" in (tmp_path / "bad.log").read_text()


def test_a_forked_command_is_stopped_like_a_process(tmp_path: Path) -> None:
    # A pool waiting for a launch file that never comes: it runs until stopped.
    cmd = [*FEDCHAIN, "pool", "--accounts", "2:4", "--num-partitions", "2"]
    cmd += ["--launch-file", str(tmp_path / "never.json")]
    proc = fork_command(cmd, tmp_path / "pool.log")
    time.sleep(1.0)
    assert proc.poll() is None
    with pytest.raises(Exception, match="timed out"):
        proc.wait(timeout=0.1)
    terminate(proc)  # the demo's own stop: SIGTERM, wait, SIGKILL if need be
    assert proc.poll() is not None and proc.returncode != 0


def test_only_fedchain_commands_are_forked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fedchain"):
        fork_command([sys.executable, "-c", "print(1)"], tmp_path / "x.log")


def test_the_helper_builds_the_same_initial_model_and_evaluation_as_this_process() -> None:
    from fedchain.app.demo.rounds import _local_evaluation

    options = DemoOptions(devices=3, rounds=1)
    helper = Helper()
    try:
        forked = helper.initial_weights(options.spec).result(timeout=120)
        here = initial_model_weights(options.spec)
        assert sorted(forked) == sorted(here)
        for name, array in here.items():
            assert forked[name].dtype == array.dtype and np.array_equal(forked[name], array), name
        assert helper.evaluate(options.spec, here) == _local_evaluation(options)(here)
    finally:
        helper.close()


def test_the_initial_model_is_kept_per_spec(tmp_path: Path) -> None:
    from dataclasses import replace

    from fedchain.app.demo.forked import cache_initial_weights, cached_initial_weights, initial_model_key

    spec = DemoOptions().spec
    assert cached_initial_weights(tmp_path, spec) is None
    weights = initial_model_weights(spec)
    cache_initial_weights(tmp_path, spec, weights)
    kept = cached_initial_weights(tmp_path, spec)
    assert kept is not None and sorted(kept) == sorted(weights)
    assert all(kept[n].dtype == w.dtype and np.array_equal(kept[n], w) for n, w in weights.items())
    # Another seed (or model) is another model: not taken from the cache.
    other = replace(spec, seed=spec.seed + 1)
    assert initial_model_key(other) != initial_model_key(spec)
    assert cached_initial_weights(tmp_path, other) is None
    # A damaged file is built again rather than trusted.
    next((tmp_path / "initial-models").glob("*.safetensors")).write_bytes(b"not safetensors")
    assert cached_initial_weights(tmp_path, spec) is None
