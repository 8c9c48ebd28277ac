"""Gas: every state-changing function measured, printed and written to reports/gas-contract.json.

The limits asserted here are the ones the design promises: submitUpdate stays cheap (two non-zero slots, nothing
else read; <= 35k but for the round's closing submission), a relayed batch costs the same whatever its size (<= 5k
per device update at 100 entries), submitResult (k = n = 1) costs less than commitResult + revealResult, and
the aggregation phase (commitResult, revealResult, closeAggregationWindow) costs the same whatever the number of
devices and updates in the round (no per-device loop). revealResult grows only with the aggregators that revealed
before the finalising reveal (at most MAX_AGGREGATORS): measured here for n = 8 and n = 32. The privacy functions
(key directory, secure-aggregation messages, DP ledger) are measured over two rounds of a task that uses them.
"""

import json
from collections import defaultdict
from pathlib import Path

import pytest
from brownie import accounts as brownie_accounts
from brownie import chain as brownie_chain
from conftest import (
    AGGREGATION_DURATION,
    AGGREGATOR_ROLE,
    GAS_STATS,
    MAX_AGGREGATORS,
    ROUND_DURATION,
    commit,
    digest,
    make_config,
    make_result,
    reveal,
    round_state,
    submit_round,
)
from eth_account import Account
from eth_utils import keccak

from fedchain.chain.batch import SignedUpdate, make_batch
from fedchain.chain.signing import sign_update
from fedchain.chain.task import GAS_LIMITS, RELAYER_ROLE

SUBMIT_AVG_LIMIT = 60_000
# A device's own submitUpdate (every one but the round's closing submission): issue 12's target.
SUBMIT_LIMIT = 35_000
# A relayed batch of 100 signed updates: gas per device update, amortised over the batch transaction.
BATCH_PER_ENTRY_LIMIT = 5_000
COMMIT_SPREAD_LIMIT = 300  # gas; calldata zero bytes in the inputs hash make the only difference
REPORT_PATH = Path(__file__).resolve().parents[2] / "reports" / "gas-contract.json"
# Under secure aggregation masked updates are accepted once the setup window (first half of the round) is over.
SETUP_WINDOW = ROUND_DURATION - ROUND_DURATION // 2


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


def commit_and_reveal(log, contract, aggregator, round_index):
    """Single aggregator (n = k = 1): the commit opens the reveal window, the reveal finalises."""
    result = make_result(contract, round_index)
    record(log, "commitResult (opens reveal)", commit(contract, aggregator, result))
    return record(log, "revealResult (final)", reveal(contract, aggregator, result))


def test_gas_round_functions(federated_task, admin, aggregator, accounts, chain, gas_log):
    """Three rounds of three devices: one closed by maxUpdates, one by the deadline after an extension, the last."""
    device_accounts = list(accounts[2:5])
    contract = deploy_with_devices(federated_task, admin, aggregator, device_accounts)

    _, txs = submit_round(contract, device_accounts, 1)
    for tx in txs:
        record(gas_log, "submitUpdate", tx)
    commit_and_reveal(gas_log, contract, aggregator, 1)

    record(gas_log, "submitUpdate", contract.submitUpdate(2, digest("a"), 10, {"from": device_accounts[0]}))
    chain.sleep(ROUND_DURATION)
    record(gas_log, "closeRound", contract.closeRound(2, {"from": admin}))  # extends
    record(gas_log, "submitUpdate", contract.submitUpdate(2, digest("b"), 10, {"from": device_accounts[1]}))
    chain.sleep(ROUND_DURATION)
    record(gas_log, "closeRound", contract.closeRound(2, {"from": admin}))  # to aggregation
    commit_and_reveal(gas_log, contract, aggregator, 2)

    _, txs = submit_round(contract, device_accounts, 3)
    for tx in txs:
        record(gas_log, "submitUpdate", tx)
    final = commit_and_reveal(gas_log, contract, aggregator, 3)
    assert "TaskFinished" in final.events


