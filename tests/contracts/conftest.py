"""Fixtures and helpers for the contract tests (brownie, on a local Anvil started by brownie)."""

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import IntEnum

import brownie
import pytest
from brownie import web3
from brownie.exceptions import _errors as brownie_errors
from brownie.exceptions import decode_typed_error
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_canonical_address
from web3.middleware import Web3Middleware

NUM_ROUNDS = 3
MIN_UPDATES = 2
MAX_UPDATES = 3
ROUND_DURATION = 600
STRATEGY_ID = 0
AGGREGATOR_THRESHOLD = 1
AGGREGATION_DURATION = 300
MAX_AGGREGATORS = 32
MAX_SAMPLES_PER_UPDATE = 2**32 - 1
# high, so that tests counting faults do not suspend their aggregators; test_limits.py sets small limits
MAX_AGGREGATOR_FAULTS = 100

ZERO_ADDRESS = "0x" + "00" * 20
ZERO_BYTES32 = b"\x00" * 32
DEFAULT_ADMIN_ROLE = b"\x00" * 32
AGGREGATOR_ROLE = keccak(text="AGGREGATOR_ROLE")


@pytest.fixture(scope="session", autouse=True)
def no_chain_id_round_trip_per_call():
    """web3's validation middleware asks the node for its chain id before every eth_call, eth_estimateGas and
    eth_sendTransaction, to compare it with a chainId field the tests never set: half of all requests (measured on
    the buffered state machine: 7,438 of 14,539). brownie's web3 goes without it; the node still validates what it
    executes."""
    if "validation" in web3.middleware_onion:
        web3.middleware_onion.remove("validation")


class ReceiptSettles(Web3Middleware):
    """Asks again, for up to half a second, when the node has no receipt for a transaction.

    brownie decides a transaction was dropped when the sender's nonce has moved past it but the node has no receipt
    for it (`TransactionReceipt._await_confirmation`), and the test then fails with "Tx dropped without known
    replacement". Under a full machine (both suites side by side on two cores) Anvil answered exactly that for a
    transaction it had mined: its new nonce was visible before its receipt (CI, test_commit_reveal, 2026-12-04).
    Every transaction here is automined, so a receipt that is missing for half a second is really missing."""

    def wrap_make_request(self, make_request):
        def middleware(method, params):
            response = make_request(method, params)
            if method == "eth_getTransactionReceipt":
                for _ in range(20):
                    if response.get("result") is not None:
                        break
                    time.sleep(0.025)
                    response = make_request(method, params)
            return response

        return middleware


@pytest.fixture(scope="session", autouse=True)
def receipts_settle():
    if "receipt_settles" not in web3.middleware_onion:
        web3.middleware_onion.add(ReceiptSettles, "receipt_settles")


class Phase(IntEnum):
    """FederatedTask.Phase."""

    Registering = 0
    Open = 1
    Aggregating = 2
    Finished = 3
    Cancelled = 4
    Revealing = 5


def digest(label: str) -> bytes:
    """A stand-in CIDv0 digest: contract logic only needs 32 non-zero bytes."""
    return hashlib.sha256(label.encode()).digest()


# ---------------------------------------------------------------- custom errors


def federated_task_container():
    """brownie's ContractContainer for FederatedTask (the `FederatedTask` fixture, under a lint-friendly name)."""
    return brownie.project.get_loaded_projects()[0].FederatedTask


def _error_abi(name: str) -> dict:
    """The ABI entry of a custom error of FederatedTask (its own or inherited from OpenZeppelin)."""
    abi = federated_task_container().abi
    matches = [item for item in abi if item["type"] == "error" and item["name"] == name]
    assert len(matches) == 1, f"FederatedTask has no (unique) custom error {name!r}"
    return matches[0]


def encode_error(name: str, *args) -> str:
    """Revert data of a custom error: 4-byte selector of `Name(types)` followed by the abi-encoded arguments."""
    types = [item["type"] for item in _error_abi(name)["inputs"]]
    assert len(types) == len(args), f"{name} takes {len(types)} arguments, got {len(args)}"
    selector = keccak(text=f"{name}({','.join(types)})")[:4]
    return "0x" + (selector + abi_encode(types, list(args))).hex()


