"""The aggregator of an asynchronous buffered task (BufferedTask.sol): when a buffer goes to aggregation it reads the
buffer's entries from the UpdateBuffered events (checked against the chain's inputs hash), fetches and checks every
update (binding to its base version, shapes, bound), rebases and weighs them by staleness
(fedchain.aggregator.buffered_round), publishes the next version's model and report on IPFS, and takes part in the
k-of-n commit-reveal agreement.

Restart-safe like the synchronous worker: the inputs are on chain, the salt derives from the key, the aggregation
is deterministic, so a restarted aggregator recomputes the result it committed to and reveals it. A stateful server
optimiser's state (FedAvgM's momentum, FedAdam's and FedYogi's moments) goes from version to version as in
synchronous rounds: stored on IPFS, named by the version's report (`server_state_cid`), read back from the report of
the version the next buffer builds on; the report's digest is part of what k-of-n aggregators agree on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from fedchain.aggregator.agreement import Action, commit_salt
from fedchain.aggregator.buffered_round import (
    BufferedView,
    BufferInputs,
    aggregate_buffer,
    buffer_report,
    buffer_weights,
    buffered_step,
    entry_fields,
    entry_submission,
)
from fedchain.aggregator.inputs import InputsNotYetVisible
from fedchain.aggregator.round import UPDATE_ERRORS, DecodedUpdate, RoundLimits, decode_update
from fedchain.aggregator.worker import AggregatorSettings
from fedchain.chain import ContractRevert, EventFollower, connect
from fedchain.chain.artifacts import load_artifact
from fedchain.chain.buffered import (
    CONTRACT_NAME,
    AggPhase,
    AggregationState,
    BufferedTaskClient,
    BufferEntry,
    BufferStatus,
    Status,
    buffer_inputs_hash,
    result_commitment,
)
from fedchain.chain.notify import EventNotifier
from fedchain.learning.aggregation import ServerState, build_strategy
from fedchain.learning.aggregation.bound import UpdateBound
from fedchain.learning.aggregation.registry import OPTIONAL_PARAMS, STATEFUL_STRATEGIES, WEIGHTED_MEAN_STRATEGIES
from fedchain.learning.data import load_dataset
from fedchain.learning.model import build_model, set_weights, weight_shapes
from fedchain.learning.root import root_reference_trainer
from fedchain.learning.spec import TaskSpec
from fedchain.learning.staleness import check_buffered_strategy
from fedchain.learning.train import evaluate
from fedchain.learning.types import Weights
from fedchain.protocol.canonical_json import canonical_json
from fedchain.storage import IpfsClient, IpfsUnavailable, cid_to_digest, digest_to_cid
from fedchain.storage.binding import UpdateBinding

log = logging.getLogger("fedchain.aggregator.buffered")

WAKE_EVENTS = {
    "BufferFull",
    "AggregationOpened",
    "ResultCommitted",
    "RevealOpened",
    "VersionPublished",
    "AggregationFailed",
    "BufferDiscarded",
    "UpdateBuffered",
    "TaskFinished",
    "TaskCancelled",
}
MOVED_ON = {"WrongPhase", "WrongBuffer", "AlreadyCommitted", "AlreadyRevealed", "RevealWindowClosed", "TaskNotRunning"}


@dataclass(frozen=True)
class BufferResult:
    """A buffer's aggregate as this aggregator computed it, ready to commit (for any attempt) and reveal."""

    buffer: int
    version: int  # the version it builds on; it publishes version + 1
    inputs_hash: bytes
    model_cid: str
    report_cid: str
    accepted: int
    rejected: int
    salt: bytes
    metrics: dict[str, float] = field(default_factory=dict)

    def commitment(self, task: str, attempt: int, aggregator: str) -> bytes:
        return result_commitment(
            task,
            self.buffer,
            attempt,
            aggregator,
            self.inputs_hash,
            cid_to_digest(self.model_cid),
            cid_to_digest(self.report_cid),
            self.accepted,
            self.salt,
        )


