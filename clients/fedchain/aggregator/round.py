"""One round's aggregation as a pure function: decoded updates in, the new model and its report fields out.

No chain, no IPFS, no clock: the worker (fedchain.aggregator.worker) fetches and decodes the round's submissions,
loads the strategy's server state and publishes what `aggregate_round` (plain updates) or `aggregate_unmasked`
(secure aggregation) return. Every aggregator of a task calls them on the same inputs in the same order, so every
reduction, and with it the model's CID, is bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedchain.aggregator.secure import RoundUnrecoverable, UnmaskedRound
from fedchain.learning.aggregation import ServerState, Strategy, StreamingFedAvg, Update
from fedchain.learning.aggregation.base import prepare as prepare_updates
from fedchain.learning.aggregation.bound import UpdateBound
from fedchain.learning.types import Weights
from fedchain.learning.weights import InvalidWeights, check_weights
from fedchain.protocol.canonical_json import canonical_json
from fedchain.storage import StorageError, digest_to_cid, read_metadata
from fedchain.storage.binding import UpdateBinding, check_binding
from fedchain.storage.codec import decode_weights

# The stand-in "device" of the one update a stateful strategy sees under secure aggregation: the survivors' mean.
MASKED_SUM_DEVICE = "0x" + "00" * 20
# Why an accepted update is moved to `rejected` when the round keeps the previous model.
REASON_NOT_AGGREGATED = "round-not-aggregated"
REASON_EXCLUDED = "excluded-by-strategy"
NOT_FINITE_NOTE = "the aggregate is not finite (overflow): the round keeps the previous model"
# Exceptions that make one update unusable (the device's fault), never the round's.
UPDATE_ERRORS = (StorageError, InvalidWeights, ValueError)


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

    def entry(self) -> dict[str, Any]:
        """The submission as the round's report lists it."""
        return {"device": self.device, "cid": self.cid, "num_samples": self.num_samples, "tx_hash": self.tx_hash}


@dataclass(frozen=True, eq=False)
class DecodedUpdate:
    """One submission after fetching and decoding: its weights and file metadata, or why it could not be read."""

    submission: Submission
    weights: Weights | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    rejection: tuple[str, str] | None = None  # (reason, detail) for the report


def rejection_of(exc: BaseException) -> tuple[str, str]:
    """The report's (reason, detail) for an update refused with `exc` (our errors carry a `reason`)."""
    return getattr(exc, "reason", None) or type(exc).__name__, str(exc)[:300]


def decode_update(sub: Submission, blob: bytes, expected: UpdateBinding, max_bytes: int) -> DecodedUpdate:
    """Read a plaintext update file: who and what it was made for first, then its weights. A copied or replayed
    digest is refused for what it is (binding-missing / binding-mismatch) however well-formed its weights are."""
    try:
        metadata = read_metadata(blob, max_bytes=max_bytes)
        check_binding(metadata, expected)
        weights = decode_weights(blob, max_bytes=max_bytes)
    except UPDATE_ERRORS as exc:
        return DecodedUpdate(sub, rejection=rejection_of(exc))
    return DecodedUpdate(sub, weights, metadata)


@dataclass(frozen=True)
class RoundLimits:
    """What every update must fit: the model's tensor shapes and the distance bound from the global model."""

    shapes: Mapping[str, tuple[int, ...]]
    bound: UpdateBound


@dataclass
class RoundResult:
    """A round's new model and what its report says about the inputs."""

    weights: Weights  # the new global model; the previous one (the same object) when the round was not aggregated
    aggregated: bool
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    # The strategy's state for the next round; None when there is none (or the previous one is kept, not aggregated).
    server_state: ServerState | None = None
    privacy: dict[str, Any] = field(default_factory=dict)


def _finish(global_weights: Weights, result: RoundResult) -> RoundResult:
    """A round with nothing usable keeps the previous model (and server state); its accepted inputs are listed as
    rejected, with the reason."""
    if not result.aggregated:
        result.weights = global_weights
        result.server_state = None
        result.rejected.extend({**e, "reason": REASON_NOT_AGGREGATED} for e in result.accepted)
        result.accepted = []
    return result


def _finite(weights: Weights) -> bool:
    return all(np.isfinite(w).all() for w in weights.values())


