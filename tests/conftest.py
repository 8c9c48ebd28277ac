"""Running the Python tests in parallel (`pytest -n N --dist loadgroup`, as `make test` does) without paying twice
for what tests share.

A test that uses a module-scoped fixture (a devnet, a Kubo node, a trained model) runs on the worker that built it
for its module, and every test that uses one session-scoped fixture (the explorer's finished federated run) runs on
one worker: such tests are put in one xdist group, joined transitively (a module whose tests use the explorer's run
goes with every other user of that run). Every other test is scheduled on its own. Autouse fixtures do not count:
they are set up everywhere anyway. Without xdist the groups are unused markers.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

SHARED_SCOPES = ("session", "package", "module", "class")
TESTS = Path(__file__).resolve().parent


# First: xdist's own hook reads the groups to suffix each test's id with `@group`, which is what its scheduler sees.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    keys_of: dict[str, list[str]] = {}
    for item in items:
        keys = _shared_fixture_keys(item)
        if keys:
            keys_of[item.nodeid] = keys
            for key in keys[1:]:
                parent[find(key)] = find(keys[0])
    for item in items:
        keys = keys_of.get(item.nodeid)
        if keys:
            item.add_marker(pytest.mark.xdist_group(find(keys[0])))


def _shared_fixture_keys(item: pytest.Item) -> list[str]:
    """What the test shares with others: `session:NAME` per session-scoped fixture it requests (directly or through
    other fixtures), and its module's path when it requests anything module- or class-scoped."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    module = item.nodeid.split("::")[0]
    keys: set[str] = set()
    seen: set[str] = set()
    pending = list(info.argnames)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        definitions = info.name2fixturedefs.get(name)
        if not definitions:
            continue  # a parameter, or a built-in such as request
        fixture = definitions[-1]
        if not _defined_in_tests(fixture.func):
            continue  # pytest's and plugins' own (tmp_path_factory is session-scoped and cheap)
        if fixture.scope == "session":
            keys.add(f"session:{name}")
        elif fixture.scope in SHARED_SCOPES:
            keys.add(f"module:{module}")
        pending.extend(fixture.argnames)
    return sorted(keys)


def _defined_in_tests(func: object) -> bool:
    try:
        return Path(inspect.getfile(func)).resolve().is_relative_to(TESTS)  # type: ignore[arg-type]
    except TypeError:
        return False
