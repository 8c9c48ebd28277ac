"""A local development network: Ganache or Anvil plus the embedded IPFS service, as child processes.

The state file (JSON) tells every other command where the chain and IPFS are and which accounts are funded.
It holds the devnet's well-known mnemonic, never a real key.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedchain.chain.accounts import DEVNET_MNEMONIC, devnet_addresses
from fedchain.chain.connection import connect

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAIN_IDS = {"ganache": 1337, "anvil": 31337}
DEFAULT_HOME = Path(os.environ.get("FEDCHAIN_HOME", ".fedchain"))
DEFAULT_STATE_FILE = DEFAULT_HOME / "devnet.json"


@dataclass
class DevnetState:
    """Where the devnet's services listen, and its funded accounts (addresses only)."""

    chain: str
    rpc_url: str
    chain_id: int
    ipfs_api: str
    accounts: list[str]
    mnemonic: str = DEVNET_MNEMONIC
    pids: dict[str, int] = field(default_factory=dict)
    workdir: str = ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path = DEFAULT_STATE_FILE) -> DevnetState:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no devnet state file at {path}: start one with `fedchain devnet`, or pass --rpc-url/--ipfs-api"
            ) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_bin(name: str) -> str:
    """An npm-installed executable: the repo's node_modules/.bin first, then PATH."""
    local = REPO_ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in {local.parent} or on PATH: run `make setup` (npm ci)")
    return found


def chain_command(kind: str, port: int, num_accounts: int, mnemonic: str = DEVNET_MNEMONIC) -> list[str]:
    """The command line that starts a local chain on 127.0.0.1 with `num_accounts` funded accounts."""
    if kind == "ganache":
        return [
            node_bin("ganache"),
            "--server.host=127.0.0.1",
            f"--server.port={port}",
            f"--wallet.mnemonic={mnemonic}",
            f"--wallet.totalAccounts={num_accounts}",
            f"--chain.chainId={CHAIN_IDS['ganache']}",
            "--chain.hardfork=shanghai",
            "--miner.blockGasLimit=30000000",
            "--logging.quiet",
        ]
    if kind == "anvil":
        return [
            node_bin("anvil"),
            "--host=127.0.0.1",
            f"--port={port}",
            f"--mnemonic={mnemonic}",
            f"--accounts={num_accounts}",
            f"--chain-id={CHAIN_IDS['anvil']}",
            "--gas-limit=30000000",
            "--silent",
        ]
    raise ValueError(f"unknown chain {kind!r}: choose ganache or anvil")


class Devnet:
    """Starts a chain and the IPFS service; `stop()` (or leaving the `with` block) ends both."""

    def __init__(
        self,
        workdir: Path,
        chain: str = "ganache",
        rpc_port: int | None = None,
        ipfs_port: int | None = None,
        num_accounts: int = 30,
    ) -> None:
        if chain not in CHAIN_IDS:
            raise ValueError(f"unknown chain {chain!r}: choose one of {sorted(CHAIN_IDS)}")
        self.workdir = Path(workdir)
        self.chain = chain
        self.rpc_port = rpc_port or free_port()
        self.ipfs_port = ipfs_port if ipfs_port is not None else free_port()
        self.num_accounts = num_accounts
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.state: DevnetState | None = None

    def start(self, timeout: float = 60.0) -> DevnetState:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        try:
            self.processes["chain"] = _spawn(
                chain_command(self.chain, self.rpc_port, self.num_accounts), logs / f"{self.chain}.log"
            )
            ready_file = self.workdir / "ipfs-ready.json"
            ready_file.unlink(missing_ok=True)
            self.processes["ipfs"] = _spawn(
                [
                    sys.executable,
                    "-m",
                    "fedchain.storage.node",
                    "--repo",
                    str(self.workdir / "ipfs-repo"),
                    "--port",
                    str(self.ipfs_port),
                    "--ready-file",
                    str(ready_file),
                ],
                logs / "ipfs.log",
            )
            rpc_url = f"http://127.0.0.1:{self.rpc_port}"
            connect(rpc_url, wait=timeout)
            ipfs_api = self._wait_ready_file(ready_file, timeout)["api_url"]
        except BaseException:
            self.stop()
            raise
        self.state = DevnetState(
            chain=self.chain,
            rpc_url=rpc_url,
            chain_id=CHAIN_IDS[self.chain],
            ipfs_api=ipfs_api,
            accounts=devnet_addresses(self.num_accounts),
            pids={name: p.pid for name, p in self.processes.items()},
            workdir=str(self.workdir),
        )
        return self.state

    def _wait_ready_file(self, path: Path, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return dict(json.loads(path.read_text()))
            proc = self.processes["ipfs"]
            if proc.poll() is not None:
                raise RuntimeError(f"IPFS service exited with code {proc.returncode}: see {self.workdir}/logs/ipfs.log")
            time.sleep(0.1)
        raise TimeoutError(f"IPFS service not ready after {timeout:.0f}s: see {self.workdir}/logs/ipfs.log")

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"devnet {name} process exited with code {proc.returncode}")

    def stop(self) -> None:
        for proc in self.processes.values():
            terminate(proc)
        self.processes.clear()

    def __enter__(self) -> Devnet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
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
