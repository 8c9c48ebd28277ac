"""The off-chain aggregator: triggered by contract events, it aggregates a round's updates and agrees on the result.

A task has n aggregators and a threshold k. For each round every aggregator computes the aggregate with the task's
strategy (deterministic: bit-identical weights, so the same CID, on any x86-64 CPU), commits a salted hash of its
result, and reveals it once every aggregator has committed (or the commit window has closed). The contract
finalises the round when k reveals agree and records a fault for every revealed result that disagrees.

Restart-safe by construction: everything it needs is on chain (the round's phase, its submissions as events, the
running inputs hash, its own commitment) or on IPFS (the previous round's server state, referenced by the
finalised report), the salt is derived from its key, and aggregation is deterministic. Killed at any point and
restarted, it recomputes the same result and commits and reveals it once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from fedchain.aggregator.agreement import PreparedResult, commit_salt
from fedchain.aggregator.batches import BatchRecord, screen_round_batches
from fedchain.aggregator.screening import REASON_DUPLICATE_DIGEST, duplicate_digests
from fedchain.aggregator.secure import AggregatorPrivacy, RoundUnrecoverable, SharesNotYetAvailable
from fedchain.chain import (
    BatchSubmission,
    ContractRevert,
    EventFollower,
    Phase,
    RoundInfo,
    TaskClient,
    connect,
    inputs_hash,
)
from fedchain.chain.notify import EventNotifier
from fedchain.learning.aggregation import ServerState, StreamingFedAvg, Update, build_strategy
from fedchain.learning.aggregation.base import prepare as prepare_updates
from fedchain.learning.aggregation.bound import DEFAULT_MAX_RELATIVE_DISTANCE, UpdateBound
from fedchain.learning.aggregation.registry import OPTIONAL_PARAMS
from fedchain.learning.attacks import gaussian_noise
from fedchain.learning.data import load_dataset
from fedchain.learning.model import InvalidWeights, build_model, check_weights, set_weights, weight_shapes
from fedchain.learning.root import root_reference_trainer
from fedchain.learning.spec import TaskSpec
from fedchain.learning.train import evaluate
from fedchain.learning.types import Weights
from fedchain.storage import IpfsClient, IpfsUnavailable, StorageError, cid_to_digest, digest_to_cid, read_metadata
from fedchain.storage.binding import DEVICE_KEY, UpdateBinding, check_binding
from fedchain.storage.codec import decode_weights

log = logging.getLogger("fedchain.aggregator")

# Events after which the aggregator re-reads the task's state.
WAKE_EVENTS = {
    "RoundReadyForAggregation",
    "RoundOpened",
    "UpdateSubmitted",
    "UpdateBatchSubmitted",
    "ResultCommitted",
    "RevealOpened",
    "ResultRevealed",
    "AggregateCommitted",
    "AggregationFailed",
    "TaskFinished",
    "TaskCancelled",
}
# Reverts that mean the round moved on (or we acted already, before a restart): nothing left to do for it.
ROUND_MOVED_ON = {"WrongPhase", "WrongRound", "AlreadyCommitted", "AlreadyRevealed", "RevealWindowClosed"}


def _raise_if_suspended(exc: ContractRevert, address: str) -> None:
    """A suspended aggregator (too many faults) can neither commit nor reveal until the admin revokes and grants its
    role again: stop with a clear message (PermissionError, like a revoked role) instead of a crash."""
    if exc.error == "AggregatorIsSuspended":
        raise PermissionError(
            f"aggregator {address} is suspended (maxAggregatorFaults reached): the admin reinstates it by revoking "
            "and granting AGGREGATOR_ROLE again"
        ) from exc


# Strategies whose aggregate is exactly the sample-weighted mean: computed streaming, in memory for one model.
STREAMING = {"fedavg", "fedprox"}
# Strategies that carry server state (momentum, moments) from round to round.
STATEFUL = {"fedavgm", "fedadam", "fedyogi"}


# Fault injection for the restart tests: "before-commit:ROUND" or "after-commit:ROUND" makes the process die there,
# as a power cut would. Unset in normal operation.
CRASH_ENV = "FEDCHAIN_AGGREGATOR_CRASH"


def _crash_point(point: str, round_index: int) -> None:
    if os.environ.get(CRASH_ENV) == f"{point}:{round_index}":
        log.error("fault injection: dying %s of round %d", point, round_index)
        logging.shutdown()
        os._exit(86)


# The stand-in "device" of the one update a stateful strategy sees under secure aggregation: the survivors' mean.
MASKED_SUM_DEVICE = "0x" + "00" * 20


def _lower(addresses: tuple[str, ...]) -> set[str]:
    return {a.lower() for a in addresses}


class InputsNotYetVisible(RuntimeError):
    """The node's logs do not yet add up to the chain's inputs hash (a lagging node); retry shortly."""


@dataclass(frozen=True)
class AggregatorSettings:
    task_address: str
    rpc_url: str
    ipfs_api: str
    evaluate: bool = True
    max_update_bytes: int = 256 * 2**20
    poll_interval: float = 0.25
    # Wake on events pushed over the RPC's WebSocket (eth_subscribe); False, or an HTTP-only RPC, polls.
    push: bool = True
    # Updates fetched from IPFS at once (I/O on loopback; the aggregation itself stays in the fixed device order).
    fetch_threads: int = 8
    state_recheck: float = 5.0
    close_expired_rounds: bool = True
    # Evaluation only: a dishonest aggregator, which reveals a corrupted model (see `lying_model`).
    lie: bool = False
    # An update farther from the round's global model than this many times the model's norm is left out
    # ("update-too-large"; see fedchain.learning.aggregation.bound for the measured default); 0 turns it off.
    # Every aggregator of a task must use the same value, or their results differ and the round fails.
    max_update_distance: float = DEFAULT_MAX_RELATIVE_DISTANCE


@dataclass(frozen=True)
class Submission:
    device: str
    digest: bytes
    num_samples: int
    block_number: int
    tx_hash: str
    # Position in the round's chain order: (block, log index, 0 for a direct submission or 1 + the entry's place in
    # its relayed batch). Decides which of two submissions of one digest counts.
    order: tuple[int, int, int] = (0, 0, 0)

    @property
    def cid(self) -> str:
        return digest_to_cid(self.digest)


@dataclass
class AggregationReport:
    """What went into a round's aggregate and why; published on IPFS, its digest committed on chain."""

    task: str
    round: int
    strategy: str
    inputs_hash: str
    previous_model_cid: str
    strategy_params: dict[str, float | int] = field(default_factory=dict)
    model_cid: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    # Server state of stateful strategies (momentum, Adam moments) for the next round, as safetensors on IPFS.
    server_state_cid: str = ""
    note: str = ""
    # Private tasks: who took part in secure aggregation, and the ε spent once this round is published.
    privacy: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class CommitOutcome:
    """One round's result as this aggregator revealed it; `finalised` if its reveal completed the agreement."""

    round: int
    model_cid: str
    report_cid: str
    accepted: int
    rejected: int
    gas_used: int
    seconds: float
    metrics: dict[str, float]
    finalised: bool = False


