"""The projection's handler table against the compiled FederatedTask ABI: every handled event exists, reads only
arguments the event declares, and round events carry a round. A renamed event or argument fails here, not silently
in the index."""

from __future__ import annotations

import inspect
import re

import pytest

from fedchain.chain.artifacts import load_artifact
from fedchain.explorer.index.projection import (
    ROUND_GAS_EVENTS,
    ROUND_HANDLERS,
    TASK_HANDLERS,
    on_task_configured,
)

EVENTS = {
    e["name"]: {p["name"] for p in e["inputs"]} for e in load_artifact("FederatedTask").abi if e["type"] == "event"
}
HANDLERS = {**TASK_HANDLERS, **ROUND_HANDLERS, "TaskConfigured": on_task_configured}


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_each_handler_reads_only_arguments_its_event_declares(name: str) -> None:
    assert name in EVENTS, f"{name} is not an event of FederatedTask"
    source = inspect.getsource(HANDLERS[name])
    read = set(re.findall(r"""(?:e\.args|\ba)(?:\[|\.get\()["'](\w+)["']""", source))
    assert read, f"the {name} handler reads no argument"
    assert read <= EVENTS[name], f"{name} has no {sorted(read - EVENTS[name])}"


def test_round_events_have_a_round_and_task_events_are_not_round_events() -> None:
    for name in set(ROUND_HANDLERS) | ROUND_GAS_EVENTS:
        assert "round" in EVENTS[name], name
    assert not set(TASK_HANDLERS) & set(ROUND_HANDLERS)
    # RoundOpened comes in the transaction that ends the previous round: its gas counts there.
    assert set(ROUND_HANDLERS) - ROUND_GAS_EVENTS == {"RoundOpened"}
