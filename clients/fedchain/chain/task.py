"""Typed binding of the FederatedTask contract over web3.py."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from fedchain.chain.artifacts import load_artifact
from fedchain.chain.tx import ErrorDecoder, TransactionSender, TxResult

CONTRACT_NAME = "FederatedTask"
AGGREGATOR_ROLE = Web3.keccak(text="AGGREGATOR_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32
# Gas limits of the per-round calls: about twice the measured maximum (submitUpdate 43.7k, commitAggregate 68.8k,
# closeRound 31.6k), so no estimate is needed on the hot path (see TransactionSender.transact).
GAS_LIMITS = {"submitUpdate": 100_000, "commitAggregate": 150_000, "closeRound": 80_000}


class Phase(IntEnum):
    REGISTERING = 0
    OPEN = 1
    AGGREGATING = 2
    FINISHED = 3
    CANCELLED = 4


@dataclass(frozen=True)
class TaskConfig:
    """The task's fixed configuration (constructor input and immutables)."""

    model_spec_digest: bytes
    initial_model_digest: bytes
    num_rounds: int
    min_updates: int
    max_updates: int
    round_duration: int
    strategy_id: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.model_spec_digest,
            self.initial_model_digest,
            self.num_rounds,
            self.min_updates,
            self.max_updates,
            self.round_duration,
            self.strategy_id,
        )


@dataclass(frozen=True)
class RoundInfo:
    """The current round as `currentRound()` returns it."""

    round: int
    phase: Phase
    deadline: int
    updates: int
    total_samples: int
    inputs_hash: bytes
    global_model_digest: bytes


@dataclass(frozen=True)
class DeviceInfo:
    approved: bool
    last_round: int
    approved_in_round: int


def _decoder() -> ErrorDecoder:
    return ErrorDecoder(load_artifact(CONTRACT_NAME).abi)


def deploy_task(w3: Web3, admin: LocalAccount, config: TaskConfig) -> tuple[TaskClient, TxResult]:
    """Deploy a FederatedTask with `admin` as its coordinator."""
    artifact = load_artifact(CONTRACT_NAME)
    sender = TransactionSender(w3, admin, _decoder())
    address, result = sender.deploy(artifact.abi, artifact.bytecode, config.as_tuple(), admin.address)
    return TaskClient(w3, address, sender), result


class TaskClient:
    """One FederatedTask contract, seen by one account (or read-only when `sender` is None)."""

    def __init__(self, w3: Web3, address: str, sender: TransactionSender | None = None) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.abi = load_artifact(CONTRACT_NAME).abi
        self.contract: Contract = w3.eth.contract(address=self.address, abi=self.abi)
        self.sender = sender

    @classmethod
    def for_account(cls, w3: Web3, address: str, account: LocalAccount) -> TaskClient:
        return cls(w3, address, TransactionSender(w3, account, _decoder()))

    # ------------------------------------------------------------ views

    def config(self) -> TaskConfig:
        f = self.contract.functions
        return TaskConfig(
            model_spec_digest=bytes(f.modelSpecDigest().call()),
            initial_model_digest=bytes(f.initialModelDigest().call()),
            num_rounds=f.numRounds().call(),
            min_updates=f.minUpdates().call(),
            max_updates=f.maxUpdates().call(),
            round_duration=f.roundDuration().call(),
            strategy_id=f.strategyId().call(),
        )

    def current_round(self, block: int | str = "latest") -> RoundInfo:
        r, phase, deadline, updates, total, inputs, model = self.contract.functions.currentRound().call(
            block_identifier=block
        )
        return RoundInfo(r, Phase(phase), deadline, updates, total, bytes(inputs), bytes(model))

    def device_info(self, device: str) -> DeviceInfo:
        approved, last_round, joined = self.contract.functions.deviceInfo(device).call()
        return DeviceInfo(approved, last_round, joined)

    def round_model_digest(self, round_index: int) -> bytes:
        return bytes(self.contract.functions.roundModelDigest(round_index).call())

    def global_model_digest(self) -> bytes:
        return bytes(self.contract.functions.globalModelDigest().call())

    def is_aggregator(self, account: str) -> bool:
        return bool(self.contract.functions.hasRole(AGGREGATOR_ROLE, account).call())

    def is_admin(self, account: str) -> bool:
        return bool(self.contract.functions.hasRole(DEFAULT_ADMIN_ROLE, account).call())

    def device_count(self) -> int:
        return int(self.contract.functions.deviceCount().call())

    # ------------------------------------------------------------ transactions

    def _tx(self, fn: Any, preflight: bool = True) -> TxResult:
        if self.sender is None:
            raise RuntimeError("this TaskClient is read-only: create it with an account to send transactions")
        return self.sender.transact(fn, gas_limit=GAS_LIMITS.get(fn.fn_name), preflight=preflight)

    def approve_devices(self, devices: list[str]) -> TxResult:
        return self._tx(self.contract.functions.approveDevices([Web3.to_checksum_address(d) for d in devices]))

    def grant_aggregator(self, account: str) -> TxResult:
        return self._tx(self.contract.functions.grantRole(AGGREGATOR_ROLE, Web3.to_checksum_address(account)))

    def request_join(self) -> TxResult:
        return self._tx(self.contract.functions.requestJoin())

    def remove_device(self, device: str) -> TxResult:
        return self._tx(self.contract.functions.removeDevice(Web3.to_checksum_address(device)))

    def start(self) -> TxResult:
        return self._tx(self.contract.functions.start())

    def cancel(self) -> TxResult:
        return self._tx(self.contract.functions.cancel())

    def submit_update(self, round_index: int, update_digest: bytes, num_samples: int) -> TxResult:
        return self._tx(self.contract.functions.submitUpdate(round_index, update_digest, num_samples))

    def close_round(self, round_index: int) -> TxResult:
        # Depends on block.timestamp: no preflight call, which would see the latest (possibly old) block's time.
        return self._tx(self.contract.functions.closeRound(round_index), preflight=False)

    def commit_aggregate(
        self, round_index: int, inputs_hash: bytes, model_digest: bytes, report_digest: bytes, accepted: int
    ) -> TxResult:
        return self._tx(
            self.contract.functions.commitAggregate(round_index, inputs_hash, model_digest, report_digest, accepted)
        )