@contextmanager
def reverts_with(name: str, *args):
    """Expect the block to revert with exactly the custom error `name(*args)`.

    brownie decodes the revert data of a known custom error into "Name: arg1, arg2"; the expected string is produced
    by feeding the data we encode ourselves (selector + eth_abi-encoded arguments) to the same decoder, so the
    comparison is exact on the selector and on every argument.
    """
    data = encode_error(name, *args)
    assert data[:10] in brownie_errors, f"brownie does not know the selector of {name}"
    with brownie.reverts(decode_typed_error(data)):
        yield


# ---------------------------------------------------------------- inputs hash (mirrors the contract)


def initial_inputs_hash(task_address: str, round_index: int) -> bytes:
    """bytes20(keccak256(abi.encode(address(this), uint32 round)))."""
    return keccak(abi_encode(["address", "uint32"], [task_address, round_index]))[:20]


def fold_inputs_hash(previous: bytes, device: str, update_digest: bytes, num_samples: int) -> bytes:
    """bytes20(keccak256(abi.encodePacked(bytes20 prev, address device, bytes32 digest, uint64 numSamples)))."""
    assert len(previous) == 20 and len(update_digest) == 32
    packed = bytes(previous) + to_canonical_address(str(device)) + bytes(update_digest) + num_samples.to_bytes(8, "big")
    assert len(packed) == 20 + 20 + 32 + 8
    return keccak(packed)[:20]


def expected_inputs_hash(task_address: str, round_index: int, submissions) -> bytes:
    """The inputs hash after (device, digest, numSamples) submissions, in chain order."""
    acc = initial_inputs_hash(str(task_address), round_index)
    for device, update_digest, num_samples in submissions:
        acc = fold_inputs_hash(acc, device, update_digest, num_samples)
    return acc


# ---------------------------------------------------------------- chain helpers


def device_info(task, account) -> tuple[bool, int, int]:
    """deviceInfo as plain Python values (brownie's ReturnValue refuses to compare with a plain tuple)."""
    approved, last_round, approved_in_round = task.deviceInfo(account)
    return bool(approved), int(last_round), int(approved_in_round)


def round_state(task) -> dict:
    """currentRound() as a dict of plain Python values (bytes for the hashes)."""
    state = task.currentRound()
    return {
        "round": int(state["round"]),
        "phase": Phase(int(state["phase"])),
        "deadline": int(state["deadline"]),
        "updates": int(state["updates"]),
        "totalSamples": int(state["totalSamples"]),
        "inputsHash": bytes(state["inputsHash"]),
        "globalModel": bytes(state["globalModel"]),
    }


def set_next_block_timestamp(timestamp: int) -> None:
    """Make the next mined block carry exactly this timestamp (Anvil's evm_setNextBlockTimestamp)."""
    response = web3.provider.make_request("evm_setNextBlockTimestamp", [int(timestamp)])
    assert "error" not in response, response


def submit_round(task, devices, round_index, samples=None, label="u"):
    """Every device submits to the round; returns the (device, digest, numSamples) submissions and the txs."""
    submissions, txs = [], []
    for i, device in enumerate(devices):
        n = samples[i] if samples else 100 + 10 * i
        d = digest(f"{label}-{round_index}-{i}")
        txs.append(task.submitUpdate(round_index, d, n, {"from": device}))
        submissions.append((device.address, d, n))
    return submissions, txs


def result_commitment(
    task_address, round_index, aggregator, inputs_hash, model, report, accepted, epsilon_micro, salt
) -> bytes:
    """keccak256(abi.encode(address(this), round, aggregator, inputsHash, modelDigest, reportDigest, accepted,
    epsilonMicro, salt)): FederatedTask.resultCommitment, spelled out independently of the fedchain binding."""
    return keccak(
        abi_encode(
            ["address", "uint32", "address", "bytes20", "bytes32", "bytes32", "uint32", "uint64", "bytes32"],
            [
                str(task_address),
                round_index,
                str(aggregator),
                inputs_hash,
                model,
                report,
                accepted,
                epsilon_micro,
                salt,
            ],
        )
    )


