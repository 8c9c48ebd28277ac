"""One round's aggregation without chain or IPFS: `aggregate_round` over decoded updates with the real strategies and
bound, `decode_update` on real update files, and `aggregate_unmasked` on an unmasked secure-aggregation round."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedchain.aggregator.round import (
    MASKED_SUM_DEVICE,
    REASON_EXCLUDED,
    REASON_NOT_AGGREGATED,
    AggregationReport,
    DecodedUpdate,
    RoundLimits,
    Submission,
    aggregate_round,
    aggregate_unmasked,
    decode_update,
)
from fedchain.aggregator.secure import RoundUnrecoverable, UnmaskedRound
from fedchain.learning.aggregation import ServerState, build_strategy
from fedchain.learning.aggregation.bound import REASON_TOO_LARGE, UpdateBound
from fedchain.learning.aggregation.registry import StrategySpec
from fedchain.storage.binding import REASON_BINDING_MISMATCH, REASON_BINDING_MISSING, UpdateBinding
from fedchain.storage.codec import encode_weights

SHAPES = {"b": (2,), "w": (3, 2)}
LIMITS = RoundLimits(SHAPES, UpdateBound(5.0))
TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DEVICES = [f"0x{i:040x}" for i in range(1, 10)]


def weights(value: float) -> dict[str, np.ndarray]:
    return {"b": np.full(2, value, np.float32), "w": np.full((3, 2), value, np.float32)}


def submission(device: str, num_samples: int = 10) -> Submission:
    return Submission(device, hashlib.sha256(device.encode()).digest(), num_samples, 7, "0x" + "ab" * 32)


def decoded(device: str, value: float, num_samples: int = 10, **metadata: str) -> DecodedUpdate:
    return DecodedUpdate(submission(device, num_samples), weights(value), metadata)


GLOBAL = weights(1.0)


def test_streaming_mean_is_sample_weighted_and_lists_every_input() -> None:
    updates = [decoded(DEVICES[0], 2.0, 10, **{"fedchain.train_seconds": "1.5"}), decoded(DEVICES[1], 5.0, 30)]
    result = aggregate_round(GLOBAL, updates, None, ServerState(), LIMITS)
    assert result.aggregated and result.server_state is None and result.note == ""
    assert all(np.array_equal(result.weights[k], np.full(SHAPES[k], 4.25, np.float32)) for k in SHAPES)
    assert [e["device"] for e in result.accepted] == DEVICES[:2]
    assert result.accepted[0]["train_seconds"] == 1.5 and "train_seconds" not in result.accepted[1]
    assert result.accepted[1] == submission(DEVICES[1], 30).entry() and result.rejected == []


def test_unusable_updates_are_rejected_with_their_reason_after_those_left_out_before() -> None:
    wrong_shape = DecodedUpdate(submission(DEVICES[1]), {"w": np.ones((2, 2), np.float32)})
    not_finite = decoded(DEVICES[2], np.nan)
    too_far = decoded(DEVICES[3], 1000.0)  # 5 x the global model's norm is far closer
    unreadable = DecodedUpdate(submission(DEVICES[4]), rejection=("malformed-weights", "not safetensors"))
    before = [{"device": DEVICES[8], "reason": "duplicate-digest"}]
    result = aggregate_round(
        GLOBAL,
        [decoded(DEVICES[0], 2.0), wrong_shape, not_finite, too_far, unreadable],
        None,
        ServerState(),
        LIMITS,
        before,
    )
    assert result.aggregated and [e["device"] for e in result.accepted] == [DEVICES[0]]
    assert result.rejected[0] == before[0]
    reasons = {e["device"]: e["reason"] for e in result.rejected[1:]}
    assert reasons[DEVICES[3]] == REASON_TOO_LARGE and reasons[DEVICES[4]] == "malformed-weights"
    assert reasons[DEVICES[2]] == "non-finite" and DEVICES[1] in reasons
    assert all(len(e["detail"]) <= 300 for e in result.rejected[1:])
    assert np.array_equal(result.weights["w"], weights(2.0)["w"])


def test_a_round_with_nothing_usable_keeps_the_previous_model_object() -> None:
    result = aggregate_round(GLOBAL, [decoded(DEVICES[0], np.inf)], None, ServerState(), LIMITS)
    assert not result.aggregated and result.weights is GLOBAL and result.accepted == []
    empty = aggregate_round(GLOBAL, [], build_strategy(StrategySpec("median")), ServerState(), LIMITS)
    assert not empty.aggregated and empty.weights is GLOBAL and empty.rejected == []


def test_a_strategy_that_refuses_the_round_moves_its_inputs_to_rejected_with_a_note() -> None:
    krum = build_strategy(StrategySpec("krum", {"f": 1}))  # needs 2f + 3 = 5 updates
    result = aggregate_round(
        GLOBAL, [decoded(d, 2.0) for d in DEVICES[:2]], krum, ServerState(), LIMITS, strategy_name="krum"
    )
    assert not result.aggregated and result.weights is GLOBAL and result.accepted == []
    assert result.note.startswith("krum refused the round's 2 updates")
    assert [(e["device"], e["reason"]) for e in result.rejected] == [(d, REASON_NOT_AGGREGATED) for d in DEVICES[:2]]


def test_strategy_exclusions_are_reported_in_device_order() -> None:
    honest = [decoded(d, 1.0 + 0.01 * i) for i, d in enumerate(DEVICES[:5])]
    outlier = decoded(DEVICES[5], 4.0)  # inside the norm bound, far from the others
    result = aggregate_round(
        GLOBAL, [*honest, outlier], build_strategy(StrategySpec("multi-krum", {"f": 1})), ServerState(), LIMITS
    )
    assert result.aggregated and DEVICES[5] not in {e["device"] for e in result.accepted}
    excluded = [e for e in result.rejected if e["reason"] == REASON_EXCLUDED]
    assert DEVICES[5] in {e["device"] for e in excluded}
    assert [e["device"] for e in excluded] == sorted((e["device"] for e in excluded), key=str.lower)
    assert len(result.accepted) + len(excluded) == 6


def test_stateful_strategy_carries_its_state_and_is_bit_reproducible() -> None:
    fedavgm = build_strategy(StrategySpec("fedavgm"))
    inputs = [decoded(DEVICES[0], 2.0), decoded(DEVICES[1], 3.0)]
    first = aggregate_round(GLOBAL, inputs, fedavgm, ServerState(), LIMITS)
    assert first.aggregated and first.server_state is not None and not first.server_state.empty
    again = aggregate_round(GLOBAL, inputs, fedavgm, ServerState(), LIMITS)
    assert all(np.array_equal(first.weights[k], again.weights[k]) for k in SHAPES)
    # The momentum of round 1 moves round 2 farther than a fresh state does.
    fresh = aggregate_round(first.weights, inputs, fedavgm, ServerState(), LIMITS)
    carried = aggregate_round(first.weights, inputs, fedavgm, first.server_state, LIMITS)
    assert not np.array_equal(fresh.weights["w"], carried.weights["w"])


def test_decode_update_checks_the_binding_before_the_weights() -> None:
    binding = UpdateBinding(31337, TASK, 3, DEVICES[0])
    sub = submission(DEVICES[0])
    good = decode_update(sub, encode_weights(weights(2.0), binding.metadata()), binding, 1 << 20)
    assert good.rejection is None and good.weights is not None and np.array_equal(good.weights["w"], weights(2.0)["w"])
    other_round = UpdateBinding(31337, TASK, 2, DEVICES[0])
    replayed = decode_update(sub, encode_weights(weights(2.0), other_round.metadata()), binding, 1 << 20)
    assert replayed.weights is None and replayed.rejection is not None
    assert replayed.rejection[0] == REASON_BINDING_MISMATCH
    unbound = decode_update(sub, encode_weights(weights(2.0)), binding, 1 << 20)
    assert unbound.rejection is not None and unbound.rejection[0] == REASON_BINDING_MISSING
    garbage = decode_update(sub, b"\x00" * 64, binding, 1 << 20)
    assert garbage.weights is None and garbage.rejection is not None


def unmasked_round(note: str = "") -> UnmaskedRound:
    survivors = (DEVICES[1].upper().replace("0X", "0x"), DEVICES[0])
    return UnmaskedRound(weights(3.0), survivors, (DEVICES[2],), participants=3, shares=2, note=note)


def test_secure_round_publishes_the_survivors_mean_and_who_took_part() -> None:
    subs = [submission(d) for d in DEVICES[:2]]
    result = aggregate_unmasked(GLOBAL, subs, unmasked_round(), None, ServerState())
    assert result.aggregated and result.weights["w"][0, 0] == 3.0 and result.server_state is None
    assert [e["device"] for e in result.accepted] == DEVICES[:2] and result.rejected == []
    privacy = result.privacy["secure_aggregation"]
    assert privacy["participants"] == 3 and privacy["dropped"] == [DEVICES[2]] and privacy["unmask_shares"] == 2
    stateful = aggregate_unmasked(
        GLOBAL, subs, unmasked_round(), build_strategy(StrategySpec("fedavgm")), ServerState()
    )
    assert stateful.aggregated and stateful.server_state is not None and not stateful.server_state.empty
    assert MASKED_SUM_DEVICE == "0x" + "00" * 20


def test_secure_round_short_of_noise_keeps_the_previous_model() -> None:
    subs = [submission(d) for d in DEVICES[:2]]
    result = aggregate_unmasked(GLOBAL, subs, unmasked_round(note="only 2 of 3 survived"), None, ServerState())
    assert not result.aggregated and result.weights is GLOBAL and result.note == "only 2 of 3 survived"
    assert [e["reason"] for e in result.rejected] == [REASON_NOT_AGGREGATED] * 2 and result.privacy


@pytest.mark.parametrize("culprit", [DEVICES[1], None])
def test_an_unrecoverable_secure_round_names_its_culprits(culprit: str | None) -> None:
    subs = [submission(d) for d in DEVICES[:2]]
    culprits = {culprit: ("binding-mismatch", "copied")} if culprit else {}
    failed = RoundUnrecoverable("cannot unmask", culprits)
    result = aggregate_unmasked(GLOBAL, subs, failed, None, ServerState(), [{"device": "x", "reason": "batch"}])
    assert not result.aggregated and result.weights is GLOBAL and result.note == "cannot unmask"
    expected = {DEVICES[0]: "secure-aggregation-failed", DEVICES[1]: "binding-mismatch" if culprit else None}
    expected[DEVICES[1]] = expected[DEVICES[1]] or "secure-aggregation-failed"
    assert {e["device"]: e["reason"] for e in result.rejected} == expected


def test_report_json_is_canonical() -> None:
    report = AggregationReport("0xT", 1, "fedavg", "0x00", "bafy", accepted=[{"b": 1, "a": 2}])
    text = report.to_json()
    assert text.startswith(b'{"accepted":[{"a":2,"b":1}]') and b" " not in text
