"""A device's round without chain or IPFS: local training from the global model (real torch), and the update file
it publishes, read back the way the aggregator reads it."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.aggregator.round import Submission, decode_update
from fedchain.device.runner import train_for_round, update_metadata
from fedchain.learning.data import Dataset, load_dataset
from fedchain.learning.model import build_model, get_weights
from fedchain.learning.spec import default_task_spec
from fedchain.storage.binding import DEVICE_KEY, REASON_BINDING_MISMATCH, UpdateBinding
from fedchain.storage.codec import encode_weights

SPEC = default_task_spec()
TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
A, B = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


@pytest.fixture(scope="module")
def data() -> Dataset:
    train = load_dataset(SPEC.dataset)[0]
    return train.subset(np.arange(64))


def test_training_is_bit_identical_for_a_device_and_round_whatever_the_model_held(data: Dataset) -> None:
    global_weights = get_weights(build_model(SPEC.model, seed=SPEC.seed))
    first = train_for_round(build_model(SPEC.model, seed=1), global_weights, data, SPEC, 3, A)
    again = train_for_round(build_model(SPEC.model, seed=2), global_weights, data, SPEC, 3, A.lower())
    assert all(np.array_equal(first.weights[k], again.weights[k]) for k in global_weights)
    assert first.loss == again.loss and first.train_seconds >= 0
    assert not all(np.array_equal(first.weights[k], global_weights[k]) for k in global_weights)
    other_device = train_for_round(build_model(SPEC.model), global_weights, data, SPEC, 3, B)
    other_round = train_for_round(build_model(SPEC.model), global_weights, data, SPEC, 4, A)
    for other in (other_device, other_round):
        assert not all(np.array_equal(first.weights[k], other.weights[k]) for k in global_weights)


def test_an_attacking_device_returns_its_poisoned_model(data: Dataset) -> None:
    global_weights = get_weights(build_model(SPEC.model, seed=SPEC.seed))
    honest = train_for_round(build_model(SPEC.model), global_weights, data, SPEC, 2, A)
    flipped = train_for_round(build_model(SPEC.model), global_weights, data, SPEC, 2, A, attack="sign-flip")
    assert not all(np.array_equal(honest.weights[k], flipped.weights[k]) for k in global_weights)
    # Sign flip reverses the honest delta (scaled): it points away from the honest model.
    name = next(iter(global_weights))
    honest_delta = honest.weights[name] - global_weights[name]
    flipped_delta = flipped.weights[name] - global_weights[name]
    assert float(np.sum(honest_delta * flipped_delta)) < 0


def test_the_update_file_is_bound_to_its_submission(data: Dataset) -> None:
    global_weights = get_weights(build_model(SPEC.model, seed=SPEC.seed))
    local = train_for_round(build_model(SPEC.model), global_weights, data, SPEC, 5, A)
    binding = UpdateBinding(31337, TASK, 5, A)
    metadata = update_metadata(binding, len(data), local.train_seconds, local.loss)
    assert metadata["fedchain.kind"] == "update" and metadata["fedchain.num_samples"] == "64"
    assert metadata[DEVICE_KEY] == A and float(metadata["fedchain.train_loss"]) == pytest.approx(local.loss, abs=1e-6)
    blob = encode_weights(local.weights, metadata)
    sub = Submission(A, b"\x01" * 32, len(data), 1, "0x")
    read = decode_update(sub, blob, binding, 1 << 24)
    assert read.rejection is None and read.weights is not None
    assert all(np.array_equal(read.weights[k], local.weights[k]) for k in local.weights)
    copied = decode_update(Submission(B, b"\x01" * 32, 64, 1, "0x"), blob, UpdateBinding(31337, TASK, 5, B), 1 << 24)
    assert copied.rejection is not None and copied.rejection[0] == REASON_BINDING_MISMATCH
