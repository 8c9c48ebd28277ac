"""A local development network: Ganache or Anvil plus the embedded IPFS service, as supervised child processes
(their command lines in commands.py, the state file in state.py, process handling in processes.py)."""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from fedchain.app.devnet.anvil import AnvilStore, ChainProxy, replay, rpc, take_snapshot
from fedchain.app.devnet.commands import NODE_ACCOUNTS, chain_command, fund_accounts, ipfs_command
from fedchain.app.devnet.processes import (
    atomic_write_json,
    cmdline,
    free_port,
    read_json,
    require_free_port,
    same_program,
    spawn,
    stop_pid,
    terminate,
    wait_rpc,
)
from fedchain.app.devnet.proxy import HoldingProxy
from fedchain.app.devnet.restart import RestartBudget, RestartPolicy
from fedchain.app.devnet.state import CHAIN_IDS, DevnetState

log = logging.getLogger("fedchain.app.devnet")

SERVICES = ("chain", "ipfs")
SERVICES_FILE = "services.json"  # which processes serve a devnet, for the next one if this one is killed
SNAPSHOT_INTERVAL_S = 2.0  # Anvil snapshot period (at least); the journal covers the writes in between


class Devnet:
    """Starts a chain and the IPFS service, restarts either when it dies; `stop()` (or leaving the `with` block)
    ends both.

    With `persist`, the chain lives on disk under `workdir/<chain>-state` and survives any crash, including
    `kill -9` of the chain or of the process running this devnet: a devnet started again on the same `workdir`
    resumes the same chain (same blocks, tasks and accounts) on the same ports. Ganache keeps it in LevelDB
    (`--database.dbPath`), Anvil in snapshots and a journal of writes (see anvil.py). The chain and the IPFS
    service then run on private ports behind proxies (proxy.py) that hold clients' requests while a service
    restarts, and resend the ones it dropped, rather than refusing them (clients give up after a few seconds of
    refused connections); they listen before anything slow starts. Without
    `persist` the chain is in memory only: it is not restarted (an empty chain in its place would mislead every
    client), but the IPFS service still is: its repo is on disk. `fresh` deletes the kept chain and IPFS repo first.
    """

    def __init__(
        self,
        workdir: Path,
        chain: str = "ganache",
        rpc_port: int | None = None,
        ipfs_port: int | None = None,
        num_accounts: int = 30,
        *,
        persist: bool = False,
        fresh: bool = False,
        restart_policy: RestartPolicy | None = None,
        state_file: Path | None = None,
        snapshot_interval: float = SNAPSHOT_INTERVAL_S,
    ) -> None:
        if chain not in CHAIN_IDS:
            raise ValueError(f"unknown chain {chain!r}: choose one of {sorted(CHAIN_IDS)}")
        self.workdir = Path(workdir)
        self.chain = chain
        self.persist = persist
        self.fresh = fresh
        self.state_file = state_file
        self.snapshot_interval = snapshot_interval
        self.num_accounts = num_accounts
        previous = {} if fresh else read_json(self.workdir / SERVICES_FILE)
        # A resumed chain must come back where its clients look for it: reuse the previous run's ports.
        self.rpc_port = rpc_port or previous.get("rpc_port") or free_port()
        self.ipfs_port = ipfs_port if ipfs_port is not None else previous.get("ipfs_port") or free_port()
        self.chain_port = int(previous.get("chain_port") or free_port()) if self.persist else None
        self.ipfs_private_port = int(previous.get("ipfs_private_port") or free_port()) if self.persist else None
        self.policy = restart_policy or RestartPolicy()
        self.budgets = {name: RestartBudget(self.policy) for name in SERVICES}
        self.gave_up: dict[str, str] = {}
        self.restarts: dict[str, int] = dict.fromkeys(SERVICES, 0)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.state: DevnetState | None = None
        self.store: AnvilStore | None = None
        self.proxy: ChainProxy | None = None
        self.ipfs_proxy: HoldingProxy | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._workdir_lock: IO[str] | None = None

    @property
    def chain_dir(self) -> Path:
        """Where the chain is kept (with `persist`)."""
        return self.workdir / f"{self.chain}-state"

    @property
    def ipfs_repo(self) -> Path:
        return self.workdir / "ipfs-repo"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self, timeout: float = 60.0) -> DevnetState:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self._claim_workdir()
        leftovers = read_json(self.workdir / SERVICES_FILE)
        try:
            if self.fresh:
                self._stop_leftovers(leftovers, ("chain", "ipfs"))
                log.warning(
                    "devnet: --fresh: deleting the kept chain %s and IPFS repo %s", self.chain_dir, self.ipfs_repo
                )
                shutil.rmtree(self.chain_dir, ignore_errors=True)
                shutil.rmtree(self.ipfs_repo, ignore_errors=True)
            if self.persist:
                assert self.chain_port is not None
                self.store = AnvilStore(self.chain_dir) if self.chain == "anvil" else None
                # Listening (and holding requests) first: clients of a killed devnet reconnect at once.
                self.proxy = ChainProxy(self.rpc_port, self.chain_port, self.store)
                self.proxy.start()
                assert self.ipfs_private_port is not None
                self.ipfs_proxy = HoldingProxy(self.ipfs_port, self.ipfs_private_port, "IPFS service")
                self.ipfs_proxy.start()
            self._stop_leftovers(leftovers, ("chain",))
            self._start_chain(timeout)
            self._stop_leftovers(leftovers, ("ipfs",))
            self._start_ipfs(timeout)
        except BaseException:
            self.stop()
            raise
        from fedchain.chain.accounts import devnet_addresses  # imported late: eth_account takes a second

        accounts = devnet_addresses(self.num_accounts)
        if len(accounts) > NODE_ACCOUNTS:
            fund_accounts(self.chain, self.rpc_port, accounts[NODE_ACCOUNTS:])
        self.state = DevnetState(
            chain=self.chain,
            rpc_url=self.rpc_url,
            chain_id=CHAIN_IDS[self.chain],
            ipfs_api=self.ipfs_api,
            accounts=accounts,
            pids={name: p.pid for name, p in self.processes.items()},
            workdir=str(self.workdir),
        )
        self._record()
        self._stopping.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="devnet-supervisor", daemon=True)
        self._supervisor.start()
        return self.state

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def ipfs_api(self) -> str:
        return f"http://127.0.0.1:{self.ipfs_port}"

    # -- starting each service --

    def _start_chain(self, timeout: float) -> None:
        log_path = self.logs / f"{self.chain}.log"
        if self.proxy is None or self.chain_port is None:  # in memory, on the RPC port itself
            proc = self.processes["chain"] = spawn(
                chain_command(self.chain, require_free_port(self.rpc_port), self.num_accounts), log_path
            )
            wait_rpc(self.rpc_port, proc, timeout, log_path)
            return
        self.proxy.up.clear()
        if self.store is None:  # Ganache: its LevelDB folder is the chain
            db = self.chain_dir / "ganache-db"
            db.mkdir(parents=True, exist_ok=True)
            cmd = chain_command(self.chain, require_free_port(self.chain_port), self.num_accounts, db_path=db)
            proc = self.processes["chain"] = spawn(cmd, log_path)
            wait_rpc(self.chain_port, proc, timeout, log_path)
            self.proxy.up.set()
            return
        with self.store.lock:  # clients' writes wait until the journal is replayed
            snapshot = self.store.snapshot()
            cmd = chain_command(self.chain, require_free_port(self.chain_port), self.num_accounts, load_state=snapshot)
            proc = self.processes["chain"] = spawn(cmd, log_path)
            wait_rpc(self.chain_port, proc, timeout, log_path)
            replayed = replay(self.store, self.chain_port)
            if replayed or snapshot is None:
                take_snapshot(self.store, self.chain_port, settle_s=10.0)
            if snapshot is not None:
                block = int(rpc(self.chain_port, "eth_blockNumber"), 16)
                log.info(
                    "devnet: Anvil resumed from %s and %d journaled writes, at block %d", snapshot.name, replayed, block
                )
            self.proxy.up.set()

    def _start_ipfs(self, timeout: float) -> None:
        ready_file = self.workdir / "ipfs-ready.json"
        ready_file.unlink(missing_ok=True)
        log_path = self.logs / "ipfs.log"
        if self.ipfs_proxy is not None:
            self.ipfs_proxy.up.clear()
        port = self.ipfs_private_port if self.ipfs_private_port is not None else self.ipfs_port
        proc = self.processes["ipfs"] = spawn(
            ipfs_command(self.ipfs_repo, require_free_port(port), ready_file), log_path
        )
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"IPFS service exited with code {proc.returncode}: see {log_path}")
            if time.monotonic() > deadline:
                terminate(proc)
                raise TimeoutError(f"IPFS service not ready after {timeout:.0f}s: see {log_path}")
            time.sleep(0.05)
        if self.ipfs_proxy is not None:
            self.ipfs_proxy.up.set()

    # -- supervision --

    def _supervise(self) -> None:
        last_snapshot = time.monotonic()
        snapshot_every = self.snapshot_interval
        snapshot_block = -1
        while not self._stopping.wait(0.2):
            for name in SERVICES:
                proc = self.processes.get(name)
                if proc is not None and name not in self.gave_up and proc.poll() is not None:
                    self._recover(name, proc)
            if self.store is not None and self.chain_port is not None and "chain" not in self.gave_up:
                if time.monotonic() - last_snapshot < snapshot_every:
                    continue
                try:
                    block = int(rpc(self.chain_port, "eth_blockNumber", timeout=5), 16)
                    if block != snapshot_block:
                        began = time.monotonic()
                        if take_snapshot(self.store, self.chain_port):
                            snapshot_block = block
                            # A big chain takes longer to dump: keep the dumps to about a tenth of the time.
                            snapshot_every = max(self.snapshot_interval, 10 * (time.monotonic() - began))
                except Exception as exc:  # Anvil just died: the next pass restarts it
                    log.debug("devnet: snapshot skipped: %s", exc)
                last_snapshot = time.monotonic()

    def _recover(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        what = f"{name} process (pid {proc.pid}) exited with code {proc.returncode}"
        if name == "chain" and not self.persist:
            self.gave_up[name] = f"{what}; this devnet keeps no chain on disk, so it is not restarted"
            log.error("devnet: %s", self.gave_up[name])
            return
        proxy = self.proxy if name == "chain" else self.ipfs_proxy
        if proxy is not None:
            proxy.up.clear()  # hold clients' requests until the service is back
        delay = self.budgets[name].next_delay(time.monotonic())
        if delay is None:
            self.gave_up[name] = (
                f"{what}; gave up after {self.policy.max_restarts} restarts within {self.policy.window_s:.0f}s "
                f"(see {self.logs})"
            )
            log.error("devnet: %s", self.gave_up[name])
            if proxy is not None:
                proxy.fail_fast()
            return
        attempt = self.budgets[name].recent(time.monotonic())
        log.warning(
            "devnet: %s; restarting it in %.1fs (restart %d of at most %d within %.0fs)",
            what,
            delay,
            attempt,
            self.policy.max_restarts,
            self.policy.window_s,
        )
        if self._stopping.wait(delay):
            return
        try:
            if name == "chain":
                self._start_chain(60.0)
            else:
                self._start_ipfs(60.0)
        except Exception as exc:  # the dead process stays recorded: the next pass tries again, within budget
            log.error("devnet: restarting %s failed: %s", name, exc)
            return
        self.restarts[name] += 1
        log.warning("devnet: %s is back (pid %d) on the same port", name, self.processes[name].pid)
        self._record()

    def _record(self) -> None:
        """Write which processes serve this devnet (a later devnet stops them if this one is killed)."""
        services = {
            "chain": self.chain,
            "rpc_port": self.rpc_port,
            "ipfs_port": self.ipfs_port,
            "chain_port": self.chain_port,
            "ipfs_private_port": self.ipfs_private_port,
            "processes": {
                name: {"pid": p.pid, "cmdline": [str(a) for a in p.args]}  # type: ignore[union-attr]
                for name, p in self.processes.items()
                if p.poll() is None
            },
        }
        atomic_write_json(self.workdir / SERVICES_FILE, services)
        if self.state is not None:
            self.state.pids = {name: p.pid for name, p in self.processes.items()}
            if self.state_file is not None:
                self.state.save(self.state_file)

    def _stop_leftovers(self, services: dict[str, Any], names: tuple[str, ...]) -> None:
        """Stop the chain or IPFS process of a previous devnet on this workdir that was killed before it could (they
        hold its ports and the IPFS repo lock), just before starting our own. An orphaned Anvil is first asked for
        its chain."""
        for name in names:
            entry = services.get("processes", {}).pop(name, None)
            if entry is None:
                continue
            pid = int(entry["pid"])
            if not same_program(cmdline(pid), entry["cmdline"]):
                continue  # gone, or the pid now belongs to another program
            log.warning("devnet: the %s process (pid %d) of a previous devnet is still running: stopping it", name, pid)
            port = services.get("chain_port")
            if name == "chain" and self.store is not None and port:
                try:
                    with self.store.lock:
                        replay(self.store, int(port))  # writes journaled but not forwarded when the devnet died
                        take_snapshot(self.store, int(port), settle_s=10.0)
                except Exception as exc:
                    log.error("devnet: could not save the running Anvil's chain (%s); resuming from disk", exc)
            stop_pid(pid)

    def _claim_workdir(self) -> None:
        """One devnet per folder: a second one would take the first one's children for leftovers and stop them.
        (flock: the kernel releases it when the holder dies, even by kill -9; children do not inherit it.)"""
        if self._workdir_lock is not None:
            return
        handle = open(self.workdir / "devnet.lock", "a+")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(f"another devnet is running on {self.workdir}: stop it first") from None
        self._workdir_lock = handle

    def check_alive(self) -> None:
        """Raise if a service died for good (the supervisor gave up on it)."""
        if self.gave_up:
            raise RuntimeError("; ".join(f"devnet {name}: {why}" for name, why in self.gave_up.items()))

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=120)
        chain = self.processes.get("chain")
        if self.store is not None and self.chain_port is not None and chain is not None and chain.poll() is None:
            try:
                take_snapshot(self.store, self.chain_port, settle_s=5.0)
            except Exception as exc:  # the journal still has every write since the last snapshot
                log.warning("devnet: final Anvil snapshot failed (%s); the journal keeps the writes", exc)
        for name in ("ipfs", "chain"):
            if name in self.processes:
                terminate(self.processes[name])
        self.processes.clear()
        for proxy in (self.proxy, self.ipfs_proxy):
            if proxy is not None:
                proxy.close()
        self.proxy = self.ipfs_proxy = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if (self.workdir / SERVICES_FILE).exists():
            self._record()
        if self._workdir_lock is not None:
            self._workdir_lock.close()  # releases the flock
            self._workdir_lock = None

    def __enter__(self) -> Devnet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
