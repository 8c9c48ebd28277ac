"""Gas: every state-changing function measured, printed and written to reports/gas-contract.json.

The limits asserted here are the ones the design promises: submitUpdate stays cheap (two warm non-zero slots), and
commitAggregate costs the same whatever the number of devices and updates in the round (no per-device loop).
"""

import json
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import (
    AGGREGATOR_ROLE,
    GAS_STATS,
    ROUND_DURATION,
    commit_round,
    digest,
    make_config,
    round_state,
    submit_round,
)

SUBMIT_AVG_LIMIT = 60_000
COMMIT_SPREAD_LIMIT = 300  # gas; calldata zero bytes in the inputs hash make the only difference
REPORT_PATH = Path(__file__).resolve().parents[2] / "reports" / "gas-contract.json"


@pytest.fixture(scope="module")
def gas_log():
    """Collects gas_used per function over the module; prints a table and writes the JSON report at the end."""
    log: dict[str, list[int]] = defaultdict(list)
    yield log
    if not log:
        return
    stats = {
        name: {"avg": round(sum(v) / len(v)), "min": min(v), "max": max(v), "calls": len(v)}
        for name, v in sorted(log.items())
    }
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(json.dumps(stats, indent=2) + "\n")
    # printed by conftest's pytest_terminal_summary, after the test run (output here would be captured)
    GAS_STATS.update(stats)


def record(log, name, tx):
    assert tx.status == 1, f"{name} reverted"
    log[name].append(tx.gas_used)
    return tx


def deploy_with_devices(federated_task, admin, aggregator, device_accounts, **overrides):
    contract = federated_task.deploy(make_config(**overrides), admin, {"from": admin})
    contract.grantRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    contract.approveDevices(device_accounts, {"from": admin})
    contract.start({"from": admin})
    return contract


# ---------------------------------------------------------------- every function


def test_gas_setup_functions(federated_task, admin, aggregator, devices, accounts, outsider, gas_log):
    contract = federated_task.deploy(make_config(), admin, {"from": admin})
    record(gas_log, "constructor", contract.tx)
    record(gas_log, "grantRole", contract.grantRole(AGGREGATOR_ROLE, aggregator, {"from": admin}))
    record(gas_log, "grantRole", contract.grantRole(AGGREGATOR_ROLE, accounts[8], {"from": admin}))
    record(gas_log, "revokeRole", contract.revokeRole(AGGREGATOR_ROLE, accounts[8], {"from": admin}))
    contract.grantRole(AGGREGATOR_ROLE, accounts[8], {"from": admin})
    record(gas_log, "renounceRole", contract.renounceRole(AGGREGATOR_ROLE, accounts[8], {"from": accounts[8]}))
    record(gas_log, "requestJoin", contract.requestJoin({"from": outsider}))
    one = record(gas_log, "approveDevices", contract.approveDevices([devices[0]], {"from": admin}))
    three = record(gas_log, "approveDevices", contract.approveDevices(devices[1:4], {"from": admin}))
    per_device = (three.gas_used - one.gas_used) / 2
    print(f"approveDevices: 1 device {one.gas_used}, 3 devices {three.gas_used}, ~{per_device:.0f} per extra device")
    # an all-duplicates batch only reads
    record(gas_log, "approveDevices", contract.approveDevices(devices[:2], {"from": admin}))
    record(gas_log, "removeDevice", contract.removeDevice(devices[3], {"from": admin}))
    record(gas_log, "removeDevice", contract.removeDevice(devices[2], {"from": devices[2]}))
    record(gas_log, "start", contract.start({"from": admin}))
    record(gas_log, "cancel", contract.cancel({"from": admin}))


def test_gas_round_functions(federated_task, admin, aggregator, accounts, chain, gas_log):
    """Three rounds of three devices: one closed by maxUpdates, one by the deadline after an extension, the last."""
    device_accounts = list(accounts[2:5])
    contract = deploy_with_devices(federated_task, admin, aggregator, device_accounts)

    _, txs = submit_round(contract, device_accounts, 1)
    for tx in txs:
        record(gas_log, "submitUpdate", tx)
    record(gas_log, "commitAggregate", commit_round(contract, aggregator, 1))

    record(gas_log, "submitUpdate", contract.submitUpdate(2, digest("a"), 10, {"from": device_accounts[0]}))
    chain.sleep(ROUND_DURATION)
    record(gas_log, "closeRound", contract.closeRound(2, {"from": admin}))  # extends
    record(gas_log, "submitUpdate", contract.submitUpdate(2, digest("b"), 10, {"from": device_accounts[1]}))
    chain.sleep(ROUND_DURATION)
    record(gas_log, "closeRound", contract.closeRound(2, {"from": admin}))  # to aggregation
    record(gas_log, "commitAggregate", commit_round(contract, aggregator, 2))

    _, txs = submit_round(contract, device_accounts, 3)
    for tx in txs:
        record(gas_log, "submitUpdate", tx)
    final = record(gas_log, "commitAggregate", commit_round(contract, aggregator, 3))
    assert "TaskFinished" in final.events


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("n_devices", [3, 8])
def test_submit_average_over_a_round(federated_task, admin, aggregator, accounts, gas_log, n_devices):
    device_accounts = list(accounts[2 : 2 + n_devices])
    contract = deploy_with_devices(
        federated_task, admin, aggregator, device_accounts, minUpdates=n_devices, maxUpdates=n_devices
    )
    _, txs = submit_round(contract, device_accounts, 1)
    gas = [tx.gas_used for tx in txs]
    for tx in txs:
        record(gas_log, "submitUpdate", tx)
    average = sum(gas) / len(gas)
    print(f"submitUpdate over a round of {n_devices}: {gas} (avg {average:.0f})")
    assert "RoundReadyForAggregation" in txs[-1].events
    assert average <= SUBMIT_AVG_LIMIT
    # every submission but the closing one costs the same: nothing grows with the round's size
    assert max(gas[:-1]) - min(gas[:-1]) <= 200
    assert max(gas) <= SUBMIT_AVG_LIMIT + 10_000


def test_commit_gas_does_not_grow_with_devices(federated_task, admin, aggregator, accounts, gas_log):
    device_accounts = list(accounts[2:10])
    assert len(device_accounts) == 8
    commit_gas = {}
    for max_updates in (2, 8):
        contract = deploy_with_devices(
            federated_task, admin, aggregator, device_accounts, minUpdates=2, maxUpdates=max_updates
        )
        assert contract.deviceCount() == 8
        submit_round(contract, device_accounts[:max_updates], 1)
        assert round_state(contract)["updates"] == max_updates
        tx = record(gas_log, "commitAggregate", commit_round(contract, aggregator, 1))
        commit_gas[max_updates] = tx.gas_used
    print(f"commitAggregate: 2 updates {commit_gas[2]}, 8 updates {commit_gas[8]}")
    assert abs(commit_gas[8] - commit_gas[2]) <= COMMIT_SPREAD_LIMIT