def result_key(inputs_hash: bytes, model: bytes, accepted: int, epsilon_micro: int = 0) -> bytes:
    """keccak256(abi.encode(bytes20 inputsHash, bytes32 modelDigest, uint32 acceptedUpdates, uint64 epsilonMicro))."""
    return keccak(abi_encode(["bytes20", "bytes32", "uint32", "uint64"], [inputs_hash, model, accepted, epsilon_micro]))


@dataclass(frozen=True)
class Result:
    """One aggregator's result for a round, and the salt of its commitment."""

    round: int
    inputs_hash: bytes
    model: bytes
    report: bytes
    accepted: int
    salt: bytes
    epsilon: int = 0  # epsilonMicro: the cumulative DP epsilon after the round, in millionths (0 without a ledger)

    def commitment(self, task, aggregator) -> bytes:
        return result_commitment(
            task.address,
            self.round,
            aggregator,
            self.inputs_hash,
            self.model,
            self.report,
            self.accepted,
            self.epsilon,
            self.salt,
        )

    def key(self) -> bytes:
        return result_key(self.inputs_hash, self.model, self.accepted, self.epsilon)

    def but(self, **changes) -> "Result":
        return replace(self, **changes)


def make_result(
    task, round_index, model=None, report=None, accepted=None, inputs_hash=None, salt=None, epsilon=0
) -> Result:
    """A result for the round; defaults: the chain's inputs hash and update count, `model-<round>`, a fixed salt,
    epsilonMicro 0 (no DP ledger)."""
    state = round_state(task)
    return Result(
        round=round_index,
        inputs_hash=state["inputsHash"] if inputs_hash is None else inputs_hash,
        model=digest(f"model-{round_index}") if model is None else model,
        report=digest(f"report-{round_index}") if report is None else report,
        accepted=state["updates"] if accepted is None else accepted,
        salt=digest(f"salt-{round_index}") if salt is None else salt,
        epsilon=epsilon,
    )


def commit(task, aggregator, result: Result, commitment=None):
    """commitResult for `result` (or for an explicit commitment)."""
    if commitment is None:
        commitment = result.commitment(task, aggregator)
    return task.commitResult(result.round, commitment, {"from": aggregator})


def reveal(task, aggregator, result: Result):
    """revealResult of `result`."""
    return task.revealResult(
        result.round,
        result.inputs_hash,
        result.model,
        result.report,
        result.accepted,
        result.epsilon,
        result.salt,
        {"from": aggregator},
    )


def commit_reveal(task, aggregator, round_index, accepted=None, model=None, report=None, epsilon=0):
    """Commit and reveal by one aggregator; with the fixtures' single aggregator and k = 1 this finalises the round.

    Returns the reveal transaction. The commit opens the reveal window because every aggregator (n = 1) committed.
    """
    result = make_result(task, round_index, model=model, report=report, accepted=accepted, epsilon=epsilon)
    tx = commit(task, aggregator, result)
    assert "RevealOpened" in tx.events, "commit_reveal needs every aggregator of the task to have committed"
    return reveal(task, aggregator, result)


def aggregator_info(task, account) -> tuple[int, bool, int, bytes]:
    """aggregatorInfo as plain Python values, without `suspended` (see `is_suspended`)."""
    committed_round, revealed, faults, commitment_, _suspended = task.aggregatorInfo(account)
    return int(committed_round), bool(revealed), int(faults), bytes(commitment_)


def is_suspended(task, account) -> bool:
    """aggregatorInfo's `suspended`: suspended for its faults, or revoked (not counted in n)."""
    return bool(task.aggregatorInfo(account)[4])


def aggregation_state(task) -> tuple[int, int, int, int]:
    """aggregationState as plain Python values: (commits, reveals, threshold, aggregators)."""
    return tuple(int(v) for v in task.aggregationState())


# ---------------------------------------------------------------- fixtures


# filled by test_gas.py: {function: {"avg", "min", "max", "calls"}}
GAS_STATS: dict[str, dict[str, int]] = {}


def pytest_terminal_summary(terminalreporter):
    if not GAS_STATS:
        return
    terminalreporter.section("FederatedTask gas (also in reports/gas-contract.json)")
    terminalreporter.write_line(f"{'function':<40}{'avg':>10}{'min':>10}{'max':>10}{'calls':>7}")
    for name, s in GAS_STATS.items():
        terminalreporter.write_line(f"{name:<40}{s['avg']:>10}{s['min']:>10}{s['max']:>10}{s['calls']:>7}")