def test_gas_three_aggregators(federated_task, admin, accounts, chain, gas_log):
    """n = 3, k = 2 over three rounds: a commit window closed by time, a failed round, reveals before finalisation."""
    aggregators = [accounts[1], accounts[6], accounts[7]]
    device_accounts = list(accounts[2:5])
    contract = federated_task.deploy(make_config(aggregatorThreshold=2), admin, {"from": admin})
    for a in aggregators:
        contract.grantRole(AGGREGATOR_ROLE, a, {"from": admin})
    contract.approveDevices(device_accounts, {"from": admin})
    contract.start({"from": admin})

    # round 1: two commit, the window closes by time, both reveal (the second finalises)
    submit_round(contract, device_accounts, 1)
    results = [make_result(contract, 1, salt=digest(f"s{i}")) for i in range(3)]
    record(gas_log, "commitResult", commit(contract, aggregators[0], results[0]))
    record(gas_log, "commitResult", commit(contract, aggregators[1], results[1]))
    chain.sleep(AGGREGATION_DURATION)
    tx = record(gas_log, "closeAggregationWindow (opens reveal)", contract.closeAggregationWindow(1, {"from": admin}))
    assert "RevealOpened" in tx.events
    record(gas_log, "revealResult (not final)", reveal(contract, aggregators[0], results[0]))
    record(gas_log, "revealResult (final)", reveal(contract, aggregators[1], results[1]))

    # round 2: one commitment only, the round fails
    submit_round(contract, device_accounts, 2)
    record(gas_log, "commitResult", commit(contract, aggregators[0], make_result(contract, 2)))
    chain.sleep(AGGREGATION_DURATION)
    tx = record(gas_log, "closeAggregationWindow (fails round)", contract.closeAggregationWindow(2, {"from": admin}))
    assert "AggregationFailed" in tx.events

    # round 3: all three commit (the last opens the reveal window); a liar reveals first, a late honest reveal
    submit_round(contract, device_accounts, 3)
    results = [make_result(contract, 3, salt=digest(f"s{i}")) for i in range(3)]
    results[0] = results[0].but(model=digest("poisoned"))
    record(gas_log, "commitResult", commit(contract, aggregators[0], results[0]))
    record(gas_log, "commitResult", commit(contract, aggregators[1], results[1]))
    record(gas_log, "commitResult (opens reveal)", commit(contract, aggregators[2], results[2]))
    record(gas_log, "revealResult (not final)", reveal(contract, aggregators[0], results[0]))
    record(gas_log, "revealResult (not final)", reveal(contract, aggregators[1], results[1]))
    tx = record(gas_log, "revealResult (final)", reveal(contract, aggregators[2], results[2]))
    assert "AggregatorFault" in tx.events


def test_gas_privacy_functions(federated_task, admin, aggregator, accounts, chain, gas_log):
    """Secure aggregation with a DP ledger, three devices, two rounds (the second is the steady state: its first
    setup still pays for the round's fresh counters), then a failed round charged by the ledger."""
    device_accounts = list(accounts[2:5])
    contract = federated_task.deploy(
        make_config(numRounds=5, secureAggregation=True, epsilonBudgetMicro=50_000_000, firstRoundEpsilonMicro=10**6),
        admin,
        {"from": admin},
    )
    contract.grantRole(AGGREGATOR_ROLE, aggregator, {"from": admin})
    contract.approveDevices(device_accounts, {"from": admin})
    for d in device_accounts:
        record(gas_log, "setEncryptionKey", contract.setEncryptionKey(digest(f"key-{d.address}"), {"from": d}))
    record(gas_log, "setEncryptionKey", contract.setEncryptionKey(digest("agg-key"), {"from": aggregator}))
    contract.start({"from": admin})
    # a rotation (non-zero to non-zero) before the device's setup
    record(gas_log, "setEncryptionKey", contract.setEncryptionKey(digest("rotated"), {"from": device_accounts[0]}))

    for r, epsilon in ((1, 10**6), (2, 1_400_000)):
        setups = [
            record(gas_log, "submitSetup", contract.submitSetup(r, digest(f"s{r}{i}"), {"from": d}))
            for i, d in enumerate(device_accounts)
        ]
        chain.sleep(SETUP_WINDOW)  # masked updates only after the setup window
        masked = [
            record(
                gas_log, "submitMaskedUpdate", contract.submitMaskedUpdate(r, digest(f"m{r}{i}"), 100, 3, {"from": d})
            )
            for i, d in enumerate(device_accounts)
        ]
        assert "SetupSetFrozen" in masked[0].events and "RoundReadyForAggregation" in masked[-1].events
        unmasks = [
            record(gas_log, "submitUnmaskShares", contract.submitUnmaskShares(r, digest(f"u{r}{i}"), {"from": d}))
            for i, d in enumerate(device_accounts)
        ]
        print(
            f"round {r}: submitSetup {[t.gas_used for t in setups]}, "
            f"submitMaskedUpdate {[t.gas_used for t in masked]}, "
            f"submitUnmaskShares {[t.gas_used for t in unmasks]}"
        )
        result = make_result(contract, r, epsilon=epsilon)
        record(gas_log, "commitResult (opens reveal)", commit(contract, aggregator, result))
        tx = record(gas_log, "revealResult (final, DP ledger)", reveal(contract, aggregator, result))
        assert "EpsilonSpent" in tx.events

    for i, d in enumerate(device_accounts):
        contract.submitSetup(3, digest(f"s3{i}"), {"from": d})
    chain.sleep(SETUP_WINDOW)
    for i, d in enumerate(device_accounts):
        contract.submitMaskedUpdate(3, digest(f"m3{i}"), 100, 3, {"from": d})
    chain.sleep(AGGREGATION_DURATION)
    tx = record(
        gas_log,
        "closeAggregationWindow (fails round, DP ledger)",
        contract.closeAggregationWindow(3, {"from": admin}),
    )
    assert "EpsilonSpent" in tx.events and "RoundOpened" in tx.events

    # round 4: one setup, one masked update, the deadline passes short of minUpdates: the secure round fails
    contract.submitSetup(4, digest("s40"), {"from": device_accounts[0]})
    chain.sleep(SETUP_WINDOW)
    contract.submitMaskedUpdate(4, digest("m40"), 100, 1, {"from": device_accounts[0]})
    chain.sleep(ROUND_DURATION)
    tx = record(gas_log, "closeRound (fails secure round, DP ledger)", contract.closeRound(4, {"from": admin}))
    assert "AggregationFailed" in tx.events and "RoundOpened" in tx.events


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
    assert max(gas[:-1]) <= SUBMIT_LIMIT, gas
    # every submission but the closing one costs the same: nothing grows with the round's size
    assert max(gas[:-1]) - min(gas[:-1]) <= 200
    assert max(gas) <= SUBMIT_AVG_LIMIT + 10_000


