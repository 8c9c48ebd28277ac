"""BufferedTask gas: submitUpdate (the device's hot path) and the cost of one published version, printed and written
to reports/gas-buffered.json.

Asserted: every submitUpdate that does not close its buffer costs at most 60k (issue 15's target; the ring of
pre-written entry slots means no device pays for a fresh slot), also in a task's first buffers; the closing
submission (which records the buffer and opens the aggregation and the next buffer) at most 120k.
"""

import json
from collections import defaultdict
from pathlib import Path

import pytest
from brownie import accounts as brownie_accounts
from brownie import chain as brownie_chain
from buffered_helpers import (
    aggregation,
    buffered_container,
    commit,
    deploy_buffered,
    digest,
    make_config,
    make_result,
    reveal,
)

SUBMIT_LIMIT = 60_000
CLOSING_SUBMIT_LIMIT = 120_000
REPORT_PATH = Path(__file__).resolve().parents[2] / "reports" / "gas-buffered.json"


@pytest.fixture(scope="module")
def gas_log():
    log: dict[str, list[int]] = defaultdict(list)
    yield log
    stats = {
        name: {"avg": round(sum(v) / len(v)), "min": min(v), "max": max(v), "calls": len(v)}
        for name, v in sorted(log.items())
    }
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(json.dumps(stats, indent=2) + "\n")
    print("\nBufferedTask gas (reports/gas-buffered.json)")
    for name, s in stats.items():
        print(f"{name:<44}{s['avg']:>10}{s['min']:>10}{s['max']:>10}{s['calls']:>6}")


def fresh_devices(funder, count):
    devices = [brownie_accounts.add() for _ in range(count)]
    for device in devices:
        funder.transfer(device, "1 ether")
    return devices


@pytest.mark.parametrize("k", [3, 10])
def test_submit_and_version_gas(accounts, gas_log, k):
    """Six versions with K = k (n = k = 1): devices submit from the current version or one behind, so that a buffer
    fills while the previous one is pending. Records each submitUpdate by kind and each version's total."""
    admin, agg = accounts[0], accounts[1]
    devices = fresh_devices(admin, 2 * k)
    task = deploy_buffered(admin, [agg], devices, bufferSize=k, numVersions=10)
    halves = [devices[:k], devices[k:]]
    for version in range(6):
        buffer = version + 1
        group = halves[version % 2]
        version_gas = 0
        for i, device in enumerate(group):
            base = max(0, int(task.currentVersion()) - (i % 2))
            tx = task.submitUpdate(base, digest(f"k{k}-b{buffer}-{i}"), 100 + i, {"from": device})
            version_gas += tx.gas_used
            if "BufferFull" not in tx.events:
                assert tx.gas_used <= SUBMIT_LIMIT, f"submitUpdate used {tx.gas_used}"
                # buffers 1 and 2 write each ring slot for the first time (over the constructor's placeholders)
                kind = "submitUpdate" if buffer > 2 else "submitUpdate (buffers 1-2)"
                gas_log[f"{kind} K={k}"].append(tx.gas_used)
            else:
                assert tx.gas_used <= CLOSING_SUBMIT_LIMIT, f"closing submitUpdate used {tx.gas_used}"
                gas_log[f"submitUpdate closing K={k}"].append(tx.gas_used)
        assert aggregation(task)["buffer"] == buffer
        result = make_result(task, buffer)
        commit_tx = commit(task, agg, result)
        reveal_tx = reveal(task, agg, result)
        assert "VersionPublished" in reveal_tx.events
        gas_log["commitResult (n=k=1)"].append(commit_tx.gas_used)
        gas_log["revealResult (publishes, n=k=1)"].append(reveal_tx.gas_used)
        version_gas += commit_tx.gas_used + reveal_tx.gas_used
        gas_log[f"version total K={k} (K submits + commit + reveal)"].append(version_gas)


def test_commit_gas(accounts, gas_log):
    admin, aggs = accounts[0], [accounts[1], accounts[6], accounts[7]]
    devices = [accounts[2], accounts[3], accounts[4]]
    task = deploy_buffered(admin, aggs, devices, aggregatorThreshold=2)
    for buffer in (1, 2):
        for i, device in enumerate(devices):
            task.submitUpdate(buffer - 1, digest(f"c{buffer}-{i}"), 100, {"from": device})
        result = make_result(task, buffer)
        for account in aggs:
            gas_log["commitResult (n=3)"].append(commit(task, account, result).gas_used)
        gas_log["revealResult (not final, n=3)"].append(reveal(task, aggs[0], result).gas_used)
        gas_log["revealResult (final, k=2)"].append(reveal(task, aggs[1], result).gas_used)


@pytest.mark.parametrize("k", [3, 10, 64])
def test_deployment_gas(accounts, gas_log, k):
    """The deployment pays for the ring's 4 K slots once."""
    admin = accounts[0]
    task = buffered_container().deploy(make_config(bufferSize=k), admin, {"from": admin})
    gas_log[f"deploy K={k}"].append(task.tx.gas_used)


def test_close_buffer_gas(accounts, gas_log):
    """An early close (bufferDuration passed): records the buffer, opens its aggregation and the next buffer."""
    admin, agg = accounts[0], accounts[1]
    devices = [accounts[2], accounts[3]]
    task = deploy_buffered(admin, [agg], devices, bufferDuration=60, minBufferSize=1)
    for i, device in enumerate(devices):
        task.submitUpdate(0, digest(f"e{i}"), 100, {"from": device})
    brownie_chain.sleep(61)
    tx = task.closeBuffer(1, {"from": admin})
    assert "AggregationOpened" in tx.events
    gas_log["closeBuffer (early close)"].append(tx.gas_used)