def aggregate_round(
    global_weights: Weights,
    updates: Iterable[DecodedUpdate],
    strategy: Strategy | None,
    server_state: ServerState,
    limits: RoundLimits,
    rejected_before: Sequence[dict[str, Any]] = (),
    strategy_name: str = "",
) -> RoundResult:
    """Check and aggregate a round's decoded updates, in the order given (the worker's fixed device order).

    `strategy` None is the streaming sample-weighted mean (FedAvg, FedProx without options): one model in memory
    however many updates `updates` yields. An update that does not fit the model, or lies farther from it than the
    bound, is rejected with its reason; so are those the strategy excludes. `rejected_before` (relayed-batch entries
    and duplicate digests already left out) heads the report's rejected list; `strategy_name` (the task's name for
    the strategy) is what a note names.
    """
    result = RoundResult(global_weights, aggregated=False, rejected=list(rejected_before))
    fedavg = StreamingFedAvg(limits.shapes) if strategy is None else None
    kept: list[Update] = []
    entries: dict[str, dict[str, Any]] = {}
    limit = limits.bound.limit(global_weights)  # the global model's norm, once per round
    for decoded in updates:
        sub = decoded.submission
        entry = sub.entry()
        rejection = decoded.rejection
        if rejection is None:
            assert decoded.weights is not None
            try:
                check_weights(decoded.weights, limits.shapes)  # names, shapes, float32, finite
                limits.bound.check(global_weights, decoded.weights, limit)  # UpdateTooLarge: update-too-large
                if fedavg is not None:
                    fedavg.add(decoded.weights, sub.num_samples)
                else:
                    update = Update(sub.device, decoded.weights, sub.num_samples)
                    prepare_updates(global_weights, [update])  # validates shapes, dtypes and finiteness
                    kept.append(update)
            except UPDATE_ERRORS as exc:
                rejection = rejection_of(exc)
        if rejection is not None:
            result.rejected.append({**entry, "reason": rejection[0], "detail": rejection[1]})
            continue
        if "fedchain.train_seconds" in decoded.metadata:
            entry["train_seconds"] = float(decoded.metadata["fedchain.train_seconds"])
        entries[sub.device] = entry
    result.accepted = list(entries.values())

    if fedavg is not None:
        if fedavg.count > 0:
            mean = fedavg.result()
            if _finite(mean):
                result.weights, result.aggregated = mean, True
            else:
                result.note = NOT_FINITE_NOTE
        return _finish(global_weights, result)
    if not kept:
        return _finish(global_weights, result)
    assert strategy is not None
    try:
        aggregate = strategy.aggregate(global_weights, kept, server_state)
    except ValueError as exc:  # e.g. fewer updates than the strategy's Byzantine bound needs
        result.note = f"{strategy_name or strategy.name} refused the round's {len(kept)} updates: {exc}"
        return _finish(global_weights, result)
    if not _finite(aggregate.weights):
        result.note = NOT_FINITE_NOTE
        return _finish(global_weights, result)
    clipped = set(aggregate.clipped)
    result.accepted = [{**entries[d], **({"clipped": True} if d in clipped else {})} for d in aggregate.accepted]
    result.rejected.extend(
        {**entries[d], "reason": REASON_EXCLUDED, "detail": str(why)[:300]}
        for d, why in sorted(aggregate.excluded.items(), key=lambda kv: kv[0].lower())
    )
    result.weights, result.aggregated, result.server_state = aggregate.weights, True, aggregate.state
    return result


def unmasked_report_fields(unmasked: UnmaskedRound) -> dict[str, Any]:
    """The report's `privacy` field of a securely aggregated round."""
    return {
        "secure_aggregation": {
            "participants": unmasked.participants,
            "survivors": list(unmasked.survivors),
            "dropped": list(unmasked.dropped),
            "unmask_shares": unmasked.shares,
        }
    }


def aggregate_unmasked(
    global_weights: Weights,
    subs: Sequence[Submission],
    unmasked: UnmaskedRound | RoundUnrecoverable,
    strategy: Strategy | None,
    server_state: ServerState,
    rejected_before: Sequence[dict[str, Any]] = (),
) -> RoundResult:
    """A securely aggregated round: the strategy sees only the survivors' mean (`unmasked`, or why the round's
    masked inputs could not be unmasked). `strategy` None is the plain mean (FedAvg, FedProx). A round that cannot
    be unmasked reports every submission, with the culprits' reasons, instead of `rejected_before`."""
    entries = {sub.device: sub.entry() for sub in subs}
    if isinstance(unmasked, RoundUnrecoverable):
        culprits = unmasked.culprits
        rejected = [
            {**e, "reason": culprits[d][0], "detail": culprits[d][1][:300]}
            if d in culprits
            else {**e, "reason": "secure-aggregation-failed"}
            for d, e in entries.items()
        ]
        return _finish(global_weights, RoundResult(global_weights, False, rejected=rejected, note=str(unmasked)))
    survivors = {a.lower() for a in unmasked.survivors}
    result = RoundResult(
        global_weights,
        aggregated=False,
        rejected=list(rejected_before),
        accepted=[entries[d] for d in sorted(entries, key=str.lower) if d.lower() in survivors],
        privacy=unmasked_report_fields(unmasked),
        note=unmasked.note,
    )
    if unmasked.note:
        return _finish(global_weights, result)
    if strategy is None:
        result.weights, result.aggregated = unmasked.weights, True
        return result
    # FedAvgM/FedAdam/FedYogi: their server step on the mean delta, as if it were one update.
    aggregate = strategy.aggregate(global_weights, [Update(MASKED_SUM_DEVICE, unmasked.weights, 1)], server_state)
    result.weights, result.aggregated, result.server_state = aggregate.weights, True, aggregate.state
    return result


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
        return canonical_json(asdict(self), ascii_only=True, allow_nan=True)
