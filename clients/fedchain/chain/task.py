"""Typed binding of the FederatedTask contract over web3.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from fedchain.chain.contract_client import AGGREGATOR_ROLE as AGGREGATOR_ROLE
from fedchain.chain.contract_client import RoleTaskClient
from fedchain.chain.rawtx import selector, word
from fedchain.chain.tx import TransactionSender, TxResult, call_batch

# One conversion of epsilon to the contract's millionths for the whole package, re-exported for the chain API.
from fedchain.protocol.epsilon import MICRO as MICRO
from fedchain.protocol.epsilon import epsilon_to_micro as epsilon_to_micro

CONTRACT_NAME = "FederatedTask"
# The contract's absolute cap on one update's sample count (FederatedTask.MAX_SAMPLES_PER_UPDATE).
MAX_SAMPLES_PER_UPDATE = 2**32 - 1
RELAYER_ROLE = Web3.keccak(text="RELAYER_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32
# Gas limits of the per-round calls, so no estimate is needed on the hot path (see TransactionSender.transact).
# About twice the measured maximum (tests/contracts/test_gas.py, reports/gas-contract.json):
#   submitUpdate 34.9k-35.0k, 43.1k (the submission that closes the round), closeRound 31.5k-35.4k, 74.6k when it
#   fails a secure-aggregation round short of minUpdates with a DP ledger (the failed round's epsilon charge);
#   submitUpdateBatch 34.4k whatever the number of entries, 42.2k when it closes the round;
#   submitResult (k = n = 1, opens the next round) 98.1k, against commitResult + revealResult 49.5k + 109.6k;
#   commitResult 47.3k, 105.8k for an aggregator's first commitment (its record's and committer slots go from zero);
#   closeAggregationWindow 29.5k (opens the reveal window), 44.4k (fails the round and opens the next), 74.2k with a
#   DP ledger (the failed round's epsilon charge); closing a reveal window also faults every committer that did not
#   reveal (about 10k each: two cold record reads, a write, an event; up to MAX_AGGREGATORS = 32, hence 400k);
#   revealResult 76.7k-113.7k not final, 105.6k-126.3k final with n = k = 1, 139.5k with a DP ledger; the finalising
#   reveal also checks every earlier reveal of the round and records a fault for each dissenter: worst case for n = 8
#   (k = 5, three dissenters revealed first) 166.2k, about 12.4k more per further dissenter, 372.3k for
#   n = MAX_AGGREGATORS = 32;
#   setEncryptionKey 53.5k (a device's first key), 33.4k (rotation); submitSetup 77.2k (a round's first setup),
#   60.1k; submitMaskedUpdate 41.3k-47.1k (the first one of a round also announces the frozen setup set);
#   submitUnmaskShares 59.8k.
# The revealResult limit covers n <= 8 with twice the margin and n <= 25 at all; with more aggregators pass
# `reveal_result(..., gas_limit=...)` (for example 600_000 for n = 32).
GAS_LIMITS = {
    "submitUpdate": 100_000,
    "closeRound": 150_000,
    "commitResult": 160_000,
    "revealResult": 400_000,
    "closeAggregationWindow": 400_000,
    "setEncryptionKey": 110_000,
    "submitSetup": 160_000,
    "submitMaskedUpdate": 100_000,
    "submitUnmaskShares": 120_000,
    "submitUpdateBatch": 100_000,
    "submitResult": 200_000,
}


def setup_deadline_of(round_deadline: int, round_duration: int) -> int:
    """The setup deadline of an open secure-aggregation round whose deadline is `round_deadline` (mirrors
    FederatedTask._setupDeadline): setups are accepted before it, masked updates from it on. The setup window is the
    round's first roundDuration - roundDuration // 2 seconds; a secure round's deadline is never extended."""
    return round_deadline - round_duration // 2


class Phase(IntEnum):
    REGISTERING = 0
    OPEN = 1
    AGGREGATING = 2  # the commit window
    FINISHED = 3
    CANCELLED = 4
    REVEALING = 5  # the reveal window


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
    aggregator_threshold: int = 1  # k: agreeing reveals that make a round's result final
    aggregation_duration: int = 60  # seconds of the commit window, and again of the reveal window
    # Devices submit setups, masked updates and unmask shares instead of plain updates.
    secure_aggregation: bool = False
    # Total differential-privacy epsilon, in millionths (0 = no DP ledger; see `epsilon_to_micro`).
    epsilon_budget_micro: int = 0
    # Epsilon after one round, in millionths, from the privacy accountant (rounded up); <= the budget when one is set.
    first_round_epsilon_micro: int = 0
    # Largest sample count (FedAvg weight) one update may claim: 1..MAX_SAMPLES_PER_UPDATE.
    max_samples_per_update: int = MAX_SAMPLES_PER_UPDATE
    # Faults (dissenting or withheld reveals) that suspend an aggregator (>= 1).
    max_aggregator_faults: int = 3

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.model_spec_digest,
            self.initial_model_digest,
            self.num_rounds,
            self.min_updates,
            self.max_updates,
            self.round_duration,
            self.strategy_id,
            self.aggregator_threshold,
            self.aggregation_duration,
            self.secure_aggregation,
            self.epsilon_budget_micro,
            self.first_round_epsilon_micro,
            self.max_samples_per_update,
            self.max_aggregator_faults,
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


@dataclass(frozen=True)
class AggregationState:
    """The current round's aggregation progress as `aggregationState()` returns it."""

    commits: int
    reveals: int
    threshold: int  # k
    aggregators: int  # n of the current round (aggregatorCount when it opened)


