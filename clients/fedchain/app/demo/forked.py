"""The demo's child processes forked from one that has already imported what they all import.

Every aggregator, device and pool process imports torch, web3 and fedchain's device and aggregator code before it
does anything: ~2.5 s of CPU each, paid once per process. On a 2-core machine at 1,000 devices (two pools and an
aggregator) those imports were most of the demo's start-up. A multiprocessing fork server imports them once, while
the devnet starts, and forks each child from there: a child starts in milliseconds and shares those pages with its
siblings (copy-on-write). Each child runs the same `fedchain` command line it would run as a process of its own
(`run_command`), with its output in its own log file; `ForkedProcess` gives the demo the part of
`subprocess.Popen` it uses, so watching, restarting and stopping them is unchanged.

As with any multiprocessing start method but fork, a script that calls `run_demo` needs the
`if __name__ == "__main__":` guard (the children import the script's main module); `fedchain demo` and
`python -m fedchain.cli demo` do not.

The same fork server also runs `Helper`, one forked process for the demo's own torch work (the initial model,
evaluating each round's model), so the demo's process never imports torch before the run is over.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import multiprocessing.popen_forkserver
import multiprocessing.queues
import multiprocessing.resource_tracker
import os
import signal
import subprocess
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedchain.learning.spec import TaskSpec
    from fedchain.learning.types import Weights

# What the fork server imports before it forks anything: the union of what `fedchain aggregator`, `fedchain device`
# and `fedchain pool` import, and the helper's evaluation code. A name that fails to import is skipped (multiprocessing
# ignores ImportError in preloads); the child then imports it itself.
PRELOAD = [
    "torch",
    "web3",
    "fedchain.cli",
    "fedchain.chain",
    "fedchain.chain.accounts",
    "fedchain.storage",
    "fedchain.learning.data",
    "fedchain.learning.model",
    "fedchain.learning.train",
    "fedchain.learning.attacks",
    "fedchain.device.runner",
    "fedchain.device.pool",
    "fedchain.aggregator.worker",
    "fedchain.aggregator.hooks",
]
_context: ForkServerContext | None = None


def fork_context() -> ForkServerContext:
    """The fork-server context, its preload list set once per interpreter (the fork server is a singleton)."""
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        assert isinstance(context, ForkServerContext)
        context.set_forkserver_preload(PRELOAD)
        _context = context
    return _context


def run_command(argv: list[str], log_path: str, env: dict[str, str] | None = None, err_path: str | None = None) -> None:
    """In the forked child: `fedchain <argv>` with stdin from /dev/null and stdout and stderr appended to
    `log_path` (stderr to `err_path` where given), as `subprocess.Popen` ran it, with `env` added to the server's
    environment. Its exit code is the child's."""
    # What the fork server imported stays out of this process's garbage collections: a full collection would walk
    # (and, writing to their headers, copy) every page of those objects shared with the server.
    gc.freeze()
    os.environ.update(env or {})
    devnull = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if err_path else log
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(err, 2)
    for fd in {devnull, log, err}:
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt, as in a new Python
    from fedchain.cli import app

    sys.argv = ["fedchain", *argv]
    app(args=argv, prog_name="fedchain")


class ForkedProcess:
    """A forked `fedchain` command with the part of `subprocess.Popen`'s interface the demo uses. `args` is the
    command line it stands for (`[python, -m, fedchain.cli, ...]`), so a restart can start it as a plain process."""

    def __init__(self, process: BaseProcess, args: list[str]) -> None:
        self.process = process
        self.args = args
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def poll(self) -> int | None:
        if self.returncode is None and not self.process.is_alive():
            self.returncode = self.process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_command(
    cmd: list[str], log_path: Path, env: dict[str, str] | None = None, err_path: Path | None = None
) -> ForkedProcess:
    """Fork `cmd` (`[python, -m, fedchain.cli, *argv]`) from the fork server, its output appended to `log_path`
    (stderr to `err_path` where given) and `env` added to the environment the server started with. Blocks until the
    server has imported PRELOAD (the first call) and forked the child."""
    if cmd[1:3] != ["-m", "fedchain.cli"]:
        raise ValueError(f"only `fedchain` commands are forked, not {cmd[:3]}")
    args = (cmd[3:], str(log_path), dict(env or {}), str(err_path) if err_path else None)
    process = fork_context().Process(target=run_command, args=args, daemon=False)
    process.start()
    return ForkedProcess(process, cmd)


# ---------------------------------------------------------------------------------------------------------------
# The demo's own torch work, in one forked helper process.

_evaluation: dict[str, Any] = {}


def initial_weights(spec: TaskSpec) -> Weights:
    """The task's initial model (seeded by the spec), as `create_task` would build it."""
    from fedchain.learning.model import build_model, get_weights

    return get_weights(build_model(spec.model, seed=spec.seed))


def evaluate_weights(spec: TaskSpec, weights: Weights) -> tuple[float, float]:
    """(accuracy, loss) of `weights` on the spec's held-out set; the set and the model are built once per helper."""
    from fedchain.learning.data import load_dataset
    from fedchain.learning.model import build_model, set_weights
    from fedchain.learning.train import evaluate

    key = spec.to_json()
    if _evaluation.get("key") != key:
        _evaluation.update(key=key, test=load_dataset(spec.dataset)[1], model=build_model(spec.model, seed=spec.seed))
    model = _evaluation["model"]
    set_weights(model, weights)
    result = evaluate(model, _evaluation["test"])
    return result.accuracy, result.loss


def initial_model_key(spec: TaskSpec) -> str:
    """What the initial model is a function of: the model's description and seed, torch's version and fedchain's
    model code (a change to either builds it again). Computed without importing torch."""
    import hashlib
    import importlib.metadata
    import importlib.util
    import json
    from dataclasses import asdict

    found = importlib.util.find_spec("fedchain.learning.model")
    code = Path(found.origin).read_bytes() if found is not None and found.origin else b""
    described = {
        "model": asdict(spec.model),
        "seed": spec.seed,
        "torch": importlib.metadata.version("torch"),
        "model_code": hashlib.sha256(code).hexdigest(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def cached_initial_weights(cache: Path, spec: TaskSpec) -> Weights | None:
    """The initial model a previous demo built for this `spec` (see `initial_model_key`), or None."""
    from fedchain.storage.codec import decode_weights

    path = cache / "initial-models" / f"{initial_model_key(spec)}.safetensors"
    try:
        return decode_weights(path.read_bytes())
    except (OSError, ValueError):  # not there, or unreadable: built again
        return None


def cache_initial_weights(cache: Path, spec: TaskSpec, weights: Weights) -> None:
    """Keep `weights` for the next demo of this `spec`, written atomically."""
    from fedchain.storage.codec import encode_weights

    folder = cache / "initial-models"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{os.getpid()}.tmp"
    tmp.write_bytes(encode_weights(weights))
    os.replace(tmp, folder / f"{initial_model_key(spec)}.safetensors")


class Helper:
    """One forked process for the demo's torch work; `submit` returns a Future. Close it when done."""

    def __init__(self) -> None:
        self._executor = ProcessPoolExecutor(max_workers=1, mp_context=fork_context())

    def initial_weights(self, spec: TaskSpec) -> Future[Weights]:
        return self._executor.submit(initial_weights, spec)

    def evaluate(self, spec: TaskSpec, weights: Weights) -> tuple[float, float]:
        return self._executor.submit(evaluate_weights, spec, weights).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
