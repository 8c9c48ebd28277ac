"""`fedchain bench flower`'s figures: percentiles, ratios, the accuracy comparison and the targets, one report row
per device count, the text table. Pure: no processes, no files.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from fedchain.bench.process_meter import GB

# What the issue asks for; reported against, never asserted.
TARGETS = {
    "later_round_median_ratio_max": {"10": 1.5, "default": 2.0},
    "round1_seconds_max_at_10": 3.0,
    "startup_ratio_max": 1.0,
    "peak_memory_bytes_max_at_1000": 8 * GB,
}
# Names the demo's summary may give its startup and round-1 seconds (older summaries have neither).
STARTUP_KEYS = ("startup_seconds", "startup")
ROUND1_KEYS = ("round1_seconds", "round_1_seconds", "first_round_seconds")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    data = sorted(float(v) for v in values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def later_rounds(round_seconds: Sequence[float] | None) -> dict[str, Any]:
    """Median and p90 of the rounds after the first (round 1 pays warm-up costs and is reported on its own)."""
    later = [float(s) for s in (round_seconds or [])[1:]]
    return {
        "count": len(later),
        "median": statistics.median(later) if later else None,
        "p90": percentile(later, 90),
        "min": min(later) if later else None,
        "max": max(later) if later else None,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(float(numerator) / float(denominator), 3)


def first_present(summary: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if summary.get(key) is not None:
            return summary[key]
    return None


def side_figures(side: dict[str, Any] | None) -> dict[str, Any]:
    """The figures compared across frameworks, from a side's result (None where it failed or did not say)."""
    side = side or {}
    rounds = side.get("round_seconds") or []
    round1 = first_present(side, ROUND1_KEYS)
    if round1 is None and rounds:
        round1 = rounds[0]
    return {
        "startup_seconds": first_present(side, STARTUP_KEYS),
        "startup_in_process_seconds": side.get("startup_in_process_seconds"),
        "round1_seconds": round1,
        "later_rounds": later_rounds(rounds),
        "peak_memory_bytes": (side.get("memory") or {}).get("peak_bytes"),
    }


def compare_accuracies(lists: dict[str, Sequence[float] | None]) -> dict[str, Any]:
    """Whether every given accuracy list is equal, element for element and bit for bit (float ==, same length)."""
    present = {name: list(values) for name, values in lists.items() if values}
    if len(present) < 2:
        return {"compared": sorted(present), "bit_identical": None, "reason": "fewer than two sides have accuracies"}
    names = sorted(present)
    base = present[names[0]]
    mismatches = []
    for name in names[1:]:
        other = present[name]
        if len(other) != len(base):
            mismatches.append({"sides": [names[0], name], "reason": f"{len(base)} rounds against {len(other)}"})
            continue
        for r, (a, b) in enumerate(zip(base, other, strict=True), start=1):
            if float(a).hex() != float(b).hex():
                mismatches.append({"sides": [names[0], name], "round": r, "values": [a, b]})
    return {"compared": names, "bit_identical": not mismatches, "mismatches": mismatches}


def targets_for(devices: int, fedchain: dict[str, Any], flower: dict[str, Any]) -> dict[str, Any]:
    """Each target that applies at this device count: its limit, the measured value and whether it is met."""
    limits = TARGETS["later_round_median_ratio_max"]
    later_limit = limits.get(str(devices), limits["default"])
    out: dict[str, Any] = {}
    value = ratio(fedchain["later_rounds"]["median"], flower["later_rounds"]["median"])
    out["later_round_median_ratio"] = _target(value, later_limit)
    if devices == 10:
        out["round1_seconds"] = _target(fedchain["round1_seconds"], TARGETS["round1_seconds_max_at_10"])
    out["startup_ratio"] = _target(
        ratio(fedchain["startup_seconds"], flower["startup_seconds"]), TARGETS["startup_ratio_max"]
    )
    if devices == 1000:
        out["peak_memory_bytes"] = _target(fedchain["peak_memory_bytes"], TARGETS["peak_memory_bytes_max_at_1000"])
    return out


def _target(value: float | None, limit: float) -> dict[str, Any]:
    return {"limit": limit, "value": value, "met": None if value is None else value <= limit}


def build_row(
    devices: int,
    rounds: int,
    flower: dict[str, Any] | None,
    fedchain: dict[str, Any] | None,
    reference: Sequence[float] | None,
) -> dict[str, Any]:
    """One device count's entry of reports/flower.json: both sides, their figures, ratios, targets, accuracies."""
    flower = flower or {}
    fedchain = fedchain or {}
    ff, cf = side_figures(flower), side_figures(fedchain)
    return {
        "devices": devices,
        "rounds": rounds,
        "flower": {**ff, "round_seconds": flower.get("round_seconds"), "error": flower.get("error")},
        "fedchain": {**cf, "round_seconds": fedchain.get("round_seconds"), "error": fedchain.get("error")},
        "ratios_fedchain_over_flower": {
            "startup": ratio(cf["startup_seconds"], ff["startup_seconds"]),
            "round1": ratio(cf["round1_seconds"], ff["round1_seconds"]),
            "later_round_median": ratio(cf["later_rounds"]["median"], ff["later_rounds"]["median"]),
            "later_round_p90": ratio(cf["later_rounds"]["p90"], ff["later_rounds"]["p90"]),
            "peak_memory": ratio(cf["peak_memory_bytes"], ff["peak_memory_bytes"]),
        },
        "targets": targets_for(devices, cf, ff),
        "accuracy": {
            "flower": flower.get("accuracy_per_round"),
            "fedchain": fedchain.get("accuracy_per_round"),
            "reference": list(reference) if reference else None,
            **compare_accuracies(
                {
                    "flower": flower.get("accuracy_per_round"),
                    "fedchain": fedchain.get("accuracy_per_round"),
                    "reference": reference,
                }
            ),
        },
        "loss": {
            "flower": flower.get("loss_per_round"),
            "fedchain": fedchain.get("loss_per_round"),
            **compare_accuracies({"flower": flower.get("loss_per_round"), "fedchain": fedchain.get("loss_per_round")}),
        },
    }


def format_table(report: dict[str, Any]) -> str:
    """A short text table of the report: one line per device count and side, then the ratios."""
    lines = [
        f"{'devices':>7} {'side':<8} {'startup s':>9} {'round1 s':>8} {'median s':>8} {'p90 s':>7} {'peak MB':>8}"
        f"  accuracy"
    ]

    def num(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for row in report["runs"]:
        for side in ("flower", "fedchain"):
            s = row[side]
            peak = s["peak_memory_bytes"]
            acc = row["accuracy"].get(side)
            lines.append(
                f"{row['devices']:>7} {side:<8} {num(s['startup_seconds']):>9} {num(s['round1_seconds']):>8} "
                f"{num(s['later_rounds']['median']):>8} {num(s['later_rounds']['p90']):>7} "
                f"{num(peak / (1 << 20) if peak else None, 0):>8}  "
                + (f"ERROR {s['error'][:60]}" if s.get("error") else (f"{acc[-1]:.4f}" if acc else "-"))
            )
        r = row["ratios_fedchain_over_flower"]
        same = row["accuracy"]["bit_identical"]
        lines.append(
            f"{'':>7} {'ratio':<8} {num(r['startup']):>9} {num(r['round1']):>8} {num(r['later_round_median']):>8} "
            f"{num(r['later_round_p90']):>7} {num(r['peak_memory']):>8}  "
            f"bit-identical: {'-' if same is None else same} ({', '.join(row['accuracy']['compared'])})"
        )
    return "\n".join(lines)
