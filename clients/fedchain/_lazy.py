"""Lazy package exports (PEP 562): a package lists which submodule defines each public name, and the submodule is
imported on first use of the name. `import fedchain.chain.connection` then does not drag in every sibling
(the market's bindings, torch, scikit-learn, opacus) through the package's `__init__`.

    __getattr__, __dir__ = lazy_exports(__name__, {"fedchain.chain.connection": ("connect",), ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, sources: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, resolving each name in `sources` (module -> names) on first use."""
    module_of = {name: module for module, names in sources.items() for name in names}
    # A name that is also a submodule's name would resolve to the module once anything imports that submodule (the
    # import system binds it on the package): such names must be imported eagerly instead.
    clashes = sorted(set(module_of) & {module.rpartition(".")[2] for module in sources})
    if clashes:
        raise ValueError(f"{package}: lazy names that are also submodules: {clashes}")

    def getattr_(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *module_of})

    return getattr_, dir_


__all__ = ["lazy_exports"]
