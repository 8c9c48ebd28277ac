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

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from fedchain.aggregator.agreement import (
    Action,
    AgreementView,
    PreparedResult,
    agreement_step,
    commit_salt,
    late_reveal_round,
)
from fedchain.aggregator.hooks import AFTER_COMMIT, BEFORE_COMMIT, AggregatorHooks
from fedchain.aggregator.inputs import InputsNotYetVisible, Prefetch, SubmissionReader
from fedchain.aggregator.round import (
    UPDATE_ERRORS,
    AggregationReport,
    DecodedUpdate,
    RoundLimits,
    RoundResult,
    Submission,
    aggregate_round,
    aggregate_unmasked,
    decode_update,
    rejection_of,
)
from fedchain.aggregator.screening import REASON_DUPLICATE_DIGEST, duplicate_digests
from fedchain.aggregator.secure import AggregatorPrivacy, RoundUnrecoverable, SharesNotYetAvailable, UnmaskedRound
from fedchain.chain import ContractRevert, EventFollower, Phase, RoundInfo, TaskClient, connect
from fedchain.chain.notify import EventNotifier
from fedchain.chain.task import AggregatorInfo
from fedchain.learning.aggregation import ServerState, build_strategy
from fedchain.learning.aggregation.bound import DEFAULT_MAX_RELATIVE_DISTANCE, UpdateBound
from fedchain.learning.aggregation.registry import OPTIONAL_PARAMS, STATEFUL_STRATEGIES, WEIGHTED_MEAN_STRATEGIES
from fedchain.learning.data import load_dataset
from fedchain.learning.model import build_model, set_weights, weight_shapes
from fedchain.learning.root import root_reference_trainer
from fedchain.learning.spec import TaskSpec
from fedchain.learning.train import evaluate
from fedchain.learning.types import Weights
from fedchain.storage import IpfsClient, IpfsUnavailable, cid_to_digest, digest_to_cid
from fedchain.storage.binding import UpdateBinding

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
    # An update farther from the round's global model than this many times the model's norm is left out
    # ("update-too-large"; see fedchain.learning.aggregation.bound for the measured default); 0 turns it off.
    # Every aggregator of a task must use the same value, or their results differ and the round fails.
    max_update_distance: float = DEFAULT_MAX_RELATIVE_DISTANCE


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


