"""Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent").

Each update's score is the sum of squared distances to its n - f - 2 nearest other updates; Krum outputs the
update with the lowest score, Multi-Krum the unweighted mean of the m lowest-scoring ones. Ties go to the lower
device address.

Deterministic distances. The canonical squared distances (`exact_sq_distances`) are float64 sums of element-wise
squared differences in a fixed block order: no BLAS, so the same bits on every CPU, but O(n²·P) element-wise work
(~10 s for 100 updates of 1M parameters). The fast path computes the Gram matrix of the deltas from the global model
with BLAS (one thread; ~0.4 s) and a rigorous bound on how far its distances can be from the canonical ones:
any BLAS summation order, FMA or not, errs by at most gamma_P·|a|·|b| per dot product (Higham, "Accuracy and
Stability of Numerical Algorithms", §3.1), so |d_gram - d_canonical| <= c·gamma_{P+3}·(|δ_i|² + |δ_j|²), taken here
with a safety factor. Scores computed from the lower and upper bounds (with the same summation) bracket the canonical
scores, because rounded addition is monotone. The fast path's selection is used only when these brackets prove
that the canonical scores select the same set; otherwise (near-ties) the canonical distances are computed. Either
way the selected set, hence the output, equals the canonical one. Identical updates (e.g. several attackers sending
one constant update) have exactly equal canonical scores, ranked by address: they are recognised up front, given
identical bounds, and exempt from the check, so duplicates alone never force the slow path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from fedchain.learning.aggregation.base import (
    AggregateResult,
    ServerState,
    Strategy,
    UnweightedMean,
    Update,
    devices,
    integer,
    iter_blocks,
    plain_mean,
    sorted_names,
)
from fedchain.learning.types import Weights

# Part of the canonical distance definition: changing it changes the canonical bits. Do not change.
EXACT_BLOCK = 4096
GRAM_BLOCK = 16384
UNIT_ROUNDOFF = 2.0**-53
# The analysis gives about 6; the margin also covers rounding in forming the bounds themselves.
BOUND_SAFETY = 16.0


@dataclass(frozen=True, eq=False)
class DistanceBounds:
    """Lower and upper bounds (n, n) on the canonical squared distances; equal to them when `exact`.

    `group[i]` is the lowest index of an update identical to update i (i itself if none).
    """

    lower: np.ndarray
    upper: np.ndarray
    exact: bool
    group: np.ndarray


@dataclass(frozen=True)
class Selection:
    """Indices (into the address-sorted updates, ascending) chosen; `exact`: the canonical distances were needed."""

    indices: tuple[int, ...]
    exact: bool


def exact_sq_distances(weights: Sequence[Weights]) -> np.ndarray:
    """Canonical pairwise squared Euclidean distances (float64, (n, n), zero diagonal).

    Per tensor in sorted-name order, per EXACT_BLOCK coordinates: (w_j - w_i)² summed along the block with numpy's
    pairwise sum, block sums added in order. Element-wise ufuncs and contiguous sums only: CPU-independent bits.
    """
    n = len(weights)
    dist = np.zeros((n, n), dtype=np.float64)
    for _, _, block in iter_blocks(weights, sorted_names(weights[0]), EXACT_BLOCK):
        b = block.astype(np.float64)
        for i in range(n - 1):
            diff = b[i + 1 :] - b[i]
            np.multiply(diff, diff, out=diff)
            dist[i, i + 1 :] += diff.sum(axis=1)
    return dist + dist.T


def twin_groups(weights: Sequence[Weights]) -> np.ndarray:
    """For each update, the lowest index of an update with equal values (itself if none)."""
    names = sorted_names(weights[0])

    def fingerprint(w: Weights) -> bytes:
        return b"".join(np.ascontiguousarray(w[k].reshape(-1)[:: max(1, w[k].size // 64)]).tobytes() for k in names)

    group = np.arange(len(weights))
    seen: dict[bytes, list[int]] = {}
    for i, w in enumerate(weights):
        representatives = seen.setdefault(fingerprint(w), [])
        match = next((r for r in representatives if all(np.array_equal(w[k], weights[r][k]) for k in names)), None)
        if match is None:
            representatives.append(i)
        else:
            group[i] = match
    return group


def _merge_twins(matrix: np.ndarray, group: np.ndarray) -> None:
    """Give twins their representative's rows and columns, and each other distance 0 (their canonical values)."""
    for rep in np.unique(group):
        members = np.flatnonzero(group == rep)
        for i in members[1:]:
            matrix[i, :] = matrix[rep, :]
            matrix[:, i] = matrix[:, rep]
        matrix[np.ix_(members, members)] = 0.0