@dataclass(frozen=True)
class AggregatorInfo:
    """An aggregator's record: its latest commitment (only the latest is kept) and its fault count."""

    committed_round: int
    revealed: bool
    faults: int  # since it was last granted the role
    commitment: bytes
    suspended: bool = False  # maxAggregatorFaults reached (or revoked): it cannot commit or reveal, not counted in n


@dataclass(frozen=True)
class PrivacyLedger:
    """The DP ledger as `privacyLedger()` returns it, in millionths of epsilon."""

    spent: int  # cumulative epsilon charged so far (an over-estimate after a failed round)
    increment: int  # bound on the next round's increment: the next round opens only if spent + increment <= budget
    agreed: int  # cumulative epsilon of the last agreed result (a lower reveal is refused)
    budget: int  # epsilonBudgetMicro (0 = no ledger)


def result_commitment(
    task_address: str,
    round_index: int,
    aggregator: str,
    inputs_hash: bytes,
    model_digest: bytes,
    report_digest: bytes,
    accepted: int,
    salt: bytes,
    *,
    epsilon_micro: int = 0,
) -> bytes:
    """The commitment `commitResult` expects, computed off-chain (mirrors FederatedTask.resultCommitment).

    keccak256(abi.encode(address task, uint32 round, address aggregator, bytes20 inputsHash, bytes32 modelDigest,
    bytes32 reportDigest, uint32 acceptedUpdates, uint64 epsilonMicro, bytes32 salt)). `epsilon_micro` is the
    cumulative DP epsilon after the round in millionths (0 for a task without a DP ledger). Keep `salt` secret
    (32 random bytes) until the reveal, and keep it: the reveal needs it.
    """
    if len(inputs_hash) != 20 or len(model_digest) != 32 or len(report_digest) != 32 or len(salt) != 32:
        raise ValueError("inputs_hash must be 20 bytes; model_digest, report_digest and salt 32 bytes")
    return keccak(
        abi_encode(
            ["address", "uint32", "address", "bytes20", "bytes32", "bytes32", "uint32", "uint64", "bytes32"],
            [
                Web3.to_checksum_address(task_address),
                round_index,
                Web3.to_checksum_address(aggregator),
                inputs_hash,
                model_digest,
                report_digest,
                accepted,
                epsilon_micro,
                salt,
            ],
        )
    )


