"""submitUpdate: the happy path, the running inputs hash (mirrored in Python) and every revert."""

import pytest
from conftest import (
    ZERO_BYTES32,
    Phase,
    commit_reveal,
    device_info,
    digest,
    expected_inputs_hash,
    fold_inputs_hash,
    initial_inputs_hash,
    make_config,
    reverts_with,
    round_state,
    submit_round,
)
from eth_abi import encode as abi_encode
from eth_utils import keccak

from fedchain.chain import inputs as client_inputs

# ---------------------------------------------------------------- happy path


def test_submit_emits_and_counts(started, devices):
    tx = started.submitUpdate(1, digest("u0"), 123, {"from": devices[0]})
    event = tx.events["UpdateSubmitted"]
    assert len(tx.events) == 1
    assert event["round"] == 1
    assert event["device"] == devices[0]
    assert bytes(event["updateDigest"]) == digest("u0")
    assert event["numSamples"] == 123
    state = round_state(started)
    assert state["round"] == 1
    assert state["phase"] == Phase.Open
    assert state["updates"] == 1
    assert state["totalSamples"] == 123
    assert device_info(started, devices[0]) == (True, 1, 0)


def test_submissions_accumulate(started, devices):
    started.submitUpdate(1, digest("a"), 10, {"from": devices[0]})
    started.submitUpdate(1, digest("b"), 32, {"from": devices[1]})
    state = round_state(started)
    assert state["updates"] == 2
    assert state["totalSamples"] == 42
    assert state["phase"] == Phase.Open


def test_max_samples_per_update_is_accepted(started, devices):
    """numSamples may be up to MAX_SAMPLES_PER_UPDATE (uint32 max); it is summed exactly."""
    n = 2**32 - 1
    assert started.MAX_SAMPLES_PER_UPDATE() == n
    started.submitUpdate(1, digest("a"), n, {"from": devices[0]})
    assert round_state(started)["totalSamples"] == n


def test_oversized_sample_count_is_refused(started, devices):
    with reverts_with("TooManySamples", 2**32, 2**32 - 1):
        started.submitUpdate(1, digest("greedy"), 2**32, {"from": devices[0]})


def test_largest_sample_counts_cannot_stall_the_round(started, devices):
    """Every device claiming the maximum still leaves the round's uint64 total far from overflow."""
    submit_round(started, devices[:3], 1, samples=[2**32 - 1] * 3)
    assert round_state(started)["totalSamples"] == 3 * (2**32 - 1)


# ---------------------------------------------------------------- inputs hash


def test_initial_inputs_hash_matches_python(started):
    for r in (0, 1, 2, 3, 2**32 - 1):
        assert bytes(started.initialInputsHash(r)) == initial_inputs_hash(started.address, r)
    # spelled out once more from the definition: keccak256(abi.encode(address, uint32))[:20]
    assert bytes(started.initialInputsHash(1)) == keccak(abi_encode(["address", "uint32"], [started.address, 1]))[:20]


def test_initial_inputs_hash_is_task_and_round_specific(started, federated_task, admin):
    other = federated_task.deploy(make_config(), admin, {"from": admin})
    assert bytes(started.initialInputsHash(1)) != bytes(other.initialInputsHash(1))
    assert bytes(started.initialInputsHash(1)) != bytes(started.initialInputsHash(2))
    assert bytes(started.initialInputsHash(1)) != b"\x00" * 20


def test_round_opens_with_initial_inputs_hash(started):
    assert round_state(started)["inputsHash"] == initial_inputs_hash(started.address, 1)


def test_fold_packing_by_hand(started, devices):
    """One fold, with the 80-byte encodePacked layout written out: bytes20 | address | bytes32 | uint64 big-endian."""
    d, n = digest("hand"), 0x01020304
    started.submitUpdate(1, d, n, {"from": devices[0]})
    prev = initial_inputs_hash(started.address, 1)
    packed = prev + bytes.fromhex(devices[0].address[2:]) + d + bytes([0, 0, 0, 0, 1, 2, 3, 4])
    assert round_state(started)["inputsHash"] == keccak(packed)[:20]


