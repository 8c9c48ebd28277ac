"""Helpers for the BufferedTask tests (issue 15 part 3: asynchronous buffered rounds, FedBuff, on chain).

Everything the contract hashes is recomputed here independently (inputs hash, commitment, result key), so a test
compares the chain with a Python mirror rather than with the contract's own views.
"""

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import IntEnum

import brownie
from brownie.exceptions import _errors as brownie_errors
from brownie.exceptions import decode_typed_error
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_canonical_address

AGGREGATOR_ROLE = keccak(text="AGGREGATOR_ROLE")
BUFFER_SIZE = 3  # K
MAX_STALENESS = 2
MAX_SAMPLES = 10_000
NUM_VERSIONS = 6
AGGREGATION_DURATION = 300
MAX_ATTEMPTS = 2
WEIGHTING_POLYNOMIAL = 1
FEDBUFF_EXPONENT_MICRO = 500_000  # a = 0.5: w(s) = 1 / sqrt(1 + s)


class Status(IntEnum):
    """BufferedTask.Status."""

    Registering = 0
    Running = 1
    Finished = 2
    Cancelled = 3


class AggPhase(IntEnum):
    """BufferedTask.AggPhase."""

    Idle = 0  # "None" in Solidity
    Committing = 1
    Revealing = 2


class BufferStatus(IntEnum):
    """BufferedTask.BufferStatus."""

    Filling = 0
    Full = 1
    Aggregating = 2
    Published = 3
    Discarded = 4


def digest(label: str) -> bytes:
    """A stand-in CIDv0 digest."""
    return hashlib.sha256(label.encode()).digest()


def buffered_container():
    """brownie's ContractContainer for BufferedTask."""
    return brownie.project.get_loaded_projects()[0].BufferedTask


# ---------------------------------------------------------------- custom errors


def _error_abi(name: str) -> dict:
    matches = [item for item in buffered_container().abi if item["type"] == "error" and item["name"] == name]
    assert len(matches) == 1, f"BufferedTask has no (unique) custom error {name!r}"
    return matches[0]


@contextmanager
def buffered_reverts(name: str, *args):
    """Expect the block to revert with exactly the BufferedTask custom error `name(*args)` (the expected text is
    brownie's own decoding of revert data encoded here: exact on the selector and on every argument)."""
    types = [item["type"] for item in _error_abi(name)["inputs"]]
    assert len(types) == len(args), f"{name} takes {len(types)} arguments, got {len(args)}"
    selector = keccak(text=f"{name}({','.join(types)})")[:4]
    values = [int(a) if isinstance(a, IntEnum) else a for a in args]
    data = "0x" + (selector + abi_encode(types, values)).hex()
    assert data[:10] in brownie_errors, f"brownie does not know the selector of {name}"
    with brownie.reverts(decode_typed_error(data)):
        yield


# ---------------------------------------------------------------- deploying


def make_config(**overrides) -> tuple:
    """BufferedTask.Config as a tuple in the struct's order; overrides by field name."""
    config = {
        "modelSpecDigest": digest("spec"),
        "initialModelDigest": digest("model-0"),
        "numVersions": NUM_VERSIONS,
        "bufferSize": BUFFER_SIZE,
        "maxStaleness": MAX_STALENESS,
        "maxSamplesPerUpdate": MAX_SAMPLES,
        "strategyId": 0,
        "weightingId": WEIGHTING_POLYNOMIAL,
        "weightingParamMicro": FEDBUFF_EXPONENT_MICRO,
        "aggregatorThreshold": 1,
        "aggregationDuration": AGGREGATION_DURATION,
        "maxAggregationAttempts": MAX_ATTEMPTS,
        "maxAggregatorFaults": 100,
        "bufferDuration": 0,  # no early close (test_buffered_early_close.py sets one)
        "minBufferSize": 0,
    }
    unknown = set(overrides) - set(config)
    assert not unknown, f"unknown config fields {unknown}"
    config.update(overrides)
    return tuple(config.values())


def deploy_buffered(admin, aggregators, devices, start=True, **overrides):
    """Deploy a BufferedTask with these aggregators and approved devices (config overrides as in make_config)."""
    task = buffered_container().deploy(make_config(**overrides), admin, {"from": admin})
    for account in aggregators:
        task.grantRole(AGGREGATOR_ROLE, account, {"from": admin})
    if devices:
        task.approveDevices(devices, {"from": admin})
    if start:
        task.start({"from": admin})
    return task


# ---------------------------------------------------------------- mirrors of the contract's hashes


def initial_inputs_hash(task_address, buffer: int) -> bytes:
    """bytes20(keccak256(abi.encode(address(this), uint32 buffer)))."""
    return keccak(abi_encode(["address", "uint32"], [str(task_address), buffer]))[:20]


def fold(previous: bytes, device, update_digest: bytes, samples: int, base: int, staleness: int) -> bytes:
    """bytes20(keccak256(abi.encodePacked(bytes20, address, bytes32, uint32 numSamples, uint32 baseVersion,
    uint32 staleness))): 84 bytes."""
    packed = (
        bytes(previous)
        + to_canonical_address(str(device))
        + bytes(update_digest)
        + samples.to_bytes(4, "big")
        + base.to_bytes(4, "big")
        + staleness.to_bytes(4, "big")
    )
    assert len(packed) == 84
    return keccak(packed)[:20]