class BufferedAggregator:
    """Aggregates every buffer of one buffered task and takes part in its agreement."""

    def __init__(self, settings: AggregatorSettings, account: LocalAccount) -> None:
        self.settings = settings
        self.account = account
        self.w3 = connect(settings.rpc_url, wait=30)
        self.chain_id = int(self.w3.eth.chain_id)
        self.task = BufferedTaskClient.for_account(self.w3, settings.task_address, account)
        if not self.task.is_aggregator(account.address):
            raise PermissionError(f"{account.address} does not hold AGGREGATOR_ROLE on task {self.task.address}")
        self.ipfs = IpfsClient(settings.ipfs_api)
        self.config = self.task.config()
        self.spec = TaskSpec.from_json(self.ipfs.cat(digest_to_cid(self.config.model_spec_digest), max_size=1 << 20))
        self.strategy_spec = self.spec.strategy_spec()
        if self.strategy_spec.id != self.config.strategy_id:
            raise ValueError(
                f"the task's description names strategy {self.strategy_spec.name!r} but the contract says id "
                f"{self.config.strategy_id}: refusing a task that says two things"
            )
        check_buffered_strategy(
            self.strategy_spec, self.spec.privacy.secure_aggregation, self.spec.privacy.seal_updates
        )
        reference = root_reference_trainer(self.spec) if self.strategy_spec.root_samples else None
        self.strategy = build_strategy(self.strategy_spec, reference=reference)
        self.streaming = self.strategy_spec.name in WEIGHTED_MEAN_STRATEGIES and not (
            set(OPTIONAL_PARAMS) & set(self.strategy_spec.params)
        )
        self.limits = RoundLimits(weight_shapes(self.spec.model), UpdateBound(settings.max_update_distance))
        self.eval_data = load_dataset(self.spec.dataset)[1] if settings.evaluate else None
        abi = load_artifact(CONTRACT_NAME).abi
        self.follower = EventFollower(self.w3, self.task.address, abi, from_block=self.w3.eth.block_number)
        self._history = EventFollower(self.w3, self.task.address, abi)
        self.notifier = EventNotifier(
            settings.rpc_url, [self.task.address], poll_interval=settings.poll_interval, push=settings.push
        )
        self._prepared: dict[int, BufferResult] = {}
        self._next_close = 0.0

    @property
    def address(self) -> str:
        return self.account.address

    def run(self) -> int:
        """Serve the task until it finishes or is cancelled; returns the buffers revealed here."""
        revealed = 0
        try:
            while True:
                filling = self.task.filling_buffer()
                if filling.status in (Status.FINISHED, Status.CANCELLED):
                    revealed += self._reveal_late()
                    log.info("task %s is %s", self.task.address, filling.status.name.lower())
                    return revealed
                try:
                    revealed += self._reveal_late()
                    if self.step(self.task.aggregation_state(), filling.count):
                        revealed += 1
                        continue
                except InputsNotYetVisible as exc:
                    log.warning("%s", exc)
                except IpfsUnavailable as exc:
                    log.warning("IPFS unavailable, will retry: %s", exc)
                self._wait_for_events()
        finally:
            self.notifier.close()

    def step(self, state: AggregationState, filling_count: int) -> bool:
        """Do what the pending buffer's state asks for; True when this aggregator revealed."""
        info = self.task.aggregator_info(self.address)
        if info.suspended:
            raise PermissionError(f"aggregator {self.address} is suspended (maxAggregatorFaults reached)")
        committed = info.committed_buffer == state.buffer and info.committed_attempt == state.attempt
        now_due = time.monotonic() >= self._next_close
        view = BufferedView(
            phase=state.phase,
            committed=committed,
            revealed=committed and info.revealed,
            close_due=state.phase != AggPhase.NONE and time.time() >= state.deadline and now_due,
            early_close_due=state.phase == AggPhase.NONE and self._early_close_due(filling_count) and now_due,
        )
        action = buffered_step(view)
        if action is Action.COMMIT:
            self._commit(state)
        elif action is Action.REVEAL:
            return self._reveal(state.buffer, info.commitment, info.committed_attempt)
        elif action in (Action.CLOSE_WINDOW, Action.CLOSE_ROUND):
            self._next_close = time.monotonic() + self.settings.state_recheck
            try:
                if action is Action.CLOSE_WINDOW:
                    self.task.close_aggregation_window(state.buffer)
                    log.info("buffer %d: %s window expired; closed it", state.buffer, state.phase.name.lower())
                else:
                    buffer = self.task.filling_buffer().buffer
                    self.task.close_buffer(buffer)
                    log.info("buffer %d: closed early with %d updates", buffer, filling_count)
            except ContractRevert as exc:
                log.info("close not needed (%s)", exc.error)
        return False

    def _early_close_due(self, count: int) -> bool:
        duration = self.config.buffer_duration
        if duration == 0 or count == 0 or count < self.config.min_buffer_size:
            return False
        return time.time() >= self.task.filling_opened_at() + duration

    def _commit(self, state: AggregationState) -> None:
        result = self.prepare(state.buffer)
        try:
            self.task.commit_result(state.buffer, result.commitment(self.task.address, state.attempt, self.address))
        except ContractRevert as exc:
            if exc.error in MOVED_ON:
                log.info("buffer %d: not committing (%s)", state.buffer, exc.error)
                return
            raise
        log.info("buffer %d attempt %d: committed to %s", state.buffer, state.attempt, result.model_cid)

    def _reveal(self, buffer: int, commitment: bytes, attempt: int) -> bool:
        result = self._prepared.get(buffer) or self.prepare(buffer)
        if result.commitment(self.task.address, attempt, self.address) != commitment:
            log.error("buffer %d: our recomputed result does not match our commitment; cannot reveal", buffer)
            return False
        try:
            self.task.reveal_result(
                buffer,
                result.inputs_hash,
                cid_to_digest(result.model_cid),
                cid_to_digest(result.report_cid),
                result.accepted,
                result.salt,
            )
        except ContractRevert as exc:
            if exc.error in MOVED_ON:
                log.info("buffer %d: not revealing (%s)", buffer, exc.error)
                self._prepared.pop(buffer, None)
                return False
            raise
        log.info(
            "buffer %d: revealed version %d = %s from %d updates (%d rejected), metrics %s",
            buffer,
            result.version + 1,
            result.model_cid,
            result.accepted,
            result.rejected,
            result.metrics,
        )
        return True

    def _reveal_late(self) -> int:
        """Reveal a committed result of a buffer that others published before our reveal (so that it is on the
        record, and a dissent a fault)."""
        info = self.task.aggregator_info(self.address)
        b = info.committed_buffer
        if b == 0 or info.revealed or b not in self._prepared:
            return 0
        if self.task.final_result_key(b) == b"\x00" * 32:
            return 0  # not published (yet), or failed: handled by `step`
        return int(self._reveal(b, info.commitment, info.committed_attempt))

    def entries(self, buffer: int) -> tuple[list[BufferEntry], bytes, int]:
        """The buffer's entries from its UpdateBuffered events in position order, checked against the chain's
        inputs hash; with that hash and the version the buffer builds on."""
        info = self.task.buffer_info(buffer)
        # bufferInfo's version: the one an aggregating buffer builds on, the one a published buffer produced
        version = info.version - 1 if info.status == BufferStatus.PUBLISHED else info.version
        events = sorted(self._history.history("UpdateBuffered", buffer=buffer), key=lambda e: e.args["position"])
        entries = [
            BufferEntry(
                e.args["device"],
                bytes(e.args["updateDigest"]),
                e.args["numSamples"],
                e.args["baseVersion"],
                e.args["staleness"],
            )
            for e in events
        ]
        if len(entries) != info.count or buffer_inputs_hash(self.task.address, buffer, entries) != info.inputs_hash:
            raise InputsNotYetVisible(f"buffer {buffer}: its events do not match the chain's inputs hash yet")
        return entries, info.inputs_hash, version

    def prepare(self, buffer: int) -> BufferResult:
        """Fetch, check, rebase, weigh and aggregate the buffer's updates; publish model and report. Cached."""
        if buffer in self._prepared:
            return self._prepared[buffer]
        started = time.perf_counter()
        entries, inputs_hash, version = self.entries(buffer)
        previous_cid = digest_to_cid(self.task.version_digest(version))
        current = self.ipfs.get_weights(previous_cid)
        state_cid = self._server_state_cid(version)
        if state_cid:
            log.info("buffer %d: server state %s (from version %d's report)", buffer, state_cid, version)
        weights = buffer_weights(
            entries, self.strategy_spec, self.config.weighting_id, self.config.weighting_param_micro
        )
        bases: dict[int, Weights] = {version: current}
        decoded: list[DecodedUpdate] = []
        for entry, weight in zip(entries, weights, strict=True):
            if entry.base_version not in bases:
                bases[entry.base_version] = self.ipfs.get_weights(
                    digest_to_cid(self.task.version_digest(entry.base_version))
                )
            sub = entry_submission(entry, weight)
            expected = UpdateBinding(self.chain_id, self.task.address, entry.base_version, entry.device)
            try:
                blob = self.ipfs.cat(sub.cid, max_size=self.settings.max_update_bytes)
            except IpfsUnavailable:
                raise
            except UPDATE_ERRORS as exc:
                decoded.append(DecodedUpdate(sub, rejection=(type(exc).__name__, str(exc)[:300])))
                continue
            decoded.append(decode_update(sub, blob, expected, self.settings.max_update_bytes))
        result = aggregate_buffer(
            BufferInputs(current, entries, decoded, bases, weights),
            self.strategy_spec,
            None if self.streaming else self.strategy,
            self._server_state(state_cid),
            self.limits,
        )
        for entry in result.rejected:
            log.warning("buffer %d: rejected update of %s: %s", buffer, entry["device"], entry["reason"])
        model_cid = previous_cid
        if result.aggregated:
            meta = {"fedchain.kind": "global-model", "fedchain.version": str(version + 1)}
            meta["fedchain.task"] = self.task.address
            model_cid = self.ipfs.put_weights(result.weights, meta)
        if result.aggregated:  # a buffer that kept the model keeps the state too
            state = result.server_state
            if state is None or state.empty:
                state_cid = ""
            else:
                state_meta = {"fedchain.kind": "server-state", "fedchain.version": str(version + 1)}
                state_cid = self.ipfs.put_weights(
                    state.to_tensors(), {**state_meta, "fedchain.task": self.task.address}
                )
        metrics = self._evaluate(result.weights) if self.eval_data is not None else {}
        fields = {e.device: entry_fields(e, w) for e, w in zip(entries, weights, strict=True)}
        report = buffer_report(
            self.task.address,
            buffer,
            version,
            self.strategy_spec,
            (self.config.weighting_id, self.config.weighting_param_micro),
            inputs_hash,
            previous_cid,
            model_cid,
            result,
            fields,
            metrics,
            state_cid,
        )
        report_cid = self.ipfs.add(canonical_json(report, ascii_only=True, allow_nan=True))
        prepared = BufferResult(
            buffer,
            version,
            inputs_hash,
            model_cid,
            report_cid,
            len(result.accepted),
            len(result.rejected),
            commit_salt(self.account, self.task.address, buffer),
            metrics,
        )
        log.info(
            "buffer %d: prepared version %d (%s) from %d updates, staleness %s, in %.2fs",
            buffer,
            version + 1,
            model_cid,
            prepared.accepted,
            [e.staleness for e in entries],
            time.perf_counter() - started,
        )
        self._prepared = {b: p for b, p in self._prepared.items() if b >= buffer - 1}
        self._prepared[buffer] = prepared
        return prepared

    def _server_state_cid(self, version: int) -> str:
        """The server state `version`'s report names ("" for the initial version and stateless strategies)."""
        if version == 0 or self.strategy_spec.name not in STATEFUL_STRATEGIES:
            return ""
        events = list(self._history.history("VersionPublished", version=version))
        if not events:
            raise InputsNotYetVisible(f"version {version}: its VersionPublished event is not visible yet")
        digest = bytes(events[-1].args["reportDigest"])
        report = json.loads(self.ipfs.cat(digest_to_cid(digest), max_size=16 << 20))
        return str(report.get("server_state_cid", ""))

    def _server_state(self, cid: str) -> ServerState:
        if not cid:
            return ServerState()
        return ServerState.from_tensors(self.ipfs.get_weights(cid, max_size=self.settings.max_update_bytes * 4))

    def _evaluate(self, weights: Weights) -> dict[str, float]:
        assert self.eval_data is not None
        model = build_model(self.spec.model, seed=self.spec.seed)
        set_weights(model, weights)
        result = evaluate(model, self.eval_data)
        return {"accuracy": round(result.accuracy, 6), "loss": round(result.loss, 6)}

    def _wait_for_events(self) -> None:
        deadline = time.monotonic() + self.settings.state_recheck
        while time.monotonic() < deadline:
            if any(e.name in WAKE_EVENTS for e in self.follower.poll()):
                return
            self.notifier.wait(deadline - time.monotonic())
