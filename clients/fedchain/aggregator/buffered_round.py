"""One buffer's aggregation as pure functions: the buffer's entries and their decoded updates in, the next version's
model and report out, and the agreement step of a buffered task (BufferedTask.sol).

Each update is rebased onto the version the buffer builds on (fedchain.learning.staleness) and weighted by the
task's staleness weighting. Weighted-mean strategies get FedBuff's step, current + sum_i n_i w(s_i) delta_i / sum_i n_i:
the deltas' mean weighted by numSamples x w(staleness), normalised (chain.buffered.entry_weights, passed to
`aggregate_round` as integer weights), scaled by the buffer's sample-weighted mean w(s), so that a buffer of stale
updates moves the model less than a fresh one (without that scaling, measured: a run whose updates are all three
versions behind oscillates between 66% and 95% accuracy). Weightless robust strategies get each delta scaled by its
own w(staleness) instead. The staleness is the one the chain recorded, so every aggregator computes the
same weights, the same bits and the same CID. No chain, no IPFS, no clock here: fedchain.aggregator.buffered does
the I/O.

Norm clipping (`clip_norm`) composes as clip, then discount: each delta is clipped to clip_norm against its own base
before the staleness factor scales it (`rebased_update`), so a stale update moves the model by at most
w(s) x clip_norm. (Clipping the already-scaled delta instead would let a large stale update escape its discount:
clip(w d) = clip_norm whenever w ||d|| > clip_norm.) The strategy's own NormClipping then finds nothing left to clip,
as every factor is <= 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedchain.aggregator.agreement import Action
from fedchain.aggregator.round import DecodedUpdate, RoundLimits, RoundResult, Submission, aggregate_round, rejection_of
from fedchain.chain.buffered import AggPhase, BufferEntry, entry_weights, staleness_weight
from fedchain.learning.aggregation import ServerState, Strategy
from fedchain.learning.aggregation.clipping import delta_norm
from fedchain.learning.aggregation.registry import CLIP_PARAM, StrategySpec
from fedchain.learning.staleness import integer_weights, rebase, weighs_samples
from fedchain.learning.types import Weights


@dataclass(frozen=True)
class EntryWeight:
    """How one buffer entry enters the aggregate: the strategy's integer weight and the delta's scaling factor."""

    staleness_weight: float  # w(staleness)
    share: float  # numSamples x w(s), normalised over the buffer (what a weighted mean gives it)
    integer_weight: int  # `share` out of WEIGHT_SCALE, or numSamples for a weightless strategy
    delta_factor: float  # the buffer's sample-weighted mean w(s), or the entry's w(s) for a weightless strategy


def buffer_weights(
    entries: Sequence[BufferEntry], strategy: StrategySpec, weighting_id: int, param_micro: int
) -> list[EntryWeight]:
    """Each entry's weights, in the buffer's order (see the module's notes)."""
    stale = [staleness_weight(e.staleness, weighting_id, param_micro) for e in entries]
    shares = entry_weights(entries, weighting_id, param_micro)
    if weighs_samples(strategy):
        # FedBuff's step: sum_i n_i w(s_i) delta_i / sum_i n_i = step x (the normalised weighted mean of the deltas)
        step = sum(e.num_samples * w for e, w in zip(entries, stale, strict=True)) / sum(e.num_samples for e in entries)
        return [EntryWeight(w, s, i, step) for w, s, i in zip(stale, shares, integer_weights(shares), strict=True)]
    return [EntryWeight(w, s, e.num_samples, w) for w, s, e in zip(stale, shares, entries, strict=True)]


def entry_submission(entry: BufferEntry, weight: EntryWeight, tx_hash: str = "", block: int = 0) -> Submission:
    """The entry as `aggregate_round` weighs it: its integer weight in place of numSamples."""
    return Submission(entry.device, entry.update_digest, weight.integer_weight, block, tx_hash)


def clip_norm_of(strategy: StrategySpec) -> float | None:
    """The strategy's clip_norm parameter, if it clips."""
    value = strategy.params.get(CLIP_PARAM)
    return None if value is None else float(value)


def rebased_update(
    decoded: DecodedUpdate,
    current: Weights,
    base: Weights,
    weight: EntryWeight,
    submission: Submission,
    clip_norm: float | None = None,
) -> DecodedUpdate:
    """A decoded update moved onto the current version (or its rejection, kept, under the weighted submission);
    with `clip_norm`, its delta is clipped against its base before the staleness factor (see the module's notes)."""
    if decoded.rejection is not None or decoded.weights is None:
        return DecodedUpdate(submission, rejection=decoded.rejection or ("undecodable", ""))
    try:
        factor = weight.delta_factor
        if clip_norm is not None:
            if set(decoded.weights) != set(base) or any(
                np.shape(decoded.weights[k]) != np.shape(base[k]) for k in base
            ):
                raise ValueError("the update's tensors or shapes differ from the model's")
            norm = delta_norm(base, decoded.weights)
            if norm > clip_norm:
                factor = factor * (clip_norm / norm)
        weights = rebase(current, base, decoded.weights, factor)
    except (ValueError, TypeError) as exc:
        return DecodedUpdate(submission, rejection=rejection_of(exc))
    return DecodedUpdate(submission, weights, decoded.metadata)


@dataclass(frozen=True, eq=False)
class BufferInputs:
    """One buffer as the aggregator fetched it: the version it builds on, its entries in position order, each
    entry's decoded update (or rejection), the models of the versions they were trained from, and their weights."""

    current: Weights
    entries: Sequence[BufferEntry]
    decoded: Sequence[DecodedUpdate]  # one per entry, same order; their submissions are replaced by the weighted ones
    bases: Mapping[int, Weights]  # base version -> its model (every entry's base)
    weights: Sequence[EntryWeight]  # buffer_weights(entries, ...)


def aggregate_buffer(
    inputs: BufferInputs,
    strategy_spec: StrategySpec,
    strategy: Strategy | None,
    state: ServerState,
    limits: RoundLimits,
) -> RoundResult:
    """The buffer's aggregate: every update rebased onto the current version with its staleness factor (clipped
    first under clip_norm), in device order, through `aggregate_round` with the strategy (None: the streaming
    weighted mean, for FedAvg/FedProx without optional parameters) and the strategy's state from the previous
    version. Deterministic: the same inputs give the same bits whatever the entries' order."""
    clip = clip_norm_of(strategy_spec)
    decoded = [
        rebased_update(plain, inputs.current, inputs.bases[e.base_version], w, entry_submission(e, w), clip)
        for e, plain, w in zip(inputs.entries, inputs.decoded, inputs.weights, strict=True)
    ]
    # Fixed order: by device (one entry per device per buffer), as the synchronous worker does.
    decoded.sort(key=lambda d: d.submission.device.lower())
    return aggregate_round(inputs.current, decoded, strategy, state, limits, (), strategy_spec.name)


def entry_fields(entry: BufferEntry, weight: EntryWeight) -> dict[str, Any]:
    """What the report says about an entry besides the round's fields."""
    return {
        "num_samples": entry.num_samples,
        "base_version": entry.base_version,
        "staleness": entry.staleness,
        "staleness_weight": weight.staleness_weight,
        "weight": weight.share,
    }


def buffer_report(
    task: str,
    buffer: int,
    version: int,
    strategy: StrategySpec,
    weighting: tuple[int, int],
    inputs_hash: bytes,
    previous_cid: str,
    model_cid: str,
    result: RoundResult,
    fields: Mapping[str, dict[str, Any]],
    metrics: Mapping[str, float],
    server_state_cid: str = "",
) -> dict[str, Any]:
    """The buffer's aggregation report (published on IPFS; its digest is revealed). Entries are listed with their
    real numSamples, base version, staleness and weight (the round's entries carry the integer weight);
    `server_state_cid` names a stateful strategy's state after this version ("" for none)."""

    def with_fields(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**item, **fields.get(item["device"], {})} for item in items]

    return {
        "task": task,
        "buffer": buffer,
        "version": version + 1,
        "previous_version": version,
        "strategy": strategy.name,
        "strategy_params": dict(strategy.params),
        "staleness_weighting": {"id": weighting[0], "param_micro": weighting[1]},
        "inputs_hash": "0x" + inputs_hash.hex(),
        "previous_model_cid": previous_cid,
        "model_cid": model_cid,
        "accepted": with_fields(result.accepted),
        "rejected": with_fields(result.rejected),
        "metrics": dict(metrics),
        "note": result.note,
        **({"server_state_cid": server_state_cid} if server_state_cid else {}),
    }


@dataclass(frozen=True)
class BufferedView:
    """What the agreement step decides on, read from the chain (and the wall clock for `close_due`)."""

    phase: AggPhase
    committed: bool  # to the pending buffer's current attempt
    revealed: bool
    close_due: bool  # the window's deadline passed
    early_close_due: bool = False  # no buffer pending and the filling one may be closed early
    inputs_ready: bool = True


def buffered_step(view: BufferedView) -> Action:
    """The next transition: commit, reveal, close an expired window or an overdue buffer, or wait."""
    if view.phase == AggPhase.NONE:
        return Action.CLOSE_ROUND if view.early_close_due else Action.WAIT
    if view.phase == AggPhase.COMMITTING and not view.committed and view.inputs_ready:
        return Action.COMMIT
    if view.phase == AggPhase.REVEALING and view.committed and not view.revealed:
        return Action.REVEAL
    return Action.CLOSE_WINDOW if view.close_due else Action.WAIT


__all__ = [
    "BufferInputs",
    "BufferedView",
    "EntryWeight",
    "aggregate_buffer",
    "buffer_report",
    "buffer_weights",
    "buffered_step",
    "clip_norm_of",
    "entry_fields",
    "entry_submission",
    "rebased_update",
]