def gram_bounds(global_weights: Weights, weights: Sequence[Weights]) -> DistanceBounds:
    """Bounds on the canonical distances from the Gram matrix of the deltas w_i - global (BLAS, one thread)."""
    n = len(weights)
    gram = np.zeros((n, n), dtype=np.float64)
    names = sorted_names(global_weights)
    flat_global = {name: global_weights[name].reshape(-1) for name in names}
    num_params = 0
    # One thread: on small machines OpenBLAS's spinning threads slow everything else down; bits do not matter here.
    with threadpool_limits(limits=1, user_api="blas"):
        for name, span, block in iter_blocks(weights, names, GRAM_BLOCK):
            deltas = block.astype(np.float64)
            deltas -= flat_global[name][span].astype(np.float64)
            gram += deltas @ deltas.T
            num_params += deltas.shape[1]
    sq_norms = np.diagonal(gram).copy()
    norm_sum = sq_norms[:, None] + sq_norms[None, :]
    approx = norm_sum - 2.0 * gram
    terms = num_params + 3
    gamma = terms * UNIT_ROUNDOFF / (1.0 - terms * UNIT_ROUNDOFF)
    err = BOUND_SAFETY * gamma * norm_sum
    lower = np.maximum(approx - err, 0.0)
    upper = approx + err
    # Both (i, j) and (j, i) bound the same canonical value: keep the tighter of each.
    lower = np.maximum(lower, lower.T)
    upper = np.minimum(upper, upper.T)
    np.fill_diagonal(lower, 0.0)
    np.fill_diagonal(upper, 0.0)
    group = twin_groups(weights)
    _merge_twins(lower, group)
    _merge_twins(upper, group)
    return DistanceBounds(lower, upper, exact=False, group=group)


def exact_bounds(weights: Sequence[Weights]) -> DistanceBounds:
    dist = exact_sq_distances(weights)
    return DistanceBounds(dist, dist, exact=True, group=np.arange(len(weights)))


def krum_scores(dist: np.ndarray, candidates: np.ndarray, f: int) -> np.ndarray:
    """Krum scores within `candidates`: sum of the max(r - f - 2, 1) smallest distances to the other candidates."""
    r = len(candidates)
    k = max(r - f - 2, 1)
    sub = dist[np.ix_(candidates, candidates)]
    np.fill_diagonal(sub, np.inf)
    sub.sort(axis=1)
    # Same k, same contiguous layout, hence the same summation tree for bounds and canonical values.
    return np.ascontiguousarray(sub[:, :k]).sum(axis=1)


def best_candidates(bounds: DistanceBounds, candidates: np.ndarray, f: int, m: int) -> list[int] | None:
    """The m candidates with the lowest canonical Krum scores (ties: lower index), or None if bounds can't tell."""
    if m >= len(candidates):
        return sorted(int(c) for c in candidates)
    upper = krum_scores(bounds.upper, candidates, f)
    order = np.argsort(upper, kind="stable")
    chosen, rest = order[:m], order[m:]
    if not bounds.exact:
        lower = krum_scores(bounds.lower, candidates, f)
        # Every chosen canonical score <= its upper bound < every other's lower bound <= its canonical score...
        conflict = upper[chosen][:, None] >= lower[rest][None, :]
        if conflict.any():
            # ...except twins: equal canonical scores, and equal bounds made the stable sort pick the lower index.
            group = bounds.group[candidates]
            twins = group[chosen][:, None] == group[rest][None, :]
            if (conflict & ~twins).any():
                return None
    return sorted(int(candidates[c]) for c in chosen)