def result_key(inputs_hash: bytes, model_digest: bytes, accepted: int, *, epsilon_micro: int = 0) -> bytes:
    """The key reveals agree on (mirrors FederatedTask._resultKey, shown by `finalResultKey`); the report is not in it.

    keccak256(abi.encode(bytes20 inputsHash, bytes32 modelDigest, uint32 acceptedUpdates, uint64 epsilonMicro)).
    """
    if len(inputs_hash) != 20 or len(model_digest) != 32:
        raise ValueError("inputs_hash must be 20 bytes and model_digest 32 bytes")
    return keccak(
        abi_encode(["bytes20", "bytes32", "uint32", "uint64"], [inputs_hash, model_digest, accepted, epsilon_micro])
    )


_SUBMIT_UPDATE = selector("submitUpdate(uint32,bytes32,uint64)")
_DEVICE_INFO = selector("deviceInfo(address)")


def encode_submit_update(round_index: int, update_digest: bytes, num_samples: int) -> bytes:
    """`submitUpdate`'s call data, encoded directly: a pool builds one per device per round, and web3's contract
    function objects cost more than the signature (a unit test checks it equals web3's encoding)."""
    if not (0 <= round_index < 1 << 32 and 0 <= num_samples < 1 << 64):
        raise ValueError(f"round {round_index} or numSamples {num_samples} out of range")
    return _SUBMIT_UPDATE + word(round_index) + word(bytes(update_digest)) + word(num_samples)


def deploy_task(w3: Web3, admin: LocalAccount, config: TaskConfig) -> tuple[TaskClient, TxResult]:
    """Deploy a FederatedTask with `admin` as its coordinator."""
    return TaskClient.deploy(w3, admin, config.as_tuple(), admin.address)