def test_aggregation_gas_does_not_grow_with_devices(federated_task, admin, aggregator, accounts, gas_log):
    """commitResult + revealResult cost the same with 2 and with 8 updates in the round (8 approved devices)."""
    device_accounts = list(accounts[2:10])
    assert len(device_accounts) == 8
    gas = {}
    for max_updates in (2, 8):
        contract = deploy_with_devices(
            federated_task, admin, aggregator, device_accounts, minUpdates=2, maxUpdates=max_updates
        )
        assert contract.deviceCount() == 8
        submit_round(contract, device_accounts[:max_updates], 1)
        assert round_state(contract)["updates"] == max_updates
        result = make_result(contract, 1)
        committed = record(gas_log, "commitResult (opens reveal)", commit(contract, aggregator, result))
        revealed = record(gas_log, "revealResult (final)", reveal(contract, aggregator, result))
        gas[max_updates] = (committed.gas_used, revealed.gas_used)
    print(f"commitResult, revealResult: 2 updates {gas[2]}, 8 updates {gas[8]}")
    assert abs(gas[8][0] - gas[2][0]) <= COMMIT_SPREAD_LIMIT
    assert abs(gas[8][1] - gas[2][1]) <= COMMIT_SPREAD_LIMIT


def _funded_accounts(count, funder):
    """Fresh local accounts (brownie's devnet has 10), each funded for a few transactions."""
    fresh = [brownie_accounts.add() for _ in range(count)]
    for account in fresh:
        funder.transfer(account, "1 ether")
    return fresh


@pytest.mark.parametrize("n_aggregators", [8, MAX_AGGREGATORS])
def test_finalising_reveal_worst_case(federated_task, admin, accounts, gas_log, n_aggregators):
    """The finalising reveal's worst case for n aggregators and the smallest k the contract allows (n / 2 + 1): the
    n - k dissenting reveals come first, so the finaliser checks n - 1 earlier reveals and records n - k faults.
    Sets the bound behind GAS_LIMITS."""
    aggregators = _funded_accounts(n_aggregators, admin)
    device_accounts = list(accounts[2:5])
    k = n_aggregators // 2 + 1
    contract = federated_task.deploy(make_config(aggregatorThreshold=k), admin, {"from": admin})
    for a in aggregators:
        contract.grantRole(AGGREGATOR_ROLE, a, {"from": admin})
    contract.approveDevices(device_accounts, {"from": admin})
    contract.start({"from": admin})
    # two rounds: the first warms the reused storage (the steady state), the second is measured
    finals = []
    for r in (1, 2):
        submit_round(contract, device_accounts, r)
        results = [make_result(contract, r, salt=digest(f"s{r}-{i}")) for i in range(n_aggregators)]
        results = [res.but(model=digest(f"liar-{r}-{i}")) for i, res in enumerate(results[:-k])] + results[-k:]
        for a, res in zip(aggregators, results, strict=True):
            commit(contract, a, res)
        txs = [reveal(contract, a, res) for a, res in zip(aggregators, results, strict=True)]
        finals.append(txs[-1])
        assert len(txs[-1].events["AggregatorFault"]) == n_aggregators - k
    first, final = finals
    name = f"revealResult (final, n={n_aggregators} worst)"
    record(gas_log, name, final)
    print(f"{name}: {final.gas_used} (first round, cold storage: {first.gas_used})")
    if n_aggregators <= 8:
        assert final.gas_used * 1.5 <= GAS_LIMITS["revealResult"]