def test_inputs_hash_chain_matches_python(started, devices):
    submissions = []
    for i, (device, n) in enumerate(zip(devices[:3], [1, 250, 2**32 - 1], strict=True)):
        d = digest(f"chain-{i}")
        tx = started.submitUpdate(1, d, n, {"from": device})
        submissions.append((device.address, d, n))
        assert round_state(started)["inputsHash"] == expected_inputs_hash(started.address, 1, submissions)
    ready = tx.events["RoundReadyForAggregation"]
    assert bytes(ready["inputsHash"]) == expected_inputs_hash(started.address, 1, submissions)
    assert ready["updates"] == 3
    assert ready["totalSamples"] == 1 + 250 + 2**32 - 1


def test_off_chain_client_formula_matches_chain(started, devices):
    """The aggregator's fedchain.chain.inputs computes exactly what the contract accumulated."""
    submissions, _ = submit_round(started, devices[:3], 1, samples=[3, 1, 2])
    assert client_inputs.initial_inputs_hash(started.address, 1) == bytes(started.initialInputsHash(1))
    assert client_inputs.inputs_hash(started.address, 1, submissions) == round_state(started)["inputsHash"]
    acc = client_inputs.initial_inputs_hash(started.address, 1)
    for device, d, n in submissions:
        assert client_inputs.fold_inputs_hash(acc, device, d, n) == fold_inputs_hash(acc, device, d, n)
        acc = fold_inputs_hash(acc, device, d, n)


def test_inputs_hash_is_order_dependent(federated_task, admin, aggregator, devices):
    """The same three updates in two orders give two different hashes, each equal to its own Python chain."""
    updates = [(devices[i], digest(f"o{i}"), 10 * (i + 1)) for i in range(3)]
    hashes = []
    for order in (updates, updates[::-1]):
        contract = federated_task.deploy(make_config(maxUpdates=5), admin, {"from": admin})
        contract.grantRole(contract.AGGREGATOR_ROLE(), aggregator, {"from": admin})
        contract.approveDevices(devices[:3], {"from": admin})
        contract.start({"from": admin})
        for device, d, n in order:
            contract.submitUpdate(1, d, n, {"from": device})
        onchain = round_state(contract)["inputsHash"]
        as_submitted = [(dev.address, d, n) for dev, d, n in order]
        assert onchain == expected_inputs_hash(contract.address, 1, as_submitted)
        assert onchain != expected_inputs_hash(contract.address, 1, as_submitted[::-1])
        # same count and total whatever the order: only the hash tells the orders apart
        assert round_state(contract)["totalSamples"] == 60
        hashes.append((contract.address, onchain))
    assert hashes[0][1] != hashes[1][1]


@pytest.mark.parametrize("field", ["device", "digest", "samples"])
def test_inputs_hash_binds_every_field(started, devices, field):
    d, n, device = digest("x"), 5, devices[0]
    base = fold_inputs_hash(initial_inputs_hash(started.address, 1), device.address, d, n)
    if field == "device":
        device = devices[1]
    elif field == "digest":
        d = digest("y")
    else:
        n = 6
    started.submitUpdate(1, d, n, {"from": device})
    onchain = round_state(started)["inputsHash"]
    assert onchain == fold_inputs_hash(initial_inputs_hash(started.address, 1), device.address, d, n)
    assert onchain != base


def test_inputs_hash_restarts_each_round(started, devices, aggregator):
    submit_round(started, devices[:3], 1)
    commit_reveal(started, aggregator, 1)
    state = round_state(started)
    assert state["inputsHash"] == initial_inputs_hash(started.address, 2)
    assert state["updates"] == 0
    assert state["totalSamples"] == 0
    submissions, _ = submit_round(started, devices[1:3], 2)
    assert round_state(started)["inputsHash"] == expected_inputs_hash(started.address, 2, submissions)


# ---------------------------------------------------------------- reverts


def test_submit_before_start_reverts(task, devices):
    with reverts_with("WrongPhase", Phase.Open, Phase.Registering):
        task.submitUpdate(0, digest("x"), 1, {"from": devices[0]})
    with reverts_with("WrongPhase", Phase.Open, Phase.Registering):
        task.submitUpdate(1, digest("x"), 1, {"from": devices[0]})