def pytest_configure(config):
    # brownie 1.22's own isolation fixtures call rpc.snapshot/rpc.revert and warn about it on every test
    config.addinivalue_line("filterwarnings", r"ignore:rpc\.\w+ should not be called directly:FutureWarning")


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    """Revert the chain after each test."""


@pytest.fixture(scope="module")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def aggregator(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def devices(accounts):
    return list(accounts[2:6])


@pytest.fixture(scope="module")
def outsider(accounts):
    return accounts[9]


@pytest.fixture(scope="module")
def aggregators(accounts, aggregator):
    """Three aggregator accounts (the first is the `aggregator` fixture); none of them is a device."""
    return [aggregator, accounts[6], accounts[7]]


def make_config(**overrides):
    config = {
        "modelSpecDigest": digest("spec"),
        "initialModelDigest": digest("model-0"),
        "numRounds": NUM_ROUNDS,
        "minUpdates": MIN_UPDATES,
        "maxUpdates": MAX_UPDATES,
        "roundDuration": ROUND_DURATION,
        "strategyId": STRATEGY_ID,
        "aggregatorThreshold": AGGREGATOR_THRESHOLD,
        "aggregationDuration": AGGREGATION_DURATION,
        "secureAggregation": False,
        "epsilonBudgetMicro": 0,
        "firstRoundEpsilonMicro": 0,
        # the contract's absolute maximum, so tests of other rules are not capped; test_limits.py sets small caps
        "maxSamplesPerUpdate": MAX_SAMPLES_PER_UPDATE,
        "maxAggregatorFaults": MAX_AGGREGATOR_FAULTS,
    }
    unknown = set(overrides) - set(config)
    assert not unknown, f"unknown config fields {unknown}"
    config.update(overrides)
    return tuple(config.values())


def deploy_task(federated_task, admin, aggregator_accounts, device_accounts, start=True, **overrides):
    """Deploy a task with these aggregators and approved devices (config overrides as in make_config)."""
    contract = federated_task.deploy(make_config(**overrides), admin, {"from": admin})
    for account in aggregator_accounts:
        contract.grantRole(AGGREGATOR_ROLE, account, {"from": admin})
    if device_accounts:
        contract.approveDevices(device_accounts, {"from": admin})
    if start:
        contract.start({"from": admin})
    return contract


@pytest.fixture(scope="session")
def federated_task():
    """The FederatedTask ContractContainer (deploy with `federated_task.deploy(make_config(...), admin, tx)`)."""
    return federated_task_container()


@pytest.fixture(scope="module")
def task(federated_task, admin, aggregator, devices):
    """A task with one aggregator (n = k = 1) and three approved devices (a fourth is left unapproved), not started."""
    contract = federated_task.deploy(make_config(), admin, {"from": admin})
    contract.grantRole(contract.AGGREGATOR_ROLE(), aggregator, {"from": admin})
    contract.approveDevices(devices[:3], {"from": admin})
    return contract


@pytest.fixture
def started(task, admin):
    task.start({"from": admin})
    return task


@pytest.fixture
def aggregating(started, devices):
    """Round 1 filled by the three approved devices (maxUpdates = 3): the task waits for the aggregate."""
    submit_round(started, devices[:3], 1)
    assert round_state(started)["phase"] == Phase.Aggregating
    return started


@pytest.fixture
def finished(started, devices, aggregator):
    """All NUM_ROUNDS rounds run and finalised."""
    for r in range(1, NUM_ROUNDS + 1):
        submit_round(started, devices[:3], r)
        commit_reveal(started, aggregator, r)
    assert round_state(started)["phase"] == Phase.Finished
    return started


@pytest.fixture
def revealing(aggregating, aggregator):
    """Round 1 in its reveal window: the single aggregator committed `make_result(task, 1)` and has not revealed."""
    result = make_result(aggregating, 1)
    assert "RevealOpened" in commit(aggregating, aggregator, result).events
    assert round_state(aggregating)["phase"] == Phase.Revealing
    return aggregating


@pytest.fixture
def cancelled(started, admin):
    started.cancel({"from": admin})
    return started
