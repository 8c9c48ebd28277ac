"""`fedchain bench attacks`' report: the JSON keys of attacker fractions, the markdown table, the two files.

Formatting only: what goes in the report is computed by `fedchain.bench.attacks`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def fraction_key(fraction: float) -> str:
    """The JSON key of an attacker fraction: "0.0", "0.1", ..."""
    return repr(float(fraction))


def _pct(fraction: float) -> str:
    return f"{fraction:.0%}"


def _points(change: float | None) -> str:
    """An accuracy change in points, signed: -3.5 means 3.5 points below the reference."""
    return "-" if change is None else f"{change * 100:+.1f}"


def markdown_table(result: Mapping[str, Any]) -> str:
    """The report as markdown: the goal at 30%, then one table per attack (strategy rows, fraction columns).

    Changes are in accuracy points against a reference, negative when the attacked run is worse.
    """
    config = result["config"]
    goal = result["goal"]
    fractions = [float(p) for p in config["fractions"]]
    key = fraction_key(goal["fraction"])
    strategies = list(result["table"])
    pct = _pct(goal["fraction"])
    tolerance = goal["tolerance"] * 100
    lines = [
        "# Accuracy under attack",
        "",
        f"{config['devices']} devices, {config['partition']}, {config['rounds']} rounds, mean final test accuracy "
        f"over {len(config['seeds'])} seeds ({', '.join(str(s) for s in config['seeds'])}); attackers per fraction: "
        + ", ".join(f"{_pct(float(p))}: {n}" for p, n in config["attackers"].items())
        + f". {result['simulations']} simulations in {result['wall_seconds']:.0f} s"
        + (f" ({result['cpu_seconds']:.0f} CPU s)." if "cpu_seconds" in result else "."),
        "",
        "Strategies: "
        + ", ".join(f"{label} `{json.dumps(spec['params'])}`" for label, spec in config["strategies"].items()),
        "",
        f"## Goal: with {pct} attackers, robust rules within {tolerance:.0f} points of clean",
        "",
        f"Clean = {goal['clean_reference']}. Cells: change in accuracy points vs the strategy's own clean run "
        f"(in brackets: vs clean FedAvg), negative = worse. FedAvg visibly fails when it loses more than "
        f"{goal['fedavg_visible_drop'] * 100:.0f} points.",
        "",
    ]
    robust = [s for s in goal["strategies"] if s in goal["robust"]]
    lines.append("| attack | " + " | ".join(robust) + " | fedavg | robust rules met |")
    lines.append("|---|" + "---|" * (len(robust) + 2))
    for attack, entry in goal["per_attack"].items():
        cells = []
        for label in robust:
            c = goal["robust"][label].get(attack)
            if c is None:
                cells.append("-")
                continue
            mark = "met" if c["met"] else "**not met**"
            versus = f" ({_points(-c['drop_vs_clean_fedavg'])})" if "drop_vs_clean_fedavg" in c else ""
            cells.append(f"{_points(-c['drop'])}{versus} {mark}")
        fedavg = entry["fedavg_drop"]
        fedavg_cell = "-" if fedavg is None else _points(-fedavg) + (" fails" if entry["fedavg_visibly_fails"] else "")
        lines.append(f"| {attack} | " + " | ".join(cells) + f" | {fedavg_cell} | {'yes' if entry['met'] else 'no'} |")
    lines += [
        "",
        f"Robust rules met on: {', '.join(goal['attacks_met']) or 'none'}; not met on: "
        f"{', '.join(goal['attacks_not_met']) or 'none'}. FedAvg visibly fails on: "
        f"{', '.join(goal['fedavg']['fails_on']) or 'none'}. Goal met overall: {'yes' if goal['met'] else 'no'}.",
        "",
    ]
    plain = goal.get("plain")
    if plain is not None:
        lines += [
            f"The same rules without the reference filter ({', '.join(plain['strategies'])}) meet the goal on: "
            f"{', '.join(plain['attacks_met']) or 'none'}; not on: {', '.join(plain['attacks_not_met']) or 'none'}"
            + "".join(
                f"; {attack}: " + ", ".join(f"{label} -{drop * 100:.1f}" for label, drop in e["missed_by"].items())
                for attack, e in plain["per_attack"].items()
                if e["missed_by"]
            )
            + ". Under label skew a reversed or label-flipped update looks like an honest update of a device skewed "
            "the other way; the trusted-root filter is what tells them apart (see the notes).",
            "",
        ]
    reasons = {a: e["reason"] for a, e in goal["per_attack"].items() if e["reason"]}
    if reasons:
        lines += ["Why not met:", ""]
        lines += [f"- **{attack}**: {reason}" for attack, reason in reasons.items()]
        lines.append("")
    lines += ["## Final accuracy per attack and attacker fraction", ""]
    header = (
        "| strategy | " + " | ".join(_pct(p) for p in fractions) + f" | {pct} vs own clean | {pct} vs clean FedAvg |"
    )
    for attack in config["attacks"]:
        lines += [f"### {attack}: {config['attack_descriptions'].get(attack, '')}", "", header]
        lines.append("|---|" + "---|" * (len(fractions) + 2))
        for label in strategies:
            row = result["table"][label][attack]
            cells = [f"{row[fraction_key(p)]['accuracy']:.3f}" for p in fractions]
            last = row.get(key)
            own = "-" if last is None else _points(-last["drop_vs_clean"])
            vs_fedavg = None if last is None or last["drop_vs_clean_fedavg"] is None else -last["drop_vs_clean_fedavg"]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {own} | {_points(vs_fedavg)} |")
        lines.append("")
    lines += ["## Notes", ""] + [f"- {note}" for note in result["notes"]]
    machine = result["machine"]
    lines += [
        f"- Machine: {machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}, torch "
        f"{machine['torch']}, one torch thread per process, {config['workers']} worker process(es).",
        "",
    ]
    return "\n".join(lines)


def write_reports(result: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write attacks.json and attacks.md into `out_dir` (created if needed); their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "attacks.json"
    md_path = out_dir / "attacks.md"
    json_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown_table(result), encoding="utf-8")
    return json_path, md_path