class AggregatorWorker:
    """Aggregates every round of one task as the contract's events announce them, and takes part in agreement.

    The I/O shell: it reads the chain's state and the round's inputs, asks `agreement_step` what to do and
    `aggregate_round` / `aggregate_unmasked` for the new model, and sends the transactions and files that follow.
    """

    def __init__(
        self, settings: AggregatorSettings, account: LocalAccount, hooks: AggregatorHooks | None = None
    ) -> None:
        self.settings = settings
        self.account = account
        self.hooks = hooks if hooks is not None else AggregatorHooks()
        self.w3 = connect(settings.rpc_url, wait=30)
        self.task = TaskClient.for_account(self.w3, settings.task_address, account)
        if not self.task.is_aggregator(account.address):
            raise PermissionError(f"{account.address} does not hold AGGREGATOR_ROLE on task {self.task.address}")
        self.ipfs = IpfsClient(settings.ipfs_api)
        config = self.task.config()
        self.threshold = config.aggregator_threshold
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
        self.streaming = self.strategy_name in WEIGHTED_MEAN_STRATEGIES and not (
            set(OPTIONAL_PARAMS) & set(self.strategy_spec.params)
        )
        self.stateful = self.strategy_name in STATEFUL_STRATEGIES
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
        self.limits = RoundLimits(self.shapes, UpdateBound(settings.max_update_distance))
        self.eval_data = load_dataset(self.spec.dataset)[1] if settings.evaluate else None
        self.follower = EventFollower(self.w3, self.task.address, self.task.abi, from_block=self.w3.eth.block_number)
        self.notifier = EventNotifier(
            settings.rpc_url, [self.task.address], poll_interval=settings.poll_interval, push=settings.push
        )
        self._history = EventFollower(self.w3, self.task.address, self.task.abi)
        self.inputs = SubmissionReader(
            self._history,
            self.task.address,
            self.chain_id,
            self.ipfs,
            config.max_samples_per_update,
            settings.max_update_bytes,
        )
        self._next_close_attempt = 0.0
        self._prepared: dict[int, PreparedResult] = {}
        self._commit_gas: dict[int, int] = {}
        self._started: dict[int, float] = {}
        self._unrevealable: set[int] = set()

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
                info = self.task.aggregator_info(self.address)
                outcome = self._reveal_late(self._view(state, info), info)
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
            info = self.task.aggregator_info(self.address)
            view = self._view(state, info)
            late = self._reveal_late(view, info)
            if late is not None:
                return late
            return self._act(state, view, info)
        except InputsNotYetVisible as exc:
            log.warning("%s", exc)
            return None
        except IpfsUnavailable as exc:
            log.warning("IPFS unavailable, will retry: %s", exc)
            return None

    def _view(self, state: RoundInfo, info: AggregatorInfo) -> AgreementView:
        """The agreement machine's input: the round's state and ours, read from chain (and the wall clock)."""
        committed = info.committed_round == state.round
        return AgreementView(
            round=state.round,
            phase=state.phase,
            committed_round=info.committed_round,
            revealed=info.revealed,
            alone=state.phase == Phase.AGGREGATING and not committed and self._alone(),
            close_due=self._close_due(state),
            unrevealable=frozenset(self._unrevealable),
            prepared=frozenset(self._prepared),
        )

    def _act(self, state: RoundInfo, view: AgreementView, info: AggregatorInfo) -> CommitOutcome | None:
        action = agreement_step(view)
        if action in (Action.SUBMIT, Action.COMMIT):
            try:
                if action is Action.SUBMIT:
                    return self._submit_result(state)
                self._commit(state)
                return None
            except InputsNotYetVisible as exc:
                # Not ready (for example too few unmasking shares yet): a window that expires meanwhile is closed
                # below, failing the round, which then runs again with the previous model.
                log.warning("%s", exc)
                action = agreement_step(replace(view, inputs_ready=False, close_due=self._close_due(state)))
        if action is Action.REVEAL:
            return self._reveal(state.round, info.commitment, state)
        if action is Action.CLOSE_WINDOW:
            self._next_close_attempt = time.monotonic() + self.settings.state_recheck
            try:
                self.task.close_aggregation_window(state.round)
                log.info("round %d: %s window expired; closed it", state.round, state.phase.name.lower())
            except ContractRevert as exc:
                log.info("round %d: window close not needed (%s)", state.round, exc.error)
        elif action is Action.CLOSE_ROUND:
            self._next_close_attempt = time.monotonic() + self.settings.state_recheck
            try:
                self.task.close_round(state.round)
                # short of minUpdates: a plain round is extended, a secure-aggregation round fails (the next opens)
                log.info("round %d: deadline passed, closed it", state.round)
            except ContractRevert as exc:  # closed by someone else first, or our clock runs ahead of the chain's
                log.info("round %d: close not needed (%s)", state.round, exc.error)
        return None

    def _alone(self) -> bool:
        """One aggregator and threshold 1: the round finalises in one transaction, without commit and reveal (the
        round's n, fixed when it opened, is read each round: the admin may grant or revoke the role meanwhile)."""
        return self.threshold == 1 and self.task.aggregation_state().aggregators == 1

    def _submit_result(self, state: RoundInfo) -> CommitOutcome | None:
        prepared = self.prepare(state)
        self.hooks.at(BEFORE_COMMIT, state.round)
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
        self.hooks.at(AFTER_COMMIT, state.round)
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
        self.hooks.at(BEFORE_COMMIT, state.round)
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
        self.hooks.at(AFTER_COMMIT, state.round)

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

    def _reveal_late(self, view: AgreementView, info: AggregatorInfo) -> CommitOutcome | None:
        """Reveal a committed result of an earlier round that others finalised before our reveal."""
        r = late_reveal_round(view)
        if r is None:
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

    def prepare(self, state: RoundInfo) -> PreparedResult:
        """Fetch, verify and aggregate the round's updates; publish the model and report. Cached per round."""
        if state.round in self._prepared:
            return self._prepared[state.round]
        self._started.setdefault(state.round, time.perf_counter())
        inputs = self.inputs.read(state)
        previous_cid = digest_to_cid(state.global_model_digest)
        global_weights = self.ipfs.get_weights(previous_cid)
        previous_state_cid = self.inputs.previous_state_cid(state.round) if self.stateful else ""
        server_state = self.inputs.server_state(previous_state_cid)
        if self.private is not None and self.spec.privacy.secure_aggregation:
            result = self._aggregate_masked(state, inputs.accepted, global_weights, server_state, inputs.batch_rejected)
        else:
            result = self._aggregate(state, inputs.accepted, global_weights, server_state, inputs.batch_rejected)
        weights = self.hooks.published_model(result.weights, state.round)
        model_cid = previous_cid
        if weights is not global_weights:
            model_cid = self.ipfs.put_weights(weights, self._metadata("global-model", state.round))
        report = AggregationReport(
            task=self.task.address,
            round=state.round,
            strategy=self.strategy_name,
            strategy_params=dict(self.strategy_spec.params),
            inputs_hash="0x" + state.inputs_hash.hex(),
            previous_model_cid=previous_cid,
            model_cid=model_cid,
            accepted=result.accepted,
            rejected=result.rejected,
            server_state_cid=self._state_cid(result, previous_state_cid, state.round),
            note=result.note,
            privacy=result.privacy,
        )
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

    def _state_cid(self, result: RoundResult, previous_state_cid: str, round_index: int) -> str:
        """The server state the report points the next round to: the previous one when the round kept the model."""
        if not result.aggregated:
            return previous_state_cid
        if result.server_state is None or result.server_state.empty:
            return ""
        return self.ipfs.put_weights(result.server_state.to_tensors(), self._metadata("server-state", round_index))

    def _aggregate(
        self,
        state: RoundInfo,
        subs: list[Submission],
        global_weights: Weights,
        server_state: ServerState,
        batch_rejected: list[dict[str, Any]],
    ) -> RoundResult:
        """Plain (or sealed) updates, aggregated in a fixed order (by device address): every reduction, and so the
        CID, is reproducible. The bytes are fetched ahead on a few threads, in that order."""
        ordered = sorted(subs, key=lambda s: s.device.lower())
        # A digest counts once per round: the other submissions of a digest are left out before anything is fetched.
        opener = self._open_update if self.private is not None and self.spec.privacy.seal_updates else None
        duplicates = duplicate_digests(
            ordered, lambda digest, devices: self.inputs.bound_device(state.round, digest, devices, opener)
        )
        rejected = list(batch_rejected)
        for index, why in sorted(duplicates.items()):
            sub = ordered[index]
            rejected.append({**sub.entry(), "reason": REASON_DUPLICATE_DIGEST, "detail": why})
            log.warning("round %d: left out the update of %s: %s", state.round, sub.device, why)
        ordered = [sub for index, sub in enumerate(ordered) if index not in duplicates]
        fetched = Prefetch(self.ipfs, ordered, self.settings.max_update_bytes, self.settings.fetch_threads)
        try:
            result = aggregate_round(
                global_weights,
                self._decoded(state.round, ordered, fetched),
                None if self.streaming else self.strategy,
                server_state,
                self.limits,
                rejected,
                self.strategy_name,
            )
        finally:
            fetched.close()
        for entry in result.rejected[len(rejected) :]:
            log.warning("round %d: rejected update of %s: %s", state.round, entry["device"], entry["reason"])
        if result.note:
            log.warning("round %d: %s", state.round, result.note)
        return result

    def _decoded(self, round_index: int, ordered: list[Submission], fetched: Prefetch) -> Iterator[DecodedUpdate]:
        """The round's updates as `aggregate_round` reads them, one at a time: fetched, opened if sealed, decoded."""
        for sub in ordered:
            try:
                blob = fetched.result(sub)
                if self.private is not None and self.spec.privacy.seal_updates:
                    blob = self.private.open_update(blob, round_index, sub.device)  # SealedError: rejected
            except IpfsUnavailable:
                raise  # our IPFS node is down: not the device's fault, retry the whole round later
            except UPDATE_ERRORS as exc:
                yield DecodedUpdate(sub, rejection=rejection_of(exc))
                continue
            expected = UpdateBinding(self.chain_id, self.task.address, round_index, sub.device)
            yield decode_update(sub, blob, expected, self.settings.max_update_bytes)

    def _aggregate_masked(
        self,
        state: RoundInfo,
        subs: list[Submission],
        global_weights: Weights,
        server_state: ServerState,
        batch_rejected: list[dict[str, Any]],
    ) -> RoundResult:
        """Secure aggregation: unmask the sum of the survivors' deltas; the strategy sees only their mean."""
        assert self.private is not None
        unmasked: UnmaskedRound | RoundUnrecoverable
        try:
            unmasked = self.private.unmask(state.round, {s.device: s.digest for s in subs}, global_weights)
        except SharesNotYetAvailable as exc:
            raise InputsNotYetVisible(str(exc)) from exc
        except RoundUnrecoverable as exc:
            log.warning("round %d: %s", state.round, exc)
            unmasked = exc
        strategy = None if self.streaming else self.strategy
        return aggregate_unmasked(global_weights, subs, unmasked, strategy, server_state, batch_rejected)

    def _open_update(self, blob: bytes, round_index: int, device: str) -> bytes:
        assert self.private is not None
        return self.private.open_update(blob, round_index, device)

    def _metadata(self, kind: str, round_index: int) -> dict[str, str]:
        return {"fedchain.kind": kind, "fedchain.round": str(round_index), "fedchain.task": self.task.address}

    def _evaluate(self, weights: dict[str, np.ndarray]) -> dict[str, float]:
        assert self.eval_data is not None
        model = build_model(self.spec.model, seed=self.spec.seed)
        set_weights(model, weights)
        result = evaluate(model, self.eval_data)
        return {"accuracy": round(result.accuracy, 6), "loss": round(result.loss, 6)}
