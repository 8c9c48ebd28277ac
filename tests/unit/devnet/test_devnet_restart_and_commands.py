"""The devnet's pure parts: restart policy and backoff, command lines, the Anvil write journal and its snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedchain.app.devnet import chain_command, ipfs_command
from fedchain.app.devnet.anvil import AnvilStore, is_write, raw_tx_hash, writes_of
from fedchain.app.devnet.restart import RestartBudget, RestartPolicy


def test_backoff_doubles_from_the_base_delay_up_to_the_cap() -> None:
    policy = RestartPolicy(base_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        policy.delay(0)
    with pytest.raises(ValueError):
        RestartPolicy(window_s=0)


def test_budget_gives_up_after_max_restarts_within_the_window_and_recovers_after_it() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=3, window_s=60.0, base_delay_s=1.0, max_delay_s=10.0))
    assert [budget.next_delay(t) for t in (0.0, 1.0, 2.0)] == [1.0, 2.0, 4.0]
    assert budget.next_delay(3.0) is None  # a fourth crash within 60 s: broken, not unlucky
    assert budget.recent(3.0) == 3
    # Once the first restart is older than the window, one more is allowed (and backs off from the count left).
    assert budget.next_delay(60.5) == 4.0
    assert budget.recent(200.0) == 0
    assert budget.next_delay(200.0) == 1.0


def test_zero_restarts_means_never_restart() -> None:
    assert RestartBudget(RestartPolicy(max_restarts=0)).next_delay(0.0) is None


def test_anvil_command_loads_a_snapshot_only_when_given_one(tmp_path: Path) -> None:
    plain = chain_command("anvil", 8545, 7)
    assert "--port=8545" in plain and "--accounts=7" in plain and "--chain-id=31337" in plain
    # A large devnet's accounts beyond the first ten are funded after start (fund_accounts), not derived by Anvil.
    assert "--accounts=10" in chain_command("anvil", 8545, 1000)
    assert "--wallet.totalAccounts=10" in chain_command("ganache", 8545, 1000)
    assert not any(a.startswith(("--load-state", "--state", "--dump-state")) for a in plain)
    snap = tmp_path / "state-3.json"
    assert chain_command("anvil", 8545, 7, load_state=snap)[-1] == f"--load-state={snap}"
    with pytest.raises(ValueError, match="load_state"):
        chain_command("anvil", 8545, 7, db_path=tmp_path)


def test_ganache_command_keeps_its_chain_in_the_given_folder(tmp_path: Path) -> None:
    plain = chain_command("ganache", 8545, 7)
    assert "--server.port=8545" in plain and "--wallet.totalAccounts=7" in plain
    assert not any(a.startswith("--database") for a in plain)
    assert chain_command("ganache", 8545, 7, db_path=tmp_path / "db")[-1] == f"--database.dbPath={tmp_path / 'db'}"
    with pytest.raises(ValueError, match="db_path"):
        chain_command("ganache", 8545, 7, load_state=tmp_path / "s.json")
    with pytest.raises(ValueError, match="unknown chain"):
        chain_command("hardhat", 8545, 7)


def test_ipfs_command_serves_the_repo_on_the_given_port(tmp_path: Path) -> None:
    cmd = ipfs_command(tmp_path / "repo", 5009, tmp_path / "ready.json")
    assert cmd[1:3] == ["-m", "fedchain.storage.node"]
    assert cmd[cmd.index("--port") + 1] == "5009"
    assert cmd[cmd.index("--repo") + 1] == str(tmp_path / "repo")


def test_only_state_changing_requests_are_journaled() -> None:
    assert is_write({"method": "eth_sendRawTransaction", "params": ["0x01"]})
    assert is_write({"method": "evm_increaseTime", "params": [60]})
    assert is_write({"method": "anvil_setBalance", "params": []})
    for read in ("eth_call", "eth_getLogs", "eth_blockNumber", "anvil_dumpState", "evm_snapshot"):
        assert not is_write({"method": read})
    batch = json.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_sendRawTransaction", "params": ["0xab"]},
        ]
    ).encode()
    assert writes_of(batch) == [{"method": "eth_sendRawTransaction", "params": ["0xab"]}]
    assert writes_of(b"not json") == []


def test_raw_tx_hash_is_keccak_of_the_bytes() -> None:
    # keccak256 of the empty string, a well-known constant
    assert raw_tx_hash("0x") == "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def test_store_journal_survives_a_torn_line_and_rotates_with_each_snapshot(tmp_path: Path) -> None:
    store = AnvilStore(tmp_path)
    assert store.generation == 0 and store.snapshot() is None
    store.append([{"method": "eth_sendRawTransaction", "params": ["0x01"]}])
    store.append([{"method": "evm_mine", "params": []}])
    with open(store.journal_path(0), "ab") as f:
        f.write(b'{"method": "eth_sendRaw')  # a crash in the middle of an append
    assert [e["method"] for e in store.journal()] == ["eth_sendRawTransaction", "evm_mine"]

    path = store.save_snapshot(b'{"block": 1}')
    assert path.name == "state-1.json" and store.snapshot() == path and store.journal() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal-1.jsonl", "state-1.json"]
    store.append([{"method": "eth_sendRawTransaction", "params": ["0x02"]}])
    store.close()

    # A new devnet on the same folder (after kill -9) finds the newest snapshot and the writes after it.
    again = AnvilStore(tmp_path)
    assert again.generation == 1 and again.snapshot() == path
    assert again.journal() == [{"method": "eth_sendRawTransaction", "params": ["0x02"]}]
    again.close()


def test_a_snapshot_interrupted_before_its_rename_leaves_the_previous_pair(tmp_path: Path) -> None:
    store = AnvilStore(tmp_path)
    store.save_snapshot(b"{}")
    store.append([{"method": "evm_mine", "params": []}])
    store.close()
    (tmp_path / "state-2.tmp").write_bytes(b'{"half": ')  # killed while writing the next snapshot
    again = AnvilStore(tmp_path)
    assert again.generation == 1 and again.journal() == [{"method": "evm_mine", "params": []}]
    again.close()


def test_a_leftover_is_recognised_by_its_arguments_even_behind_an_npm_shim() -> None:
    from fedchain.app.devnet.processes import same_program

    recorded = ["/repo/node_modules/.bin/ganache", "--server.port=8545", "--database.dbPath=/d"]
    assert same_program(["node", *recorded], recorded)  # what /proc shows for a `#!/usr/bin/env node` script
    assert same_program(list(recorded), recorded)
    assert not same_program(
        ["node", "/repo/node_modules/.bin/ganache", "--server.port=9999", "--database.dbPath=/d"], recorded
    )
    assert not same_program(["python", "other.py", "--server.port=8545", "--database.dbPath=/d"], recorded)
    assert not same_program(None, recorded)


def test_chain_commands_use_the_devnet_mnemonic_by_default() -> None:
    from fedchain.chain.accounts import DEVNET_MNEMONIC

    assert f"--mnemonic={DEVNET_MNEMONIC}" in chain_command("anvil", 8545, 2)
    assert f"--wallet.mnemonic={DEVNET_MNEMONIC}" in chain_command("ganache", 8545, 2)


def test_the_devnet_module_loads_without_web3_so_a_restarted_devnet_listens_at_once() -> None:
    """A killed devnet's clients retry refused calls for a few seconds only: the restarted one's proxy must bind
    before eth_account/web3 (about 2 s to import on a busy machine) are loaded."""
    import subprocess
    import sys

    heavy = "('web3', 'eth_account', 'eth_utils')"
    code = f"import sys, fedchain.app.devnet.network; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
