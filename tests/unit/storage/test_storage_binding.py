"""An update's binding to (chain id, task, round, device): written into safetensors metadata, read back, and
refused with a reason when it is absent or names another submission."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.storage import encode_weights, read_metadata
from fedchain.storage.binding import (
    BINDING_KEYS,
    REASON_BINDING_MISMATCH,
    REASON_BINDING_MISSING,
    BindingError,
    UpdateBinding,
    check_binding,
)

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DEVICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
EXPECTED = UpdateBinding(31337, TASK, 3, DEVICE)


def blob(binding: UpdateBinding | None, **extra: str) -> bytes:
    metadata = {"fedchain.kind": "update", **(binding.metadata() if binding else {}), **extra}
    return encode_weights({"w": np.ones(3, np.float32)}, metadata)


def test_binding_round_trips_through_safetensors_metadata() -> None:
    metadata = read_metadata(blob(EXPECTED))
    assert {k: metadata[k] for k in BINDING_KEYS} == {
        "fedchain.chain_id": "31337",
        "fedchain.task": TASK,
        "fedchain.round": "3",
        "fedchain.device": DEVICE,
    }
    assert check_binding(metadata, EXPECTED) == EXPECTED


def test_same_binding_gives_the_same_bytes() -> None:
    # The virtual-device pool and device processes must upload identical files for identical weights.
    assert blob(UpdateBinding(31337, TASK, 3, DEVICE)) == blob(UpdateBinding(31337, TASK, 3, DEVICE))


def test_addresses_compare_case_insensitively() -> None:
    lower = UpdateBinding(31337, TASK.lower(), 3, DEVICE.lower())
    assert check_binding(lower.metadata(), EXPECTED) == lower


@pytest.mark.parametrize(
    ("claimed", "named"),
    [
        (UpdateBinding(31337, TASK, 3, OTHER), "device"),  # another device's digest, copied
        (UpdateBinding(31337, TASK, 2, DEVICE), "round 2"),  # the device's own digest of an earlier round
        (UpdateBinding(31337, TASK, 2, OTHER), "round 2"),  # another device's digest of an earlier round
        (UpdateBinding(31337, OTHER, 3, DEVICE), "task"),
        (UpdateBinding(1, TASK, 3, DEVICE), "chain id 1"),
    ],
)
def test_a_binding_for_another_submission_is_a_mismatch(claimed: UpdateBinding, named: str) -> None:
    with pytest.raises(BindingError, match=named) as caught:
        check_binding(read_metadata(blob(claimed)), EXPECTED)
    assert caught.value.reason == REASON_BINDING_MISMATCH


@pytest.mark.parametrize(
    "metadata",
    [
        {},  # an update from a device of an older version, or written by hand
        {"fedchain.task": TASK, "fedchain.round": "3", "fedchain.device": DEVICE},  # no chain id (older devices)
        {**EXPECTED.metadata(), "fedchain.round": "03"},  # a second spelling of a number
        {**EXPECTED.metadata(), "fedchain.round": "-3"},
        {**EXPECTED.metadata(), "fedchain.round": "３"},  # a non-ASCII digit
        {**EXPECTED.metadata(), "fedchain.chain_id": ""},
        {**EXPECTED.metadata(), "fedchain.device": "alice"},
        {**EXPECTED.metadata(), "fedchain.task": TASK[:-1]},
    ],
)
def test_an_absent_or_malformed_binding_is_missing(metadata: dict[str, str]) -> None:
    with pytest.raises(BindingError) as caught:
        check_binding(metadata, EXPECTED)
    assert caught.value.reason == REASON_BINDING_MISSING
    assert isinstance(caught.value, ValueError)  # the aggregator's per-update handler records it like the others


def test_binding_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        UpdateBinding(-1, TASK, 3, DEVICE)
    with pytest.raises(ValueError):
        UpdateBinding(31337, TASK, True, DEVICE)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        UpdateBinding(31337, "0x1234", 3, DEVICE)