class TaskClient(RoleTaskClient):
    """One FederatedTask contract, seen by one account (or read-only when `sender` is None)."""

    CONTRACT_NAME = CONTRACT_NAME
    GAS_LIMITS = GAS_LIMITS

    def with_account(self, account: LocalAccount, chain_id: int) -> TaskClient:
        """This task seen by `account`, sharing this client's connection and contract object: web3 builds a
        contract from its ABI in ~20 ms, and a pool has one client per device."""
        return TaskClient(
            self.w3,
            self.address,
            TransactionSender(self.w3, account, self.decoder(), chain_id=chain_id),
            contract=self.contract,
        )

    # ------------------------------------------------------------ views

    def config(self) -> TaskConfig:
        f = self.contract.functions
        max_samples, max_faults = f.limits().call()
        return TaskConfig(
            model_spec_digest=bytes(f.modelSpecDigest().call()),
            initial_model_digest=bytes(f.initialModelDigest().call()),
            num_rounds=f.numRounds().call(),
            min_updates=f.minUpdates().call(),
            max_updates=f.maxUpdates().call(),
            round_duration=f.roundDuration().call(),
            strategy_id=f.strategyId().call(),
            aggregator_threshold=f.aggregatorThreshold().call(),
            aggregation_duration=f.aggregationDuration().call(),
            secure_aggregation=bool(f.secureAggregation().call()),
            epsilon_budget_micro=f.epsilonBudgetMicro().call(),
            first_round_epsilon_micro=f.firstRoundEpsilonMicro().call(),
            max_samples_per_update=max_samples,
            max_aggregator_faults=max_faults,
        )

    def current_round(self, block: int | str = "latest") -> RoundInfo:
        r, phase, deadline, updates, total, inputs, model = self.contract.functions.currentRound().call(
            block_identifier=block
        )
        return RoundInfo(r, Phase(phase), deadline, updates, total, bytes(inputs), bytes(model))

    def device_info(self, device: str, block: int | str = "latest") -> DeviceInfo:
        approved, last_round, joined = self.contract.functions.deviceInfo(device).call(block_identifier=block)
        return DeviceInfo(approved, last_round, joined)

    def device_infos(self, devices: Sequence[str]) -> list[DeviceInfo]:
        """`device_info` of many devices, in JSON-RPC batches (a pool registers hundreds at once); the calls are
        encoded directly, as web3's contract functions cost ~20 ms each to build against this ABI."""
        calls = [_DEVICE_INFO + bytes(12) + bytes.fromhex(Web3.to_checksum_address(d)[2:]) for d in devices]
        return [
            DeviceInfo(bool(a), int(r), int(j))
            for a, r, j in (
                abi_decode(["bool", "uint32", "uint32"], raw) for raw in call_batch(self.w3, self.address, calls)
            )
        ]

    def round_model_digest(self, round_index: int) -> bytes:
        return bytes(self.contract.functions.roundModelDigest(round_index).call())

    def global_model_digest(self) -> bytes:
        return bytes(self.contract.functions.globalModelDigest().call())

    def is_relayer(self, account: str) -> bool:
        return bool(self.contract.functions.hasRole(RELAYER_ROLE, account).call())

    def is_admin(self, account: str) -> bool:
        return bool(self.contract.functions.hasRole(DEFAULT_ADMIN_ROLE, account).call())

    def device_count(self) -> int:
        return int(self.contract.functions.deviceCount().call())

    def aggregator_count(self) -> int:
        return int(self.contract.functions.aggregatorCount().call())

    def failed_rounds(self) -> int:
        return int(self.contract.functions.failedRounds().call())

    def final_result_key(self, round_index: int) -> bytes:
        """The result key finalised for the round (32 zero bytes until then, and for a failed round)."""
        return bytes(self.contract.functions.finalResultKey(round_index).call())

    def aggregation_state(self, block: int | str = "latest") -> AggregationState:
        commits, reveals, threshold, aggregators = self.contract.functions.aggregationState().call(
            block_identifier=block
        )
        return AggregationState(commits, reveals, threshold, aggregators)

    def aggregator_info(self, account: str) -> AggregatorInfo:
        committed_round, revealed, faults, commitment, suspended = self.contract.functions.aggregatorInfo(
            Web3.to_checksum_address(account)
        ).call()
        return AggregatorInfo(committed_round, bool(revealed), faults, bytes(commitment), bool(suspended))

    def result_commitment(
        self,
        round_index: int,
        aggregator: str,
        inputs_hash: bytes,
        model_digest: bytes,
        report_digest: bytes,
        accepted: int,
        salt: bytes,
        *,
        epsilon_micro: int = 0,
    ) -> bytes:
        """The commitment for this task, computed locally (no call)."""
        return result_commitment(
            self.address,
            round_index,
            aggregator,
            inputs_hash,
            model_digest,
            report_digest,
            accepted,
            salt,
            epsilon_micro=epsilon_micro,
        )

    # ------------------------------------------------------------ signed updates and batches (views)

    def domain_separator(self) -> bytes:
        """The task's EIP-712 domain separator (see `signing.domain_separator`)."""
        return bytes(self.contract.functions.domainSeparator().call())

    def update_signer(
        self, round_index: int, update_digest: bytes, num_samples: int, signature: bytes, block: int | str = "latest"
    ) -> str | None:
        """The account that signed the update for `round_index` of this task (the contract's view), or None where
        the contract returns the zero address."""
        signer = self.contract.functions.updateSigner(round_index, update_digest, num_samples, signature).call(
            block_identifier=block
        )
        return None if int(signer, 16) == 0 else Web3.to_checksum_address(signer)

    def verify_batch_entry(
        self,
        round_index: int,
        entries_root: bytes,
        device: str,
        update_digest: bytes,
        num_samples: int,
        signature: bytes,
        proof: list[bytes],
        block: int | str = "latest",
    ) -> bool:
        """Whether one batch entry is valid at `block`: included under `entries_root`, signed by `device` for
        `round_index` of this task, and `device` approved (FederatedTask.verifyBatchEntry)."""
        return bool(
            self.contract.functions.verifyBatchEntry(
                round_index,
                entries_root,
                Web3.to_checksum_address(device),
                update_digest,
                num_samples,
                signature,
                list(proof),
            ).call(block_identifier=block)
        )

    # ------------------------------------------------------------ privacy views

    def encryption_key(self, account: str) -> bytes:
        """The X25519 public key `account` registered (32 zero bytes if none)."""
        return bytes(self.contract.functions.encryptionKey(Web3.to_checksum_address(account)).call())

    def setup_of(self, round_index: int, device: str) -> bytes:
        """The digest of the device's secure-aggregation setup for the round (32 zero bytes if none)."""
        return bytes(self.contract.functions.setupOf(round_index, Web3.to_checksum_address(device)).call())

    def setup_count(self, round_index: int, block: int | str = "latest") -> int:
        """Setups recorded for the round: a masked update must be masked against exactly that many."""
        return int(self.contract.functions.setupCount(round_index).call(block_identifier=block))

    def setup_deadline(self) -> int:
        """The open round's setup deadline (secure aggregation; meaningless in other phases): setups before it,
        masked updates from it on. `setup_deadline_of(current_round().deadline, roundDuration)` without a call."""
        return int(self.contract.functions.setupDeadline().call())

    def unmask_shares_of(self, round_index: int, device: str) -> bytes:
        """The digest of the device's unmask shares for the round (32 zero bytes if none)."""
        return bytes(self.contract.functions.unmaskSharesOf(round_index, Web3.to_checksum_address(device)).call())

    def unmask_share_count(self, round_index: int) -> int:
        return int(self.contract.functions.unmaskShareCount(round_index).call())

    def epsilon_spent_micro(self) -> int:
        """Cumulative epsilon (millionths) the DP ledger has charged (0 without a ledger)."""
        return self.privacy_ledger().spent

    def round_epsilon_micro(self, round_index: int) -> int:
        """Cumulative epsilon (millionths) charged after the round (0 until it ended, and without a ledger)."""
        return int(self.contract.functions.roundEpsilonMicro(round_index).call())

    def privacy_ledger(self) -> PrivacyLedger:
        spent, increment, agreed, budget = self.contract.functions.privacyLedger().call()
        return PrivacyLedger(spent, increment, agreed, budget)

    # ------------------------------------------------------------ transactions

    def _tx(self, fn: Any, preflight: bool = True, gas_limit: int | None = None) -> TxResult:
        return self._send(fn, preflight=preflight, gas_limit=gas_limit)

    def grant_relayer(self, account: str) -> TxResult:
        """Let `account` record relayed batches (RELAYER_ROLE; admin only)."""
        return self._tx(self.contract.functions.grantRole(RELAYER_ROLE, Web3.to_checksum_address(account)))

    def request_join(self) -> TxResult:
        return self._tx(self.contract.functions.requestJoin())

    def submit_update(self, round_index: int, update_digest: bytes, num_samples: int) -> TxResult:
        return self._tx(self.contract.functions.submitUpdate(round_index, update_digest, num_samples))

    def submit_update_batch(
        self, round_index: int, batch_digest: bytes, entries_root: bytes, entries: int, total_samples: int
    ) -> TxResult:
        """Record a relayed batch for the open round (RELAYER_ROLE): the digest of the batch file's CIDv0, the
        Merkle root of its entries (`UpdateBatch.root()`), their number and total sample count. One transaction
        whatever the number of entries."""
        return self._tx(
            self.contract.functions.submitUpdateBatch(round_index, batch_digest, entries_root, entries, total_samples)
        )

    def set_encryption_key(self, key: bytes) -> TxResult:
        """Publish or rotate this account's X25519 public key (32 bytes; a device cannot rotate while a round it
        set up is in progress: KeyLocked)."""
        if len(key) != 32:
            raise ValueError("an X25519 public key is 32 bytes")
        return self._tx(self.contract.functions.setEncryptionKey(key))

    def submit_setup(self, round_index: int, setup_digest: bytes) -> TxResult:
        """Announce this device's secure-aggregation setup for the open round (needs a registered key), in the
        round's setup window (else SetupWindowClosed)."""
        # Depends on block.timestamp (the setup deadline): no preflight at the latest, possibly old, block's time.
        return self._tx(self.contract.functions.submitSetup(round_index, setup_digest), preflight=False)

    def submit_masked_update(
        self, round_index: int, update_digest: bytes, num_samples: int, setup_count: int
    ) -> TxResult:
        """Submit this device's masked update, masked against the round's frozen setup set of `setup_count` setups.

        SetupWindowOpen: the setup window has not closed yet (wait for `setup_deadline`). SetupCountMismatch: the
        update was masked against another set (one read before the last setups were visible): re-read and re-mask.
        """
        # Depends on block.timestamp (accepted from the setup deadline on): no preflight, as for close_round.
        return self._tx(
            self.contract.functions.submitMaskedUpdate(round_index, update_digest, num_samples, setup_count),
            preflight=False,
        )

    def submit_unmask_shares(self, round_index: int, reveal_digest: bytes) -> TxResult:
        """Publish this device's unmask shares for a round in its commit or reveal window."""
        return self._tx(self.contract.functions.submitUnmaskShares(round_index, reveal_digest))

    def close_round(self, round_index: int) -> TxResult:
        # Depends on block.timestamp: no preflight call, which would see the latest (possibly old) block's time.
        return self._tx(self.contract.functions.closeRound(round_index), preflight=False)

    def commit_result(self, round_index: int, commitment: bytes) -> TxResult:
        """Commit to a result of the round in its commit window (see `result_commitment`)."""
        return self._tx(self.contract.functions.commitResult(round_index, commitment))

    def reveal_result(
        self,
        round_index: int,
        inputs_hash: bytes,
        model_digest: bytes,
        report_digest: bytes,
        accepted: int,
        salt: bytes,
        *,
        epsilon_micro: int = 0,
        gas_limit: int | None = None,
    ) -> TxResult:
        """Reveal the committed result (the same fields, epsilon and salt as committed, or CommitmentMismatch).

        `epsilon_micro`: the cumulative DP epsilon after the round in millionths, as committed (0 without a ledger;
        with one, a value below the last agreed epsilon or the first round's is refused: EpsilonTooLow).
        Preflighted: the reveal deadline is the only time check, and the latest block's timestamp a preflight sees is
        never later than the transaction's, so the preflight cannot refuse a reveal that would succeed.
        `gas_limit` overrides GAS_LIMITS["revealResult"], which covers tasks of up to 25 aggregators.
        """
        return self._tx(
            self.contract.functions.revealResult(
                round_index, inputs_hash, model_digest, report_digest, accepted, epsilon_micro, salt
            ),
            gas_limit=gas_limit,
        )

    def submit_result(
        self,
        round_index: int,
        inputs_hash: bytes,
        model_digest: bytes,
        report_digest: bytes,
        accepted: int,
        *,
        epsilon_micro: int = 0,
    ) -> TxResult:
        """Finalise the round in one transaction (tasks with one aggregator and threshold 1 only; otherwise
        NotSingleAggregator): the same result fields and checks as a reveal, no commitment and no salt."""
        return self._tx(
            self.contract.functions.submitResult(
                round_index, inputs_hash, model_digest, report_digest, accepted, epsilon_micro
            )
        )

    def close_aggregation_window(self, round_index: int) -> TxResult:
        # Depends on block.timestamp: no preflight call, which would see the latest (possibly old) block's time.
        return self._tx(self.contract.functions.closeAggregationWindow(round_index), preflight=False)