@pytest.mark.parametrize("given", [0, 2, 3, 2**32 - 1])
def test_submit_wrong_round_in_round_one(started, devices, given):
    with reverts_with("WrongRound", 1, given):
        started.submitUpdate(given, digest("x"), 1, {"from": devices[0]})


def test_submit_past_and_future_round(started, devices, aggregator):
    submit_round(started, devices[:3], 1)
    commit_reveal(started, aggregator, 1)
    # a delayed transaction for round 1 that lands in round 2
    with reverts_with("WrongRound", 2, 1):
        started.submitUpdate(1, digest("late"), 1, {"from": devices[0]})
    with reverts_with("WrongRound", 2, 3):
        started.submitUpdate(3, digest("early"), 1, {"from": devices[0]})
    started.submitUpdate(2, digest("ok"), 1, {"from": devices[0]})


def test_submit_zero_digest_reverts(started, devices):
    with reverts_with("EmptyDigest"):
        started.submitUpdate(1, ZERO_BYTES32, 1, {"from": devices[0]})


def test_submit_zero_samples_reverts(started, devices):
    with reverts_with("ZeroSamples"):
        started.submitUpdate(1, digest("x"), 0, {"from": devices[0]})


@pytest.mark.parametrize("who", ["unapproved_device", "outsider", "admin", "aggregator"])
def test_submit_unapproved_reverts(started, devices, outsider, admin, aggregator, who):
    sender = {"unapproved_device": devices[3], "outsider": outsider, "admin": admin, "aggregator": aggregator}[who]
    with reverts_with("NotApprovedDevice", sender.address):
        started.submitUpdate(1, digest("x"), 1, {"from": sender})


def test_double_submit_reverts(started, devices):
    args = (1, digest("x"), 10)
    started.submitUpdate(*args, {"from": devices[0]})
    # the very same call again (a replayed/resent transaction)
    with reverts_with("AlreadySubmitted", devices[0].address, 1):
        started.submitUpdate(*args, {"from": devices[0]})
    # a different update from the same device in the same round
    with reverts_with("AlreadySubmitted", devices[0].address, 1):
        started.submitUpdate(1, digest("y"), 11, {"from": devices[0]})
    state = round_state(started)
    assert state["updates"] == 1
    assert state["totalSamples"] == 10


def test_check_order(started, devices, outsider):
    """Phase, then round, then digest, then samples, then approval, then double submission."""
    with reverts_with("WrongRound", 1, 2):
        started.submitUpdate(2, ZERO_BYTES32, 0, {"from": outsider})
    with reverts_with("EmptyDigest"):
        started.submitUpdate(1, ZERO_BYTES32, 0, {"from": outsider})
    with reverts_with("ZeroSamples"):
        started.submitUpdate(1, digest("x"), 0, {"from": outsider})
    started.submitUpdate(1, digest("x"), 1, {"from": devices[0]})
    with reverts_with("ZeroSamples"):
        started.submitUpdate(1, digest("x"), 0, {"from": devices[0]})


def test_submit_while_aggregating_reverts(aggregating, devices, admin):
    aggregating.approveDevices([devices[3]], {"from": admin})
    with reverts_with("WrongPhase", Phase.Open, Phase.Aggregating):
        aggregating.submitUpdate(1, digest("x"), 1, {"from": devices[3]})
    with reverts_with("WrongPhase", Phase.Open, Phase.Aggregating):
        aggregating.submitUpdate(1, digest("x"), 1, {"from": devices[0]})


@pytest.mark.parametrize(("end", "phase"), [("finished", Phase.Finished), ("cancelled", Phase.Cancelled)])
def test_submit_after_task_over_reverts(request, devices, end, phase):
    contract = request.getfixturevalue(end)
    current = round_state(contract)["round"]
    with reverts_with("WrongPhase", Phase.Open, phase):
        contract.submitUpdate(current, digest("x"), 1, {"from": devices[0]})


def test_failed_submit_changes_nothing(started, devices):
    before = round_state(started)
    with reverts_with("ZeroSamples"):
        started.submitUpdate(1, digest("x"), 0, {"from": devices[0]})
    assert round_state(started) == before
    assert device_info(started, devices[0]) == (True, 0, 0)
