"""The command lines of the devnet's services (Ganache or Anvil, the embedded IPFS service) and the funding of
accounts beyond the ones the chain derives itself."""

from __future__ import annotations

import http.client
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from fedchain.app.devnet.state import CHAIN_IDS, devnet_mnemonic

REPO_ROOT = Path(__file__).resolve().parents[4]


def node_bin(name: str) -> str:
    """An npm-installed executable: the repo's node_modules/.bin first, then PATH."""
    local = REPO_ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in {local.parent} or on PATH: run `make setup` (npm ci)")
    return found


# The chain derives at most this many accounts from the mnemonic itself (Anvil takes ~8 ms per account, 8 s for the
# 1,000 devices of a large demo); the others are funded afterwards with one batched balance call (`fund_accounts`).
NODE_ACCOUNTS = 10
# What Anvil and Ganache give each of their own accounts: 10,000 ETH.
ACCOUNT_BALANCE_WEI = 10_000 * 10**18
SET_BALANCE = {"anvil": "anvil_setBalance", "ganache": "evm_setAccountBalance"}


def fund_accounts(kind: str, port: int, addresses: list[str], wei: int = ACCOUNT_BALANCE_WEI, chunk: int = 500) -> int:
    """Give every account in `addresses` without ether `wei`, in JSON-RPC batches; returns how many were funded.
    Idempotent: a resumed chain's accounts keep what they have."""
    funded = 0
    for start in range(0, len(addresses), chunk):
        part = addresses[start : start + chunk]
        balances = _rpc_batch(port, [("eth_getBalance", [a, "latest"]) for a in part])
        empty = [a for a, balance in zip(part, balances, strict=True) if int(str(balance), 16) == 0]
        if empty:
            _rpc_batch(port, [(SET_BALANCE[kind], [a, hex(wei)]) for a in empty])
            funded += len(empty)
    return funded


def _rpc_batch(port: int, calls: list[tuple[str, list[Any]]], timeout: float = 60.0) -> list[Any]:
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/", body, {"Content-Type": "application/json"})
        replies = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    if not isinstance(replies, list):
        raise RuntimeError(f"the chain refused a batch of {calls[0][0]}: {replies}")
    by_id = {r.get("id"): r for r in replies}
    errors = [r["error"] for r in replies if "error" in r]
    if errors:
        raise RuntimeError(f"{calls[0][0]}: {errors[0]}")
    return [by_id[i]["result"] for i in range(len(calls))]


def chain_command(
    kind: str,
    port: int,
    num_accounts: int,
    mnemonic: str | None = None,
    *,
    db_path: Path | None = None,
    load_state: Path | None = None,
) -> list[str]:
    """The command line that starts a local chain on 127.0.0.1 with the first `num_accounts` (at most NODE_ACCOUNTS)
    funded accounts; `Devnet.start` funds the rest.

    `db_path` (Ganache): keep the chain in this LevelDB folder, written block by block, so a restarted Ganache
    resumes it. `load_state` (Anvil): start from this `anvil_dumpState` snapshot (see anvil.py).
    """
    mnemonic = mnemonic or devnet_mnemonic()
    if kind == "ganache":
        if load_state is not None:
            raise ValueError("Ganache keeps its chain with db_path, not load_state")
        return [
            node_bin("ganache"),
            "--server.host=127.0.0.1",
            f"--server.port={port}",
            f"--wallet.mnemonic={mnemonic}",
            f"--wallet.totalAccounts={min(num_accounts, NODE_ACCOUNTS)}",
            f"--chain.chainId={CHAIN_IDS['ganache']}",
            "--chain.hardfork=shanghai",
            "--miner.blockGasLimit=30000000",
            "--logging.quiet",
            *([f"--database.dbPath={db_path}"] if db_path is not None else []),
        ]
    if kind == "anvil":
        if db_path is not None:
            raise ValueError("Anvil keeps its chain with load_state snapshots, not db_path")
        return [
            node_bin("anvil"),
            "--host=127.0.0.1",
            f"--port={port}",
            f"--mnemonic={mnemonic}",
            f"--accounts={min(num_accounts, NODE_ACCOUNTS)}",
            f"--chain-id={CHAIN_IDS['anvil']}",
            "--gas-limit=30000000",
            "--silent",
            *([f"--load-state={load_state}"] if load_state is not None else []),
        ]
    raise ValueError(f"unknown chain {kind!r}: choose ganache or anvil")


def ipfs_command(repo: Path, port: int, ready_file: Path) -> list[str]:
    """The command line of the IPFS service (embedded Kubo with its RPC API on 127.0.0.1:port)."""
    return [
        sys.executable,
        "-m",
        "fedchain.storage.node",
        *("--repo", str(repo), "--port", str(port), "--ready-file", str(ready_file)),
    ]
