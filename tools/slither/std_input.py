"""Write the solc standard-JSON input slither reads (`--compile-force-framework solc-json`).

The solcjs shim refuses `--combined-json`, slither's default way of calling solc, so slither is given the same
compilation brownie does as standard JSON: every contract in contracts/ and the OpenZeppelin files they import
(`@openzeppelin/` remapped to node_modules), evmVersion shanghai, optimizer on with 200 runs.

Usage: python tools/slither/std_input.py OUT.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REMAPPINGS = {"@openzeppelin/": ROOT / "node_modules" / "@openzeppelin"}
IMPORT = re.compile(r'^\s*import\s+(?:[^"\']*\s+from\s+)?["\']([^"\']+)["\']\s*;', re.MULTILINE)


def resolve(unit: str, importer: str | None) -> tuple[str, Path]:
    """The source unit name of an import and the file it denotes."""
    if unit.startswith("./") or unit.startswith("../"):
        assert importer is not None
        unit = str(Path(importer).parent.joinpath(unit)).replace("\\", "/")
        parts: list[str] = []
        for part in unit.split("/"):
            if part == "..":
                parts.pop()
            elif part != ".":
                parts.append(part)
        unit = "/".join(parts)
    for prefix, target in REMAPPINGS.items():
        if unit.startswith(prefix):
            return unit, target / unit[len(prefix) :]
    return unit, ROOT / unit


def sources() -> dict[str, dict[str, str]]:
    todo = [(str(p.relative_to(ROOT)), p) for p in sorted((ROOT / "contracts").glob("*.sol"))]
    out: dict[str, dict[str, str]] = {}
    while todo:
        unit, path = todo.pop()
        if unit in out:
            continue
        text = path.read_text()
        out[unit] = {"content": text}
        todo += [resolve(imported, unit) for imported in IMPORT.findall(text)]
    return dict(sorted(out.items()))


def main() -> None:
    target = Path(sys.argv[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "language": "Solidity",
        "sources": sources(),
        "settings": {
            "evmVersion": "shanghai",
            "optimizer": {"enabled": True, "runs": 200},
            "remappings": [f"@openzeppelin/={REMAPPINGS['@openzeppelin/']}/"],
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode", "evm.deployedBytecode"], "": ["ast"]}},
        },
    }
    target.write_text(json.dumps(data, indent=1))
    print(f"{target}: {len(data['sources'])} sources")


if __name__ == "__main__":
    main()