def lying_model(honest: Weights, round_index: int) -> Weights:
    """What the dishonest aggregator of the tests and demo reveals: the honest aggregate plus seeded noise."""
    return gaussian_noise(honest, sigma=0.05, seed=round_index)


class AggregatorWorker:
    """Aggregates every round of one task as the contract's events announce them, and takes part in agreement."""

    def __init__(self, settings: AggregatorSettings, account: LocalAccount) -> None:
        self.settings = settings
        self.account = account
        self.w3 = connect(settings.rpc_url, wait=30)
        self.task = TaskClient.for_account(self.w3, settings.task_address, account)
        if not self.task.is_aggregator(account.address):
            raise PermissionError(f"{account.address} does not hold AGGREGATOR_ROLE on task {self.task.address}")
        self.ipfs = IpfsClient(settings.ipfs_api)
        config = self.task.config()
        self.threshold = config.aggregator_threshold
        self.max_samples_per_update = config.max_samples_per_update
        self.spec = TaskSpec.from_json(self.ipfs.cat(digest_to_cid(config.model_spec_digest), max_size=1 << 20))
        self.strategy_spec = self.spec.strategy_spec()
        if self.strategy_spec.id != config.strategy_id:
            raise ValueError(
                f"the task's description names strategy {self.strategy_spec.name!r} (id {self.strategy_spec.id}) "
                f"but the contract says strategy id {config.strategy_id}: refusing a task that says two things"
            )
        # A reference filter trains on the task's root set each round; built once here (the root set is loaded once).
        reference = root_reference_trainer(self.spec) if self.strategy_spec.root_samples else None
        self.strategy = build_strategy(self.strategy_spec, reference=reference)
        self.strategy_name = self.strategy_spec.name
        self.streaming = self.strategy_name in STREAMING and not (set(OPTIONAL_PARAMS) & set(self.strategy_spec.params))
        self.stateful = self.strategy_name in STATEFUL
        privacy = self.spec.privacy
        self.private = (
            AggregatorPrivacy(self.task, self.ipfs, account, privacy)
            if privacy.secure_aggregation or privacy.seal_updates or privacy.differential_privacy
            else None
        )
        if self.private is not None and privacy.seal_updates:
            self.private.ensure_key()  # devices seal their updates to the keys on chain
        self.shapes = weight_shapes(self.spec.model)
        self.chain_id = int(self.w3.eth.chain_id)
        self.bound = UpdateBound(settings.max_update_distance)
        self.eval_data = load_dataset(self.spec.dataset)[1] if settings.evaluate else None
        self.follower = EventFollower(self.w3, self.task.address, self.task.abi, from_block=self.w3.eth.block_number)
        self.notifier = EventNotifier(
            settings.rpc_url, [self.task.address], poll_interval=settings.poll_interval, push=settings.push
        )
        self._history = EventFollower(self.w3, self.task.address, self.task.abi)
        self._next_close_attempt = 0.0
        self._prepared: dict[int, PreparedResult] = {}
        self._commit_gas: dict[int, int] = {}
        self._started: dict[int, float] = {}
        self._unrevealable: set[int] = set()
        # Per round: the report records of relayed-batch entries (or whole batches) left out, from submissions().
        self._batch_rejected: dict[int, list[dict[str, Any]]] = {}
        if settings.lie:
            log.warning("aggregator %s is DISHONEST (evaluation mode): it reveals corrupted models", self.address)

    @property
    def address(self) -> str:
        return self.account.address

    def run(self, on_commit: Callable[[CommitOutcome], None] | None = None) -> int:
        """Serve the task until it finishes or is cancelled; returns the number of rounds revealed here."""
        revealed = 0
        while True:
            state = self.task.current_round()
            if state.phase in (Phase.FINISHED, Phase.CANCELLED):
                # The last round may have been finalised by others before our reveal: reveal it still, so that a
                # disagreeing result is recorded and an agreeing one is on the record too.
                outcome = self._reveal_late(state)
                if outcome is not None:
                    revealed += 1
                    if on_commit is not None:
                        on_commit(outcome)
                log.info("task %s is %s", self.task.address, state.phase.name.lower())
                self.notifier.close()
                return revealed
            outcome = self.step(state)
            if outcome is not None:
                revealed += 1
                if on_commit is not None:
                    on_commit(outcome)
                continue
            self._wait_for_events(state)

    def step(self, state: RoundInfo) -> CommitOutcome | None:
        """Do what the round's state asks for: aggregate and commit, reveal, or close an expired window."""
        try:
            late = self._reveal_late(state)
            if late is not None:
                return late
            if state.phase in (Phase.AGGREGATING, Phase.REVEALING):
                return self._agree(state)
        except InputsNotYetVisible as exc:
            log.warning("%s", exc)
            return None
        except IpfsUnavailable as exc:
            log.warning("IPFS unavailable, will retry: %s", exc)
            return None
        if state.phase == Phase.OPEN and self._close_due(state):
            self._next_close_attempt = time.monotonic() + self.settings.state_recheck
            try:
                self.task.close_round(state.round)
                # short of minUpdates: a plain round is extended, a secure-aggregation round fails (the next opens)
                log.info("round %d: deadline passed, closed it", state.round)
            except ContractRevert as exc:  # closed by someone else first, or our clock runs ahead of the chain's
                log.info("round %d: close not needed (%s)", state.round, exc.error)
        return None

    def _agree(self, state: RoundInfo) -> CommitOutcome | None:
        info = self.task.aggregator_info(self.address)
        committed = info.committed_round == state.round
        if state.phase == Phase.AGGREGATING and not committed and self._alone():
            try:
                return self._submit_result(state)
            except InputsNotYetVisible as exc:
                log.warning("%s", exc)
        elif state.phase == Phase.AGGREGATING and not committed:
            try:
                self._commit(state)
                return None
            except InputsNotYetVisible as exc:
                # Not ready (for example too few unmasking shares yet): a window that expires meanwhile is closed
                # below, failing the round, which then runs again with the previous model.
                log.warning("%s", exc)
        if state.phase == Phase.REVEALING and committed and not info.revealed and state.round not in self._unrevealable:
            return self._reveal(state.round, info.commitment, state)
        if self._close_due(state):
            # The window passed without every aggregator committing, or without k agreeing reveals.
            self._next_close_attempt = time.monotonic() + self.settings.state_recheck
            try:
                self.task.close_aggregation_window(state.round)
                log.info("round %d: %s window expired; closed it", state.round, state.phase.name.lower())
            except ContractRevert as exc:
                log.info("round %d: window close not needed (%s)", state.round, exc.error)
        return None

    def _alone(self) -> bool:
        """One aggregator and threshold 1: the round finalises in one transaction, without commit and reveal (the
        round's n, fixed when it opened, is read each round: the admin may grant or revoke the role meanwhile)."""
        return self.threshold == 1 and self.task.aggregation_state().aggregators == 1

    def _submit_result(self, state: RoundInfo) -> CommitOutcome | None:
        prepared = self.prepare(state)
        _crash_point("before-commit", state.round)
        if self.settings.lie:
            log.warning("round %d: submitting a corrupted model (evaluation mode)", state.round)
        try:
            tx = self.task.submit_result(
                state.round,
                prepared.inputs_hash,
                prepared.model_digest,
                prepared.report_digest,
                prepared.accepted,
                epsilon_micro=prepared.epsilon_micro,
            )
        except ContractRevert as exc:
            _raise_if_suspended(exc, self.address)
            if exc.error in ROUND_MOVED_ON:
                log.info("round %d: not submitting (%s)", state.round, exc.error)
                return None
            raise
        _crash_point("after-commit", state.round)
        seconds = time.perf_counter() - self._started.get(state.round, time.perf_counter())
        log.info(
            "round %d: submitted %s from %d updates (%d rejected), gas %d, %.2fs; final (sole aggregator)",
            state.round,
            prepared.model_cid,
            prepared.accepted,
            prepared.rejected,
            tx.gas_used,
            seconds,
        )
        return CommitOutcome(
            state.round,
            prepared.model_cid,
            prepared.report_cid,
            prepared.accepted,
            prepared.rejected,
            tx.gas_used,
            seconds,
            prepared.metrics,
            finalised=True,
        )

    def _commit(self, state: RoundInfo) -> None:
        prepared = self.prepare(state)
        _crash_point("before-commit", state.round)
        # Checks-effects: re-read the phase right before committing; the contract is the final guard.
        current = self.task.current_round()
        if current.phase != Phase.AGGREGATING or current.round != state.round:
            log.info("round %d moved on before our commit", state.round)
            return
        try:
            tx = self.task.commit_result(state.round, prepared.commitment(self.task.address, self.address))
        except ContractRevert as exc:
            _raise_if_suspended(exc, self.address)
            if exc.error in ROUND_MOVED_ON:
                log.info("round %d: not committing (%s)", state.round, exc.error)
                return
            raise
        self._commit_gas[state.round] = tx.gas_used
        log.info("round %d: committed to our result (gas %d)", state.round, tx.gas_used)
        _crash_point("after-commit", state.round)

    def _reveal(self, round_index: int, commitment: bytes, state: RoundInfo | None) -> CommitOutcome | None:
        prepared = self._prepared.get(round_index)
        if prepared is None:
            if state is None:
                return None  # an old round we no longer hold: nothing to reveal (no fault can follow either)
            prepared = self.prepare(state)  # after a restart: the same inputs give the same result, bit for bit
        if prepared.commitment(self.task.address, self.address) != commitment:
            log.error("round %d: our recomputed result does not match our commitment; cannot reveal", round_index)
            self._unrevealable.add(round_index)
            return None
        try:
            tx = self.task.reveal_result(
                round_index,
                prepared.inputs_hash,
                prepared.model_digest,
                prepared.report_digest,
                prepared.accepted,
                prepared.salt,
                epsilon_micro=prepared.epsilon_micro,
            )
        except ContractRevert as exc:
            _raise_if_suspended(exc, self.address)
            if exc.error in ROUND_MOVED_ON:
                log.info("round %d: not revealing (%s)", round_index, exc.error)
                self._unrevealable.add(round_index)
                return None
            raise
        finalised = self.task.round_model_digest(round_index) == prepared.model_digest
        seconds = time.perf_counter() - self._started.get(round_index, time.perf_counter())
        log.info(
            "round %d: revealed %s from %d updates (%d rejected), gas %d, %.2fs; %s",
            round_index,
            prepared.model_cid,
            prepared.accepted,
            prepared.rejected,
            tx.gas_used,
            seconds,
            "agreed and final" if finalised else "not final (yet)",
        )
        return CommitOutcome(
            round_index,
            prepared.model_cid,
            prepared.report_cid,
            prepared.accepted,
            prepared.rejected,
            self._commit_gas.get(round_index, 0) + tx.gas_used,
            seconds,
            prepared.metrics,
            finalised,
        )

    def _reveal_late(self, state: RoundInfo) -> CommitOutcome | None:
        """Reveal a committed result of an earlier round that others finalised before our reveal."""
        info = self.task.aggregator_info(self.address)
        r = info.committed_round
        if r == 0 or info.revealed or r in self._unrevealable or r not in self._prepared:
            return None
        if r == state.round and state.phase in (Phase.AGGREGATING, Phase.REVEALING):
            return None
        if self.task.final_result_key(r) == b"\x00" * 32:
            return None  # the round failed: its reveals are closed
        return self._reveal(r, info.commitment, None)

    def _close_due(self, state: RoundInfo) -> bool:
        """Whether to try closing an expired round or window now. Wall-clock time: an idle devnet mines no blocks,
        so the latest block's timestamp stands still; attempts are spaced so a skewed clock cannot spam
        transactions."""
        return (
            self.settings.close_expired_rounds
            and time.time() >= state.deadline
            and time.monotonic() >= self._next_close_attempt
        )

    def _wait_for_events(self, state: RoundInfo) -> None:
        deadline = time.monotonic() + self.settings.state_recheck
        if state.phase in (Phase.OPEN, Phase.AGGREGATING, Phase.REVEALING):
            deadline = min(deadline, time.monotonic() + max(0.0, state.deadline - time.time()) + 0.5)
        while time.monotonic() < deadline:
            if any(e.name in WAKE_EVENTS for e in self.follower.poll()):
                return
            self.notifier.wait(deadline - time.monotonic())

    def submissions(self, state: RoundInfo) -> list[Submission]:
        """The round's submissions, checked against the chain's running inputs hash: the direct ones in chain
        order, then the accepted entries of relayed batches (see `_batch_submissions`)."""
        opened = next(self._history.history("RoundOpened", round=state.round), None)
        from_block = opened.block_number if opened is not None else 0
        direct = list(self._history.history("UpdateSubmitted", from_block=from_block, round=state.round))
        batched = list(self._history.history("UpdateBatchSubmitted", from_block=from_block, round=state.round))
        items: list[tuple[str, bytes, int] | BatchSubmission] = []
        for e in sorted(direct + batched, key=lambda e: (e.block_number, e.log_index)):
            if e.name == "UpdateSubmitted":
                items.append((e.args["device"], bytes(e.args["updateDigest"]), e.args["numSamples"]))
            else:
                items.append(
                    BatchSubmission(
                        e.args["relayer"],
                        bytes(e.args["entriesRoot"]),
                        bytes(e.args["batchDigest"]),
                        e.args["entries"],
                        e.args["totalSamples"],
                    )
                )
        claimed = len(direct) + sum(e.args["entries"] for e in batched)
        expected = inputs_hash(self.task.address, state.round, items)
        if expected != state.inputs_hash or claimed != state.updates:
            raise InputsNotYetVisible(
                f"round {state.round}: {len(direct)} submission and {len(batched)} batch events do not match the "
                f"chain's inputs hash ({state.updates} updates); retrying"
            )
        subs = [
            Submission(
                e.args["device"],
                bytes(e.args["updateDigest"]),
                e.args["numSamples"],
                e.block_number,
                e.tx_hash,
                (e.block_number, e.log_index, 0),
            )
            for e in direct
        ]
        self._batch_rejected[state.round] = []
        if batched:
            subs += self._batch_submissions(state, batched, [s.device for s in subs])
        return subs

    def _batch_submissions(self, state: RoundInfo, events: list[Any], direct_devices: list[str]) -> list[Submission]:
        """The accepted entries of the round's relayed batches. Device approval is read at the block that closed
        the round, so every aggregator screens the entries alike; what is left out goes to the report."""
        closed = next(self._history.history("RoundReadyForAggregation", round=state.round), None)
        if closed is None:
            raise InputsNotYetVisible(f"round {state.round}: the event that closed the round is not visible yet")
        records = [
            BatchRecord(
                relayer=e.args["relayer"],
                batch_digest=bytes(e.args["batchDigest"]),
                entries_root=bytes(e.args["entriesRoot"]),
                entries=e.args["entries"],
                total_samples=e.args["totalSamples"],
                block_number=e.block_number,
                tx_hash=e.tx_hash,
                batch_cid=digest_to_cid(bytes(e.args["batchDigest"])),
                log_index=e.log_index,
            )
            for e in events
        ]

        def read(record: BatchRecord) -> bytes | None:
            try:
                return self.ipfs.cat(record.batch_cid, max_size=self.settings.max_update_bytes)
            except IpfsUnavailable:
                raise  # our IPFS node is down: not the relayer's fault, retry the whole round later
            except StorageError as exc:
                log.warning("round %d: batch %s unavailable: %s", state.round, record.batch_cid, exc)
                return None

        approved = self._approved_devices(closed.block_number)

        def is_approved(device: str) -> bool:
            return device.lower() in approved

        accepted, rejected = screen_round_batches(
            self.task.address,
            self.w3.eth.chain_id,
            state.round,
            records,
            read,
            is_approved,
            direct_devices,
            digest_to_cid,
            self.max_samples_per_update,
        )
        self._batch_rejected[state.round] = rejected
        if rejected:
            log.warning("round %d: %d batch entries or batches left out", state.round, len(rejected))
        return [
            Submission(
                a.entry.device,
                a.entry.update_digest,
                a.entry.num_samples,
                a.batch.block_number,
                a.batch.tx_hash,
                (a.batch.block_number, a.batch.log_index, 1 + a.position),
            )
            for a in accepted
        ]

    def prepare(self, state: RoundInfo) -> PreparedResult:
        """Fetch, verify and aggregate the round's updates; publish the model and report. Cached per round."""
        if state.round in self._prepared:
            return self._prepared[state.round]
        self._started.setdefault(state.round, time.perf_counter())
        subs = self.submissions(state)
        previous_cid = digest_to_cid(state.global_model_digest)
        global_weights = self.ipfs.get_weights(previous_cid)
        report = AggregationReport(
            task=self.task.address,
            round=state.round,
            strategy=self.strategy_name,
            strategy_params=dict(self.strategy_spec.params),
            inputs_hash="0x" + state.inputs_hash.hex(),
            previous_model_cid=previous_cid,
        )
        report.rejected.extend(self._batch_rejected.pop(state.round, []))
        previous_state_cid = self._previous_state_cid(state.round) if self.stateful else ""
        weights, new_state_cid = self._aggregate(state, subs, global_weights, report, previous_state_cid)
        model_cid = previous_cid
        if weights is None:
            # Nothing usable: the round keeps the previous model (and server state), and the report says why.
            weights, new_state_cid = global_weights, previous_state_cid
            report.rejected.extend({**e, "reason": "round-not-aggregated"} for e in report.accepted)
            report.accepted = []
        if self.settings.lie:
            weights = lying_model(weights, state.round)
        if weights is not global_weights:
            model_cid = self.ipfs.put_weights(weights, self._metadata("global-model", state.round))
        report.model_cid = model_cid
        report.server_state_cid = new_state_cid
        if self.eval_data is not None:
            report.metrics = self._evaluate(weights)
        report_cid = self.ipfs.add(report.to_json())
        log.info("round %d: prepared model %s and report %s", state.round, model_cid, report_cid)
        prepared = PreparedResult(
            round=state.round,
            inputs_hash=state.inputs_hash,
            model_cid=model_cid,
            model_digest=cid_to_digest(model_cid),
            report_cid=report_cid,
            report_digest=cid_to_digest(report_cid),
            accepted=len(report.accepted),
            rejected=len(report.rejected),
            salt=commit_salt(self.account, self.task.address, state.round),
            metrics=report.metrics,
            # Tasks without a DP ledger agree on epsilon 0; DP tasks on the accountant's ε after this round.
            epsilon_micro=self.private.epsilon_micro(state.round) if self.private is not None else 0,
        )
        # Two rounds are enough: the current one and one that may still be revealed late.
        self._prepared = {r: p for r, p in self._prepared.items() if r >= state.round - 1}
        self._prepared[state.round] = prepared
        return prepared

    def _aggregate(
        self,
        state: RoundInfo,
        subs: list[Submission],
        global_weights: Weights,
        report: AggregationReport,
        previous_state_cid: str,
    ) -> tuple[Weights | None, str]:
        """The new weights (None if the round cannot be aggregated) and the new server state's CID."""
        if self.private is not None and self.spec.privacy.secure_aggregation:
            return self._aggregate_masked(state, subs, global_weights, report, previous_state_cid)
        fedavg = StreamingFedAvg(self.shapes) if self.streaming else None
        updates: list[Update] = []
        entries: dict[str, dict[str, Any]] = {}
        # A fixed order (by device address) makes every reduction, and so the CID, reproducible; the bytes are
        # fetched ahead on a few threads, in that order.
        ordered = sorted(subs, key=lambda s: s.device.lower())
        # A digest counts once per round: the other submissions of a digest are left out before anything is fetched.
        duplicates = duplicate_digests(ordered, lambda digest, devices: self._bound_device(state, digest, devices))
        for index, why in sorted(duplicates.items()):
            sub = ordered[index]
            report.rejected.append({**self._entry(sub), "reason": REASON_DUPLICATE_DIGEST, "detail": why})
            log.warning("round %d: left out the update of %s: %s", state.round, sub.device, why)
        ordered = [sub for index, sub in enumerate(ordered) if index not in duplicates]
        limit = self.bound.limit(global_weights)  # the global model's norm, once per round
        fetched = self._prefetch(ordered)
        try:
            for sub in ordered:
                entry = self._entry(sub)
                try:
                    blob = fetched.result(sub)
                    if self.private is not None and self.spec.privacy.seal_updates:
                        blob = self.private.open_update(blob, state.round, sub.device)  # SealedError: rejected
                    # Who and what the file was made for, before its content: a copied or replayed digest is refused
                    # for what it is (binding-missing / binding-mismatch) however well-formed its weights are.
                    meta = read_metadata(blob, max_bytes=self.settings.max_update_bytes)
                    check_binding(meta, self._expected_binding(state.round, sub.device))
                    weights = decode_weights(blob, max_bytes=self.settings.max_update_bytes)
                    check_weights(weights, self.shapes)  # names, shapes, float32, finite
                    self.bound.check(global_weights, weights, limit)  # UpdateTooLarge: update-too-large
                    if fedavg is not None:
                        fedavg.add(weights, sub.num_samples)
                    else:
                        update = Update(sub.device, weights, sub.num_samples)
                        prepare_updates(global_weights, [update])  # validates shapes, dtypes and finiteness
                        updates.append(update)
                except IpfsUnavailable:
                    raise  # our IPFS node is down: not the device's fault, retry the whole round later
                except (StorageError, InvalidWeights, ValueError) as exc:
                    reason = getattr(exc, "reason", None) or type(exc).__name__
                    report.rejected.append({**entry, "reason": reason, "detail": str(exc)[:300]})
                    log.warning("round %d: rejected update of %s: %s", state.round, sub.device, exc)
                    continue
                if "fedchain.train_seconds" in meta:
                    entry["train_seconds"] = float(meta["fedchain.train_seconds"])
                entries[sub.device] = entry
        finally:
            fetched.close()
        report.accepted = list(entries.values())

        if fedavg is not None:
            if fedavg.count == 0:
                return None, ""
            mean = fedavg.result()
            if not all(np.isfinite(w).all() for w in mean.values()):
                report.note = "the aggregate is not finite (overflow): the round keeps the previous model"
                return None, ""
            return mean, ""
        if not updates:
            return None, previous_state_cid
        server_state = self._load_state(previous_state_cid)
        try:
            result = self.strategy.aggregate(global_weights, updates, server_state)
        except ValueError as exc:  # e.g. fewer updates than the strategy's Byzantine bound needs
            report.note = f"{self.strategy_name} refused the round's {len(updates)} updates: {exc}"
            log.warning("round %d: %s", state.round, report.note)
            return None, previous_state_cid
        if not all(np.isfinite(w).all() for w in result.weights.values()):
            report.note = "the aggregate is not finite (overflow): the round keeps the previous model"
            return None, previous_state_cid
        clipped = set(result.clipped)
        report.accepted = [{**entries[d], **({"clipped": True} if d in clipped else {})} for d in result.accepted]
        report.rejected.extend(
            {**entries[d], "reason": "excluded-by-strategy", "detail": str(why)[:300]}
            for d, why in sorted(result.excluded.items(), key=lambda kv: kv[0].lower())
        )
        state_cid = ""
        if not result.state.empty:
            state_cid = self.ipfs.put_weights(result.state.to_tensors(), self._metadata("server-state", state.round))
        return result.weights, state_cid

    def _aggregate_masked(
        self,
        state: RoundInfo,
        subs: list[Submission],
        global_weights: Weights,
        report: AggregationReport,
        previous_state_cid: str,
    ) -> tuple[Weights | None, str]:
        """Secure aggregation: unmask the sum of the survivors' deltas; the strategy sees only their mean."""
        assert self.private is not None
        entries = {
            sub.device: {"device": sub.device, "cid": sub.cid, "num_samples": sub.num_samples, "tx_hash": sub.tx_hash}
            for sub in subs
        }
        try:
            unmasked = self.private.unmask(state.round, {s.device: s.digest for s in subs}, global_weights)
        except SharesNotYetAvailable as exc:
            raise InputsNotYetVisible(str(exc)) from exc
        except RoundUnrecoverable as exc:
            report.note = str(exc)
            report.rejected = [
                {**e, "reason": exc.culprits[d][0], "detail": exc.culprits[d][1][:300]}
                if d in exc.culprits
                else {**e, "reason": "secure-aggregation-failed"}
                for d, e in entries.items()
            ]
            log.warning("round %d: %s", state.round, exc)
            return None, previous_state_cid
        report.privacy = self.private.report_fields(unmasked)
        survivors = _lower(unmasked.survivors)
        report.accepted = [entries[d] for d in sorted(entries, key=str.lower) if d.lower() in survivors]
        if unmasked.note:
            report.note = unmasked.note
            return None, previous_state_cid
        mean = unmasked.weights
        if self.streaming:
            return mean, ""
        # FedAvgM/FedAdam/FedYogi: their server step on the mean delta, as if it were one update.
        server_state = self._load_state(previous_state_cid)
        result = self.strategy.aggregate(global_weights, [Update(MASKED_SUM_DEVICE, mean, 1)], server_state)
        state_cid = ""
        if not result.state.empty:
            state_cid = self.ipfs.put_weights(result.state.to_tensors(), self._metadata("server-state", state.round))
        return result.weights, state_cid

    def _entry(self, sub: Submission) -> dict[str, Any]:
        """A submission as the round's report lists it."""
        return {"device": sub.device, "cid": sub.cid, "num_samples": sub.num_samples, "tx_hash": sub.tx_hash}

    def _expected_binding(self, round_index: int, device: str) -> UpdateBinding:
        """What an update submitted by `device` in this round must be bound to."""
        return UpdateBinding(self.chain_id, self.task.address, round_index, device)

    def _bound_device(self, state: RoundInfo, digest: bytes, submitters: list[str]) -> str | None:
        """The device named in the binding of the file behind `digest` (a digest submitted more than once this
        round), or None if the file cannot be read or names none. A sealed file opens only for the device it was
        sealed for, so each submitter is tried."""
        try:
            blob = self.ipfs.cat(digest_to_cid(digest), max_size=self.settings.max_update_bytes)
        except IpfsUnavailable:
            raise
        except StorageError:
            return None
        plaintexts = [blob]
        if self.private is not None and self.spec.privacy.seal_updates:
            plaintexts = []
            for device in submitters:
                try:
                    plaintexts.append(self.private.open_update(blob, state.round, device))
                except ValueError:  # SealedError: not sealed for this submitter
                    continue
        for plain in plaintexts:
            try:
                return read_metadata(plain, max_bytes=self.settings.max_update_bytes).get(DEVICE_KEY)
            except StorageError:
                continue
        return None

    def _approved_devices(self, block: int) -> set[str]:
        """Devices approved at `block` (lower-cased), replayed from the approval and removal events up to it: two
        log queries for the whole round instead of one call per batch entry."""
        changes = [
            *self._history.history("DeviceApproved", to_block=block),
            *self._history.history("DeviceRemoved", to_block=block),
        ]
        approved: set[str] = set()
        for event in sorted(changes, key=lambda e: (e.block_number, e.log_index)):
            device = str(event.args["device"]).lower()
            if event.name == "DeviceApproved":
                approved.add(device)
            else:
                approved.discard(device)
        return approved

    def _prefetch(self, subs: list[Submission]) -> _Prefetch:
        return _Prefetch(self.ipfs, subs, self.settings.max_update_bytes, self.settings.fetch_threads)

    def _metadata(self, kind: str, round_index: int) -> dict[str, str]:
        return {"fedchain.kind": kind, "fedchain.round": str(round_index), "fedchain.task": self.task.address}

    def _previous_state_cid(self, round_index: int) -> str:
        """The server state the last finalised round's report points to ("" before the first)."""
        last = None
        for event in self._history.history("AggregateCommitted"):
            if event.args["round"] < round_index:
                last = event
        if last is None:
            return ""
        report = json.loads(self.ipfs.cat(digest_to_cid(bytes(last.args["reportDigest"])), max_size=16 << 20))
        return str(report.get("server_state_cid", ""))

    def _load_state(self, cid: str) -> ServerState:
        if not cid:
            return ServerState()
        return ServerState.from_tensors(self.ipfs.get_weights(cid, max_size=self.settings.max_update_bytes * 4))

    def _evaluate(self, weights: dict[str, np.ndarray]) -> dict[str, float]:
        assert self.eval_data is not None
        model = build_model(self.spec.model, seed=self.spec.seed)
        set_weights(model, weights)
        result = evaluate(model, self.eval_data)
        return {"accuracy": round(result.accuracy, 6), "loss": round(result.loss, 6)}


class _Prefetch:
    """Fetches the round's updates on a few threads, at most `threads` ahead of the one being aggregated, so
    memory stays bounded by a few updates however many there are. `result` raises what the fetch raised."""

    def __init__(self, ipfs: IpfsClient, subs: list[Submission], max_bytes: int, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="fedchain-fetch")
        self._ipfs = ipfs
        self._max = max_bytes
        self._queue = list(subs)
        self._window = max(1, threads) * 2
        self._futures: dict[int, Future[bytes]] = {}
        self._next = 0
        self._fill()

    def _fill(self) -> None:
        while self._next < len(self._queue) and len(self._futures) < self._window:
            sub = self._queue[self._next]
            self._futures[id(sub)] = self._pool.submit(self._ipfs.cat, sub.cid, self._max)
            self._next += 1

    def result(self, sub: Submission) -> bytes:
        future = self._futures.pop(id(sub))
        self._fill()
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
