"""fedchain.protocol imports the standard library only (and itself): any part, the explorer included, can use it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import fedchain.protocol

PACKAGE = Path(fedchain.protocol.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_only_the_standard_library() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 6
    for module in modules:
        for name in imported_modules(module):
            top = name.split(".")[0]
            allowed = top in sys.stdlib_module_names or name.startswith("fedchain.protocol")
            assert allowed, f"{module.name} imports {name}"
