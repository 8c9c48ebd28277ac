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
# The longest test files (measured: --durations in CI), started first. Both runners hand out work in collection
# order (brownie's xdist runs whole files, LoadFileScheduling; pytest-xdist's loadgroup runs groups and single
# tests), so a long file collected last runs alone at the end while the other workers idle. Longest first.
SLOWEST_FIRST = (
    "contracts/test_market_state_machine.py",
    "contracts/test_task_state_machine.py",
    "contracts/test_market_conservation.py",
    "contracts/test_buffered_state_machine.py",
    "e2e/test_virtual_devices.py",
    "e2e/test_market.py",
    "e2e/test_private_training.py",
    "unit/market/test_market_ray.py",
    "e2e/test_buffered_run.py",
    "e2e/test_aggregator_restart.py",
    "unit/bench/test_bench_flower_learning.py",
    "e2e/test_explorer_api.py",
    "e2e/test_explorer_browser.py",
    "e2e/test_devnet_crash.py",
    "e2e/test_aggregator_agreement.py",
    "e2e/test_buffered_streaming.py",
    "e2e/test_join_and_leave.py",
    "e2e/test_wearable_devices.py",
    "e2e/test_timed_pools.py",
    "e2e/test_light_and_torch_devices.py",
    "e2e/test_demo_command.py",
    "e2e/test_federated_run.py",
)


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
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}

    def slowest_first(item: pytest.Item) -> int:
        try:
            return rank.get(item.path.relative_to(TESTS).as_posix(), len(rank))
        except ValueError:  # a test outside tests/
            return len(rank)

    items.sort(key=slowest_first)  # stable: the rest keep their order, a file's tests stay together


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