def buffer_hash(task_address, buffer: int, entries) -> bytes:
    """The inputs hash of a buffer after (device, digest, samples, base, staleness) entries, in chain order."""
    acc = initial_inputs_hash(task_address, buffer)
    for entry in entries:
        acc = fold(acc, *entry)
    return acc


def result_key(inputs_hash: bytes, model: bytes, accepted: int) -> bytes:
    return keccak(abi_encode(["bytes20", "bytes32", "uint32"], [inputs_hash, model, accepted]))


@dataclass(frozen=True)
class Result:
    """One aggregator's result for a buffer's attempt, and its salt."""

    buffer: int
    attempt: int
    inputs_hash: bytes
    model: bytes
    report: bytes
    accepted: int
    salt: bytes

    def commitment(self, task, aggregator) -> bytes:
        """keccak256(abi.encode(address(this), buffer, attempt, aggregator, inputsHash, modelDigest, reportDigest,
        acceptedUpdates, salt)), spelled out independently of the contract."""
        return keccak(
            abi_encode(
                ["address", "uint32", "uint16", "address", "bytes20", "bytes32", "bytes32", "uint32", "bytes32"],
                [
                    str(task.address),
                    self.buffer,
                    self.attempt,
                    str(aggregator),
                    self.inputs_hash,
                    self.model,
                    self.report,
                    self.accepted,
                    self.salt,
                ],
            )
        )

    def key(self) -> bytes:
        return result_key(self.inputs_hash, self.model, self.accepted)

    def but(self, **changes) -> "Result":
        return replace(self, **changes)


# ---------------------------------------------------------------- views as plain values


def filling(task) -> dict:
    status, version, buffer, count, inputs_hash = task.fillingBuffer()
    return {
        "status": Status(int(status)),
        "version": int(version),
        "buffer": int(buffer),
        "count": int(count),
        "inputsHash": bytes(inputs_hash),
    }


def aggregation(task) -> dict:
    buffer, phase, attempt, deadline, commits, reveals, threshold, n = task.aggregationState()
    return {
        "buffer": int(buffer),
        "phase": AggPhase(int(phase)),
        "attempt": int(attempt),
        "deadline": int(deadline),
        "commits": int(commits),
        "reveals": int(reveals),
        "threshold": int(threshold),
        "aggregators": int(n),
    }


def buffer_info(task, buffer: int) -> dict:
    status, count, inputs_hash, version = task.bufferInfo(buffer)
    return {
        "status": BufferStatus(int(status)),
        "count": int(count),
        "inputsHash": bytes(inputs_hash),
        "version": int(version),
    }


def entry(task, buffer: int, position: int) -> tuple:
    device, update_digest, samples, base, staleness = task.bufferEntry(buffer, position)
    return str(device), bytes(update_digest), int(samples), int(base), int(staleness)


def faults(task, aggregator) -> int:
    return int(task.aggregatorInfo(aggregator)[3])


# ---------------------------------------------------------------- actions


def submit(task, device, base: int, label: str, samples: int = 100):
    """submitUpdate from `device`; returns (tx, the entry as the contract should record it)."""
    update = digest(label)
    current = int(task.currentVersion())
    tx = task.submitUpdate(base, update, samples, {"from": device})
    return tx, (device.address, update, samples, base, current - base)


def make_result(task, buffer: int, model=None, report=None, accepted=None, inputs_hash=None, salt=None) -> Result:
    """A result for the pending buffer's current attempt; defaults: the chain's inputs hash and count."""
    info = buffer_info(task, buffer)
    attempt = aggregation(task)["attempt"]
    return Result(
        buffer=buffer,
        attempt=attempt,
        inputs_hash=info["inputsHash"] if inputs_hash is None else inputs_hash,
        model=digest(f"model-b{buffer}") if model is None else model,
        report=digest(f"report-b{buffer}") if report is None else report,
        accepted=info["count"] if accepted is None else accepted,
        salt=digest(f"salt-b{buffer}-{attempt}") if salt is None else salt,
    )


def commit(task, aggregator, result: Result):
    return task.commitResult(result.buffer, result.commitment(task, aggregator), {"from": aggregator})


def reveal(task, aggregator, result: Result):
    return task.revealResult(
        result.buffer,
        result.inputs_hash,
        result.model,
        result.report,
        result.accepted,
        result.salt,
        {"from": aggregator},
    )


def aggregate(task, aggregators, buffer: int, model=None):
    """Every aggregator commits the same result for the pending buffer, then they reveal until it is published.
    Returns (result, the publishing reveal's tx)."""
    result = make_result(task, buffer, model=model)
    for account in aggregators:
        commit(task, account, result)
    assert aggregation(task)["phase"] == AggPhase.Revealing
    for account in aggregators:
        tx = reveal(task, account, result)
        if "VersionPublished" in tx.events:
            return result, tx
    raise AssertionError("no reveal published the buffer")
