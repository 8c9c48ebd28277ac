"""Masked updates (secure aggregation) carry their binding in their header: one submitted by another account or in
another round is named as the culprit; the aggregator CLI's bound default is the measured one."""

from __future__ import annotations

import inspect

import numpy as np

from fedchain.aggregator.secure import REASON_BINDING_MISMATCH, masked_binding_culprits
from fedchain.learning.aggregation.bound import DEFAULT_MAX_RELATIVE_DISTANCE
from fedchain.privacy.protocol import address_bytes
from fedchain.privacy.secagg_messages import MaskedUpdate

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
A, B = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def masked(sender: str, round_id: int = 4, task: str = TASK) -> MaskedUpdate:
    update = MaskedUpdate(address_bytes(sender), address_bytes(task), round_id, np.arange(6, dtype=np.uint32))
    return MaskedUpdate.from_bytes(update.to_bytes())  # as the aggregator reads it from IPFS


def test_own_masked_updates_pass() -> None:
    assert masked_binding_culprits({A: masked(A), B: masked(B)}, address_bytes(TASK), 4) == {}
    assert masked_binding_culprits({A.lower(): masked(A)}, address_bytes(TASK), 4) == {}


def test_a_copied_or_replayed_masked_update_names_its_submitter() -> None:
    culprits = masked_binding_culprits(
        {A: masked(A), B: masked(A)}, address_bytes(TASK), 4
    )  # B submitted A's digest of this round
    assert set(culprits) == {B} and culprits[B][0] == REASON_BINDING_MISMATCH
    replayed = masked_binding_culprits({B: masked(B, round_id=3)}, address_bytes(TASK), 4)
    assert replayed[B][0] == REASON_BINDING_MISMATCH and "round 3" in replayed[B][1]
    other_task = masked_binding_culprits({B: masked(B, task=A)}, address_bytes(TASK), 4)
    assert set(other_task) == {B}


def test_cli_default_is_the_measured_bound() -> None:
    from fedchain.cli.roles import aggregator

    default = inspect.signature(aggregator).parameters["max_update_distance"].default
    assert default == DEFAULT_MAX_RELATIVE_DISTANCE
