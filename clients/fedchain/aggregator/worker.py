"""The off-chain aggregator: triggered by contract events, it aggregates a round's updates and commits the result.

Restart-safe by construction: everything it needs is on chain (the round's phase, its submissions as events and
the running inputs hash) or on IPFS, aggregation is deterministic, and the contract accepts one commit per round.
Killed at any point and restarted, it recomputes the same model and commits it once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from fedchain.chain import ContractRevert, EventFollower, Phase, RoundInfo, TaskClient, connect, inputs_hash
from fedchain.learning.aggregation import StreamingFedAvg
from fedchain.learning.data import load_dataset
from fedchain.learning.model import InvalidWeights, build_model, set_weights, weight_shapes
from fedchain.learning.spec import TaskSpec
from fedchain.learning.train import evaluate
from fedchain.storage import IpfsClient, IpfsUnavailable, StorageError, cid_to_digest, digest_to_cid, read_metadata
from fedchain.storage.codec import decode_weights

log = logging.getLogger("fedchain.aggregator")

STRATEGIES = {0: "fedavg"}
# Events after which the aggregator re-reads the task's state.
WAKE_EVENTS = {"RoundReadyForAggregation", "RoundOpened", "UpdateSubmitted", "TaskFinished", "TaskCancelled"}
# Reverts that mean another commit (ours before a restart, or another aggregator's) already closed the round.
ALREADY_COMMITTED = {"WrongPhase", "WrongRound"}


# Fault injection for the restart tests: "before-commit:ROUND" or "after-commit:ROUND" makes the process die there,
# as a power cut would. Unset in normal operation.
CRASH_ENV = "FEDCHAIN_AGGREGATOR_CRASH"


def _crash_point(point: str, round_index: int) -> None:
    if os.environ.get(CRASH_ENV) == f"{point}:{round_index}":
        log.error("fault injection: dying %s of round %d", point, round_index)
        logging.shutdown()
        os._exit(86)


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
    state_recheck: float = 5.0
    close_expired_rounds: bool = True


@dataclass(frozen=True)
class Submission:
    device: str
    digest: bytes
    num_samples: int
    block_number: int
    tx_hash: str

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
    model_cid: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class CommitOutcome:
    round: int
    model_cid: str
    report_cid: str
    accepted: int
    rejected: int
    gas_used: int
    seconds: float
    metrics: dict[str, float]


class AggregatorWorker:
    """Aggregates every round of one task as the contract's events announce them."""

    def __init__(self, settings: AggregatorSettings, account: LocalAccount) -> None:
        self.settings = settings
        self.account = account
        self.w3 = connect(settings.rpc_url, wait=30)
        self.task = TaskClient.for_account(self.w3, settings.task_address, account)
        if not self.task.is_aggregator(account.address):
            raise PermissionError(f"{account.address} does not hold AGGREGATOR_ROLE on task {self.task.address}")
        self.ipfs = IpfsClient(settings.ipfs_api)
        config = self.task.config()
        if config.strategy_id not in STRATEGIES:
            raise ValueError(f"task uses strategy id {config.strategy_id}, which this aggregator does not implement")
        self.strategy = STRATEGIES[config.strategy_id]
        self.spec = TaskSpec.from_json(self.ipfs.cat(digest_to_cid(config.model_spec_digest), max_size=1 << 20))
        self.shapes = weight_shapes(self.spec.model)
        self.eval_data = load_dataset(self.spec.dataset)[1] if settings.evaluate else None
        self.follower = EventFollower(self.w3, self.task.address, self.task.abi, from_block=self.w3.eth.block_number)
        self._history = EventFollower(self.w3, self.task.address, self.task.abi)
        self._next_close_attempt = 0.0

    def run(self, on_commit: Callable[[CommitOutcome], None] | None = None) -> int:
        """Serve the task until it finishes or is cancelled; returns the number of rounds committed here."""
        committed = 0
        while True:
            state = self.task.current_round()
            if state.phase in (Phase.FINISHED, Phase.CANCELLED):
                log.info("task %s is %s", self.task.address, state.phase.name.lower())
                return committed
            outcome = self.step(state)
            if outcome is not None:
                committed += 1
                if on_commit is not None:
                    on_commit(outcome)
                continue
            self._wait_for_events(state)

    def step(self, state: RoundInfo) -> CommitOutcome | None:
        """Do what the round's state asks for: aggregate, or close an expired round."""
        if state.phase == Phase.AGGREGATING:
            try:
                return self.aggregate_round(state)
            except InputsNotYetVisible as exc:
                log.warning("%s", exc)
            except IpfsUnavailable as exc:
                log.warning("IPFS unavailable, will retry: %s", exc)
        elif state.phase == Phase.OPEN and self._close_due(state):
            self._next_close_attempt = time.monotonic() + self.settings.state_recheck
            try:
                self.task.close_round(state.round)
                log.info("round %d: deadline passed, closed it (or extended it if short of updates)", state.round)
            except ContractRevert as exc:  # closed by someone else first, or our clock runs ahead of the chain's
                log.info("round %d: close not needed (%s)", state.round, exc.error)
        return None

    def _close_due(self, state: RoundInfo) -> bool:
        """Whether to try closing an open round now. Wall-clock time: an idle devnet mines no blocks, so the
        latest block's timestamp stands still; attempts are spaced so a skewed clock cannot spam transactions."""
        return (
            self.settings.close_expired_rounds
            and time.time() >= state.deadline
            and time.monotonic() >= self._next_close_attempt
        )

    def _wait_for_events(self, state: RoundInfo) -> None:
        deadline = time.monotonic() + self.settings.state_recheck
        if state.phase == Phase.OPEN:
            deadline = min(deadline, time.monotonic() + max(0.0, state.deadline - time.time()) + 0.5)
        while time.monotonic() < deadline:
            if any(e.name in WAKE_EVENTS for e in self.follower.poll()):
                return
            time.sleep(self.settings.poll_interval)

    def submissions(self, state: RoundInfo) -> list[Submission]:
        """The round's submissions in chain order, checked against the chain's running inputs hash."""
        opened = next(self._history.history("RoundOpened", round=state.round), None)
        from_block = opened.block_number if opened is not None else 0
        subs = [
            Submission(e.args["device"], bytes(e.args["updateDigest"]), e.args["numSamples"], e.block_number, e.tx_hash)
            for e in self._history.history("UpdateSubmitted", from_block=from_block, round=state.round)
        ]
        expected = inputs_hash(self.task.address, state.round, [(s.device, s.digest, s.num_samples) for s in subs])
        if expected != state.inputs_hash or len(subs) != state.updates:
            raise InputsNotYetVisible(
                f"round {state.round}: {len(subs)} submission events do not match the chain's inputs hash "
                f"({state.updates} updates); retrying"
            )
        return subs

    def aggregate_round(self, state: RoundInfo) -> CommitOutcome | None:
        """Fetch, verify and aggregate the round's updates; publish the model and report; commit once."""
        started = time.perf_counter()
        subs = self.submissions(state)
        previous_cid = digest_to_cid(state.global_model_digest)
        report = AggregationReport(
            task=self.task.address,
            round=state.round,
            strategy=self.strategy,
            inputs_hash="0x" + state.inputs_hash.hex(),
            previous_model_cid=previous_cid,
        )
        fedavg = StreamingFedAvg(self.shapes)
        # A fixed order (by device address) makes the float reduction, and so the CID, reproducible.
        for sub in sorted(subs, key=lambda s: s.device.lower()):
            entry = {"device": sub.device, "cid": sub.cid, "num_samples": sub.num_samples, "tx_hash": sub.tx_hash}
            try:
                blob = self.ipfs.cat(sub.cid, max_size=self.settings.max_update_bytes)
                weights = decode_weights(blob, max_bytes=self.settings.max_update_bytes)
                fedavg.add(weights, sub.num_samples)
                meta = read_metadata(blob)
            except IpfsUnavailable:
                raise  # our IPFS node is down: not the device's fault, retry the whole round later
            except (StorageError, InvalidWeights, ValueError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                report.rejected.append({**entry, "reason": reason, "detail": str(exc)[:300]})
                log.warning("round %d: rejected update of %s: %s", state.round, sub.device, exc)
                continue
            if "fedchain.train_seconds" in meta:
                entry["train_seconds"] = float(meta["fedchain.train_seconds"])
            report.accepted.append(entry)

        if fedavg.count > 0:
            model_weights = fedavg.result()
            model_cid = self.ipfs.put_weights(
                model_weights,
                {
                    "fedchain.kind": "global-model",
                    "fedchain.round": str(state.round),
                    "fedchain.task": self.task.address,
                },
            )
        else:
            # Nothing usable: the round keeps the previous model, and the report says why.
            model_weights = self.ipfs.get_weights(previous_cid)
            model_cid = previous_cid
        report.model_cid = model_cid
        if self.eval_data is not None:
            report.metrics = self._evaluate(model_weights)
        report_cid = self.ipfs.add(report.to_json())
        log.info("round %d: prepared model %s and report %s", state.round, model_cid, report_cid)
        _crash_point("before-commit", state.round)

        # Checks-effects: re-read the phase right before committing; the contract is the final guard.
        current = self.task.current_round()
        if current.phase != Phase.AGGREGATING or current.round != state.round:
            log.info("round %d was committed meanwhile; nothing to do", state.round)
            return None
        try:
            tx = self.task.commit_aggregate(
                state.round, state.inputs_hash, cid_to_digest(model_cid), cid_to_digest(report_cid), fedavg.count
            )
        except ContractRevert as exc:
            if exc.error in ALREADY_COMMITTED:
                log.info("round %d already committed (%s); not committing twice", state.round, exc.error)
                return None
            raise
        _crash_point("after-commit", state.round)
        seconds = time.perf_counter() - started
        log.info(
            "round %d: committed %s from %d updates (%d rejected), gas %d, %.2fs",
            state.round,
            model_cid,
            fedavg.count,
            len(report.rejected),
            tx.gas_used,
            seconds,
        )
        return CommitOutcome(
            state.round, model_cid, report_cid, fedavg.count, len(report.rejected), tx.gas_used, seconds, report.metrics
        )

    def _evaluate(self, weights: dict[str, np.ndarray]) -> dict[str, float]:
        assert self.eval_data is not None
        model = build_model(self.spec.model, seed=self.spec.seed)
        set_weights(model, weights)
        result = evaluate(model, self.eval_data)
        return {"accuracy": round(result.accuracy, 6), "loss": round(result.loss, 6)}