def select(
    global_weights: Weights,
    weights: Sequence[Weights],
    selector: Callable[[DistanceBounds], list[int] | None],
    method: str = "auto",
) -> Selection:
    """Run `selector` on Gram bounds, falling back to canonical distances if it cannot decide.

    method: "auto" (that), "exact" (canonical distances only) or "gram" (ValueError if the bounds can't decide).
    """
    if method not in ("auto", "exact", "gram"):
        raise ValueError(f"method must be 'auto', 'exact' or 'gram', got {method!r}")
    if method != "exact":
        chosen = selector(gram_bounds(global_weights, weights))
        if chosen is not None:
            return Selection(tuple(chosen), exact=False)
        if method == "gram":
            raise ValueError("the Gram-matrix bounds cannot decide this selection (near-tie)")
    chosen = selector(exact_bounds(weights))
    assert chosen is not None  # exact bounds always decide
    return Selection(tuple(chosen), exact=True)


def check_krum_count(owner: str, n: int, f: int) -> None:
    if n < 2 * f + 3:
        raise ValueError(f"{owner} with f={f} needs at least 2f+3 = {2 * f + 3} updates, got {n}")


def multi_krum_select(
    global_weights: Weights, weights: Sequence[Weights], f: int, m: int, method: str = "auto"
) -> Selection:
    """Indices of the m updates with the lowest Krum scores (Blanchard et al. 2017)."""
    n = len(weights)
    check_krum_count("krum", n, f)
    if not 1 <= m <= n:
        raise ValueError(f"multi-krum selects m in 1..{n}, got m={m}")
    candidates = np.arange(n)
    return select(global_weights, weights, lambda b: best_candidates(b, candidates, f, m), method)


def _excluded(updates: tuple[Update, ...], chosen: tuple[int, ...], reason: str) -> dict[str, str]:
    keep = set(chosen)
    return {u.device: reason for i, u in enumerate(updates) if i not in keep}


class Krum(Strategy):
    """Krum: the single update closest to its n - f - 2 neighbours; needs n >= 2f + 3."""

    name = "krum"
    strategy_id = 7
    label = "Krum"
    defaults: ClassVar[Mapping[str, float | int]] = {"f": 1}

    def __init__(self, f: int = 1) -> None:
        self.f = integer("krum", "f", f, 0)

    def params(self) -> dict[str, float | int]:
        return {"f": self.f}

    def within(self, n: int) -> Strategy:
        if n >= 2 * self.f + 3:
            return self
        return Krum((n - 3) // 2) if n >= 3 else UnweightedMean()

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        sel = multi_krum_select(global_weights, [u.weights for u in updates], self.f, 1)
        (index,) = sel.indices
        chosen = updates[index]
        weights = {name: chosen.weights[name].copy() for name in global_weights}
        return AggregateResult(weights, (chosen.device,), _excluded(updates, sel.indices, "krum: not selected"))


class MultiKrum(Strategy):
    """Multi-Krum: unweighted mean of the m lowest-scoring updates; m = 0 means n - f (n known per round)."""

    name = "multi-krum"
    strategy_id = 8
    label = "Multi-Krum"
    defaults: ClassVar[Mapping[str, float | int]] = {"f": 1, "m": 0}

    def __init__(self, f: int = 1, m: int = 0) -> None:
        self.f = integer("multi-krum", "f", f, 0)
        self.m = integer("multi-krum", "m", m, 0)

    def params(self) -> dict[str, float | int]:
        return {"f": self.f, "m": self.m}

    def within(self, n: int) -> Strategy:
        if n >= 2 * self.f + 3 and self.m <= n:
            return self
        if n < 3:
            return UnweightedMean()
        f = min(self.f, (n - 3) // 2)
        # An explicit m keeps its meaning (the m best) as far as the n - f candidates left allow.
        return MultiKrum(f, min(self.m, n - f))

    def _aggregate(self, global_weights: Weights, updates: tuple[Update, ...], state: ServerState) -> AggregateResult:
        m = self.m or len(updates) - self.f
        sel = multi_krum_select(global_weights, [u.weights for u in updates], self.f, m)
        chosen = tuple(updates[i] for i in sel.indices)
        return AggregateResult(
            plain_mean(global_weights, chosen),
            devices(chosen),
            _excluded(updates, sel.indices, "multi-krum: not among the m best scores"),
        )


__all__ = [
    "DistanceBounds",
    "Krum",
    "MultiKrum",
    "Selection",
    "best_candidates",
    "exact_sq_distances",
    "gram_bounds",
    "krum_scores",
    "multi_krum_select",
    "select",
    "twin_groups",
]