def _signed_batch(contract, round_index, entries):
    """A real batch: `entries` deterministic off-chain device keys, each signing its update for the round."""
    signed = []
    for i in range(entries):
        device = Account.from_key(keccak(text=f"gas-device-{i}"))
        d = digest(f"gas-{round_index}-{i}")
        sig = sign_update(device, brownie_chain.id, contract.address, round_index, d, 100 + i)
        signed.append(SignedUpdate(device.address, d, 100 + i, sig))
    return make_batch(contract.address, brownie_chain.id, round_index, signed)


@pytest.mark.parametrize("entries", [10, 100])
def test_batch_gas_per_entry(federated_task, admin, aggregator, accounts, gas_log, entries):
    """One submitUpdateBatch records `entries` device updates: its gas does not depend on the entry count, so the
    amortised gas per update falls with the batch size (<= 5k at 100 entries)."""
    relayer = accounts[8]
    contract = deploy_with_devices(
        federated_task, admin, aggregator, list(accounts[2:5]), minUpdates=1, maxUpdates=10 * entries
    )
    contract.grantRole(RELAYER_ROLE, relayer, {"from": admin})
    batch = _signed_batch(contract, 1, entries)
    txs = []
    for k in range(2):  # the round's first batch, then a later one
        txs.append(
            record(
                gas_log,
                "submitUpdateBatch",
                contract.submitUpdateBatch(
                    1, digest(f"file-{k}"), batch.root(), entries, batch.total_samples, {"from": relayer}
                ),
            )
        )
    per_entry = [tx.gas_used / entries for tx in txs]
    print(
        f"submitUpdateBatch, {entries} entries: {[tx.gas_used for tx in txs]} gas, "
        f"{[round(p) for p in per_entry]} per entry (submitUpdate: ~{SUBMIT_LIMIT} per device)"
    )
    assert round_state(contract)["updates"] == 2 * entries
    closing = contract.submitUpdateBatch(
        1, digest("file-last"), batch.root(), 8 * entries, 8 * batch.total_samples, {"from": relayer}
    )
    assert "RoundReadyForAggregation" in closing.events
    record(gas_log, "submitUpdateBatch (closes round)", closing)
    if entries >= 100:
        assert max(per_entry) <= BATCH_PER_ENTRY_LIMIT


def test_submit_result_vs_commit_reveal(federated_task, admin, aggregator, accounts, gas_log):
    """k = n = 1: submitResult finalises in one transaction for less than commitResult + revealResult."""
    device_accounts = list(accounts[2:5])
    contract = deploy_with_devices(federated_task, admin, aggregator, device_accounts, numRounds=5)
    submit_round(contract, device_accounts, 1)
    commit_and_reveal(gas_log, contract, aggregator, 1)  # warms the aggregator's record
    submit_round(contract, device_accounts, 2)
    result = make_result(contract, 2)
    committed = commit(contract, aggregator, result)
    revealed = reveal(contract, aggregator, result)
    submit_round(contract, device_accounts, 3)
    result = make_result(contract, 3)
    tx = contract.submitResult(
        3, result.inputs_hash, result.model, result.report, result.accepted, 0, {"from": aggregator}
    )
    record(gas_log, "submitResult (final)", tx)
    assert "RoundOpened" in tx.events
    pair = committed.gas_used + revealed.gas_used
    print(
        f"submitResult {tx.gas_used} vs commitResult {committed.gas_used} + revealResult {revealed.gas_used} = {pair}"
    )
    assert tx.gas_used < pair


def test_gas_limits_cover_measurements(gas_log):
    """The binding's fixed gas limits (no estimate on the hot path) stay above every measured call, with margin."""
    pairs = {
        "submitUpdate": "submitUpdate",
        "closeRound": "closeRound",
        "closeRound (fails secure round, DP ledger)": "closeRound",
        "commitResult": "commitResult",
        "commitResult (opens reveal)": "commitResult",
        "revealResult (not final)": "revealResult",
        "revealResult (final)": "revealResult",
        "closeAggregationWindow (opens reveal)": "closeAggregationWindow",
        "closeAggregationWindow (fails round)": "closeAggregationWindow",
        "closeAggregationWindow (fails round, DP ledger)": "closeAggregationWindow",
        "revealResult (final, DP ledger)": "revealResult",
        "setEncryptionKey": "setEncryptionKey",
        "submitSetup": "submitSetup",
        "submitMaskedUpdate": "submitMaskedUpdate",
        "submitUnmaskShares": "submitUnmaskShares",
        "submitUpdateBatch": "submitUpdateBatch",
        "submitUpdateBatch (closes round)": "submitUpdateBatch",
        "submitResult (final)": "submitResult",
    }
    for measured, limit_name in pairs.items():
        if measured in gas_log:
            assert max(gas_log[measured]) * 1.5 <= GAS_LIMITS[limit_name], (measured, max(gas_log[measured]))
    assert "commitAggregate" not in GAS_LIMITS
