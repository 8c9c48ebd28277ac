"""Typed binding of the BufferedTask contract (asynchronous buffered rounds, FedBuff) over web3.py.

Besides the calls, it holds the off-chain halves every aggregator must compute identically: the buffer's inputs hash
(to check the chain's), the staleness weighting named by the task's config, the commitment and the result key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from enum import IntEnum
from typing import Any

from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address
from web3 import Web3

from fedchain.chain.contract_client import AGGREGATOR_ROLE as AGGREGATOR_ROLE
from fedchain.chain.contract_client import RoleTaskClient
from fedchain.chain.tx import TxResult

CONTRACT_NAME = "BufferedTask"
MAX_BUFFER_SIZE = 64
WEIGHTING_CONSTANT = 0
WEIGHTING_POLYNOMIAL = 1
FEDBUFF_EXPONENT_MICRO = 500_000  # FedBuff's polynomial weighting, a = 0.5: w(s) = 1 / sqrt(1 + s)
# About twice the measured figures (tests/contracts/test_buffered_gas.py, reports/gas-buffered.json): submitUpdate
# 50.9k, 88k-91k when it closes the buffer (records it, opens its aggregation and the next buffer); closeBuffer 69.5k;
# commitResult 46k-103k (103k for an aggregator's first commitment); revealResult 77k-114k, 106k-110k when it
# publishes; closing a reveal window faults every committer that did not reveal (about 10k each, up to 32).
GAS_LIMITS = {
    "submitUpdate": 180_000,
    "closeBuffer": 200_000,
    "commitResult": 210_000,
    "revealResult": 400_000,
    "closeAggregationWindow": 500_000,
}
# Decimal arithmetic is done in software (libmpdec), so every aggregator gets the same weights on every platform.
_WEIGHT_CONTEXT = Context(prec=34)


class Status(IntEnum):
    REGISTERING = 0
    RUNNING = 1
    FINISHED = 2
    CANCELLED = 3


class AggPhase(IntEnum):
    NONE = 0  # no buffer pending
    COMMITTING = 1
    REVEALING = 2


class BufferStatus(IntEnum):
    FILLING = 0
    FULL = 1  # full, waiting for the pending buffer
    AGGREGATING = 2
    PUBLISHED = 3
    DISCARDED = 4


@dataclass(frozen=True)
class BufferedConfig:
    """The task's fixed configuration (BufferedTask.Config, in the struct's order)."""

    model_spec_digest: bytes
    initial_model_digest: bytes
    num_versions: int
    buffer_size: int  # K
    max_staleness: int
    max_samples_per_update: int = 2**32 - 1
    strategy_id: int = 0
    weighting_id: int = WEIGHTING_POLYNOMIAL
    weighting_param_micro: int = FEDBUFF_EXPONENT_MICRO
    aggregator_threshold: int = 1
    aggregation_duration: int = 60
    max_aggregation_attempts: int = 2
    max_aggregator_faults: int = 3
    # Seconds after which a buffer with at least min_buffer_size updates may be closed early (0 = never), so that
    # sleeping devices cannot stall the task.
    buffer_duration: int = 0
    min_buffer_size: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.model_spec_digest,
            self.initial_model_digest,
            self.num_versions,
            self.buffer_size,
            self.max_staleness,
            self.max_samples_per_update,
            self.strategy_id,
            self.weighting_id,
            self.weighting_param_micro,
            self.aggregator_threshold,
            self.aggregation_duration,
            self.max_aggregation_attempts,
            self.max_aggregator_faults,
            self.buffer_duration,
            self.min_buffer_size,
        )


@dataclass(frozen=True)
class FillingBuffer:
    status: Status
    version: int  # latest published version
    buffer: int
    count: int  # == buffer_size: full, waiting for the pending buffer
    inputs_hash: bytes


@dataclass(frozen=True)
class AggregationState:
    buffer: int  # 0: none pending
    phase: AggPhase
    attempt: int
    deadline: int
    commits: int
    reveals: int
    threshold: int
    aggregators: int


@dataclass(frozen=True)
class BufferInfo:
    status: BufferStatus
    count: int
    inputs_hash: bytes
    version: int  # Published: the version produced; Aggregating: the version it builds on


@dataclass(frozen=True)
class BufferedAggregatorInfo:
    committed_buffer: int
    committed_attempt: int
    revealed: bool
    faults: int
    suspended: bool
    commitment: bytes


@dataclass(frozen=True)
class BufferEntry:
    device: str
    update_digest: bytes
    num_samples: int
    base_version: int
    staleness: int


# ---------------------------------------------------------------- off-chain mirrors


def staleness_weight(staleness: int, weighting_id: int, param_micro: int) -> float:
    """The weight of an update of this staleness (mirrors the contract's notes): constant 1, or FedBuff's polynomial
    (1 + s)^(-a) with a = param_micro / 1e6. Computed in decimal arithmetic, so it is the same on every machine."""
    if staleness < 0:
        raise ValueError(f"staleness {staleness} < 0")
    if weighting_id == WEIGHTING_CONSTANT:
        return 1.0
    if weighting_id != WEIGHTING_POLYNOMIAL:
        raise ValueError(f"unknown staleness weighting {weighting_id}")
    base = Decimal(1 + staleness)
    exponent = -Decimal(param_micro) / Decimal(1_000_000)
    if param_micro == FEDBUFF_EXPONENT_MICRO:  # sqrt is correctly rounded: exact agreement guaranteed
        return float(_WEIGHT_CONTEXT.divide(Decimal(1), _WEIGHT_CONTEXT.sqrt(base)))
    return float(_WEIGHT_CONTEXT.power(base, exponent))


def entry_weights(entries: Sequence[BufferEntry], weighting_id: int, param_micro: int) -> list[float]:
    """Each entry's aggregation weight: numSamples x staleness weight, normalised to sum 1."""
    raw = [e.num_samples * staleness_weight(e.staleness, weighting_id, param_micro) for e in entries]
    total = sum(raw)
    if total <= 0:
        raise ValueError("a buffer needs at least one entry with samples")
    return [w / total for w in raw]


def initial_inputs_hash(task_address: str, buffer: int) -> bytes:
    """bytes20(keccak256(abi.encode(address task, uint32 buffer)))."""
    return keccak(abi_encode(["address", "uint32"], [Web3.to_checksum_address(task_address), buffer]))[:20]


def fold_entry(previous: bytes, entry: BufferEntry) -> bytes:
    """One step of a buffer's inputs hash: bytes20(keccak256(abi.encodePacked(bytes20 previous, address device,
    bytes32 updateDigest, uint32 numSamples, uint32 baseVersion, uint32 staleness)))."""
    packed = (
        bytes(previous)
        + to_canonical_address(entry.device)
        + bytes(entry.update_digest)
        + entry.num_samples.to_bytes(4, "big")
        + entry.base_version.to_bytes(4, "big")
        + entry.staleness.to_bytes(4, "big")
    )
    return keccak(packed)[:20]


def buffer_inputs_hash(task_address: str, buffer: int, entries: Sequence[BufferEntry]) -> bytes:
    """The inputs hash of a buffer with these entries, in chain order (compare with the chain's before aggregating)."""
    acc = initial_inputs_hash(task_address, buffer)
    for entry in entries:
        acc = fold_entry(acc, entry)
    return acc


def result_commitment(
    task_address: str,
    buffer: int,
    attempt: int,
    aggregator: str,
    inputs_hash: bytes,
    model_digest: bytes,
    report_digest: bytes,
    accepted: int,
    salt: bytes,
) -> bytes:
    """keccak256(abi.encode(address task, uint32 buffer, uint16 attempt, address aggregator, bytes20 inputsHash,
    bytes32 modelDigest, bytes32 reportDigest, uint32 acceptedUpdates, bytes32 salt)). Keep `salt` secret."""
    if len(inputs_hash) != 20 or len(model_digest) != 32 or len(report_digest) != 32 or len(salt) != 32:
        raise ValueError("inputs_hash must be 20 bytes; model_digest, report_digest and salt 32 bytes")
    return keccak(
        abi_encode(
            ["address", "uint32", "uint16", "address", "bytes20", "bytes32", "bytes32", "uint32", "bytes32"],
            [
                Web3.to_checksum_address(task_address),
                buffer,
                attempt,
                Web3.to_checksum_address(aggregator),
                inputs_hash,
                model_digest,
                report_digest,
                accepted,
                salt,
            ],
        )
    )


def result_key(inputs_hash: bytes, model_digest: bytes, accepted: int) -> bytes:
    """keccak256(abi.encode(bytes20 inputsHash, bytes32 modelDigest, uint32 acceptedUpdates)) (`finalResultKey`)."""
    return keccak(abi_encode(["bytes20", "bytes32", "uint32"], [inputs_hash, model_digest, accepted]))


# ---------------------------------------------------------------- the client


def deploy_buffered_task(w3: Web3, admin: LocalAccount, config: BufferedConfig) -> tuple[BufferedTaskClient, TxResult]:
    """Deploy a BufferedTask with `admin` as its coordinator."""
    return BufferedTaskClient.deploy(w3, admin, config.as_tuple(), admin.address)


class BufferedTaskClient(RoleTaskClient):
    """One BufferedTask contract, seen by one account (read-only when `sender` is None)."""

    CONTRACT_NAME = CONTRACT_NAME
    GAS_LIMITS = GAS_LIMITS

    # ------------------------------------------------------------ views

    def config(self) -> BufferedConfig:
        f = self.contract.functions
        return BufferedConfig(
            model_spec_digest=bytes(f.modelSpecDigest().call()),
            initial_model_digest=bytes(f.initialModelDigest().call()),
            num_versions=f.numVersions().call(),
            buffer_size=f.bufferSize().call(),
            max_staleness=f.maxStaleness().call(),
            max_samples_per_update=f.maxSamplesPerUpdate().call(),
            strategy_id=f.strategyId().call(),
            weighting_id=f.weightingId().call(),
            weighting_param_micro=f.weightingParamMicro().call(),
            aggregator_threshold=f.aggregatorThreshold().call(),
            aggregation_duration=f.aggregationDuration().call(),
            max_aggregation_attempts=f.maxAggregationAttempts().call(),
            max_aggregator_faults=f.maxAggregatorFaults().call(),
            buffer_duration=f.bufferDuration().call(),
            min_buffer_size=f.minBufferSize().call(),
        )

    def current_version(self) -> int:
        return int(self.contract.functions.currentVersion().call())

    def version_digest(self, version: int) -> bytes:
        return bytes(self.contract.functions.versionDigest(version).call())

    def filling_buffer(self) -> FillingBuffer:
        status, version, buffer, count, inputs_hash = self.contract.functions.fillingBuffer().call()
        return FillingBuffer(Status(status), version, buffer, count, bytes(inputs_hash))

    def aggregation_state(self) -> AggregationState:
        buffer, phase, attempt, deadline, commits, reveals, k, n = self.contract.functions.aggregationState().call()
        return AggregationState(buffer, AggPhase(phase), attempt, deadline, commits, reveals, k, n)

    def buffer_info(self, buffer: int) -> BufferInfo:
        status, count, inputs_hash, version = self.contract.functions.bufferInfo(buffer).call()
        return BufferInfo(BufferStatus(status), count, bytes(inputs_hash), version)

    def buffer_entries(self, buffer: int) -> list[BufferEntry]:
        """The entries of a buffer still in the ring (the filling one and the one before it)."""
        count = self.buffer_info(buffer).count
        entries = []
        for position in range(count):
            device, update, samples, base, staleness = self.contract.functions.bufferEntry(buffer, position).call()
            entries.append(BufferEntry(Web3.to_checksum_address(device), bytes(update), samples, base, staleness))
        return entries

    def aggregator_info(self, aggregator: str) -> BufferedAggregatorInfo:
        buffer, attempt, revealed, faults, suspended, commitment = self.contract.functions.aggregatorInfo(
            Web3.to_checksum_address(aggregator)
        ).call()
        return BufferedAggregatorInfo(buffer, attempt, revealed, faults, suspended, bytes(commitment))

    def device_approved(self, device: str) -> bool:
        return bool(self.contract.functions.deviceInfo(Web3.to_checksum_address(device)).call()[0])

    def filling_opened_at(self) -> int:
        return int(self.contract.functions.fillingOpenedAt().call())

    def final_result_key(self, buffer: int) -> bytes:
        return bytes(self.contract.functions.finalResultKey(buffer).call())

    # ------------------------------------------------------------ transactions

    def _tx(self, fn: Any) -> TxResult:
        return self._send(fn)

    def submit_update(self, base_version: int, update_digest: bytes, num_samples: int) -> TxResult:
        """Buffer this device's update trained from `base_version` (ContractRevert TooStale, UnknownVersion,
        BuffersFull, ... when refused: the update stays with the device, which may submit again later)."""
        return self._tx(self.contract.functions.submitUpdate(base_version, update_digest, num_samples))

    def close_buffer(self, buffer: int) -> TxResult:
        """Close the filling buffer early (bufferDuration passed, at least minBufferSize updates, none pending).
        Depends on block.timestamp: no preflight at the latest, possibly older, block's time."""
        return self._send(self.contract.functions.closeBuffer(buffer), preflight=False)

    def commit_result(self, buffer: int, commitment: bytes) -> TxResult:
        return self._tx(self.contract.functions.commitResult(buffer, commitment))

    def reveal_result(
        self, buffer: int, inputs_hash: bytes, model_digest: bytes, report_digest: bytes, accepted: int, salt: bytes
    ) -> TxResult:
        return self._tx(
            self.contract.functions.revealResult(buffer, inputs_hash, model_digest, report_digest, accepted, salt)
        )

    def close_aggregation_window(self, buffer: int) -> TxResult:
        return self._tx(self.contract.functions.closeAggregationWindow(buffer))
