"""Fail on any High or Medium slither result that tools/slither/triage.json does not explain.

Usage: python tools/slither/check.py RESULTS.json [TRIAGE.json]

A triage entry names a detector (`check`) and the first element slither reports for it (`element`: the function,
variable or contract, as slither prints it before the first " ("), with a one-line `reason`. An entry that no longer
matches any result is reported too (stale triage), so the file stays an honest list.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GATED = ("High", "Medium")


def element_of(result: dict) -> str:
    return result["description"].split(" (", 1)[0].strip()


def main() -> int:
    results = json.loads(Path(sys.argv[1]).read_text())
    triage_path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("triage.json")
    triage = json.loads(triage_path.read_text())["triaged"]
    if not results.get("success"):
        print(f"slither failed: {results.get('error')}", file=sys.stderr)
        return 2
    detectors = results.get("results", {}).get("detectors", [])
    known = {(t["check"], t["element"]): t["reason"] for t in triage}
    used = set()
    untriaged = []
    for r in detectors:
        if r["impact"] not in GATED:
            continue
        key = (r["check"], element_of(r))
        if key in known:
            used.add(key)
            print(f"triaged {r['impact']:<6} {key[0]}: {key[1]} -- {known[key]}")
        else:
            untriaged.append(r)
    counts = {}
    for r in detectors:
        counts[r["impact"]] = counts.get(r["impact"], 0) + 1
    print(f"slither: {len(detectors)} results {dict(sorted(counts.items()))}; High/Medium triaged: {len(used)}")
    for key in sorted(set(known) - used):
        print(f"stale triage entry (no such result any more): {key[0]}: {key[1]}", file=sys.stderr)
    for r in untriaged:
        print(f"UNTRIAGED {r['impact']} {r['check']}: {r['description'].strip()}", file=sys.stderr)
    return 1 if untriaged or set(known) - used else 0


if __name__ == "__main__":
    sys.exit(main())
