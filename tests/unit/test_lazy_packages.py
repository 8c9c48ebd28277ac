"""Packages whose `__init__` exports names lazily (fedchain._lazy): every exported name resolves to what its module
defines, whatever was imported first, and never to a submodule."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import types

import pytest

from fedchain._lazy import lazy_exports

PACKAGES = [
    "fedchain.app.demo",
    "fedchain.app.devnet",
    "fedchain.chain",
    "fedchain.learning",
    "fedchain.privacy",
    "fedchain.storage",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_to_its_definition(package: str) -> None:
    pkg = importlib.import_module(package)
    # Import every submodule first: the import system binds each on the package, which must not shadow a name.
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)
    for name in pkg.__all__:
        value = getattr(pkg, name)
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module"
        assert name in dir(pkg)
    star: dict[str, object] = {}
    exec(f"from {package} import *", star)
    assert set(pkg.__all__) <= set(star)


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_do_not_import_siblings(package: str) -> None:
    # A fresh interpreter: importing the package alone imports none of its lazily exported modules.
    pkg = importlib.import_module(package)
    lazy = sorted(getattr(pkg, "_SOURCES", {}))
    code = f"import json, sys, {package}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [m for m in lazy if m in loaded] == []


def test_unknown_names_and_clashes() -> None:
    pkg = importlib.import_module("fedchain.storage")
    with pytest.raises(AttributeError):
        _ = pkg.no_such_name
    with pytest.raises(ValueError, match="submodules"):
        lazy_exports("fedchain.privacy", {"fedchain.privacy.quantize": ("quantize",)})


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        # The demo launches its device and aggregator processes before it imports torch and web3 (start-up overlap).
        ("fedchain.app.demo.run", ("torch", "web3", "opacus")),
        # The demo deploys without torch (its initial model comes from the fork server's helper or the cache).
        ("fedchain.app.deploy", ("torch", "opacus")),
        ("fedchain.app.demo.forked", ("torch", "web3", "opacus")),
        # Strategies and weight checks are numpy only; the aggregator's screening and the CLI's options use them.
        ("fedchain.learning.aggregation.registry", ("torch", "opacus")),
        ("fedchain.privacy.accountant", ("torch", "opacus")),
    ],
)
def test_light_modules_stay_light(module: str, heavy: tuple[str, ...]) -> None:
    code = f"import json, sys, {module}; print(json.dumps([m for m in {list(heavy)!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
