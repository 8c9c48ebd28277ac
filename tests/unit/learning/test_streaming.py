"""A streaming wearable: replay at k x real time, a bounded buffer of the newest windows (fixed memory, oldest
dropped, bad windows refused and counted), training on what it holds, and a model that follows a drifting sensor."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fedchain.learning.drift import simulate_drift, switch_placement
from fedchain.learning.model import build_model, get_weights
from fedchain.learning.spec import TrainSpec
from fedchain.learning.streaming import RecordingReplay, WindowBuffer, train_on_buffer
from fedchain.learning.wearables import (
    recording_windows,
    recordings_of,
    wearable_split,
    wearable_task,
    wearable_task_spec,
)

TASK = wearable_task("basic_motions")


@pytest.fixture(scope="module")
def split():  # type: ignore[no-untyped-def]
    return wearable_split(wearable_task_spec("basic_motions").dataset)


def _replay(speed: float, count: int = 3) -> RecordingReplay:
    recs = recordings_of("basic_motions")
    return RecordingReplay(TASK, recs.signals[:count], recs.annotations[:count], speed=speed)


def test_replay_hands_over_windows_when_they_are_complete_at_k_times_real_time() -> None:
    real, fast = _replay(1.0), _replay(10.0)
    assert len(real) == 24 and real.duration == pytest.approx(30.0) and fast.duration == pytest.approx(3.0)
    assert real.until(2.4) == [] and real.next_time() == pytest.approx(2.5)  # 25 samples at 10 Hz
    first = real.until(2.5)
    assert len(first) == 1 and first[0].wall_time == pytest.approx(2.5)
    assert len(real.until(10.0)) == 7  # the rest of the first 10 s recording, each window once
    assert [w.recording for w in real.until(12.5)] == [1]  # the second recording starts at 10 s
    assert len(fast.until(1.0)) == 8 and not fast.finished
    assert len(fast.until(100.0)) == 16 and fast.finished and fast.next_time() is None


def test_replayed_windows_are_the_datasets_windows_bit_for_bit(split) -> None:  # type: ignore[no-untyped-def]
    recs = recordings_of("basic_motions")
    i = int(np.flatnonzero(~np.isin(np.arange(80), split.test_recordings))[0])
    replay = RecordingReplay(TASK, [recs.signals[i]], [recs.annotations[i]], recording_ids=[i])
    buffer = WindowBuffer(64, TASK.window, split.standardise)
    buffer.push_all(replay.until(1e9))
    rows = split.train.subset(split.train.groups == i)
    assert np.array_equal(buffer.dataset().x, rows.x) and np.array_equal(buffer.dataset().y, rows.y)


def test_buffer_memory_is_fixed_and_the_oldest_window_goes_first(split) -> None:  # type: ignore[no-untyped-def]
    buffer = WindowBuffer(5, TASK.window, split.standardise)
    nbytes = buffer.nbytes
    windows, _ = recording_windows(
        TASK, recordings_of("basic_motions").signals[0], recordings_of("basic_motions").annotations[0]
    )
    for label, window in enumerate(windows):  # 8 windows, labels 0..7 to follow their order
        assert buffer.push(window, 10.0, label)
    assert len(buffer) == 5 and buffer.nbytes == nbytes
    assert buffer.dataset().y.tolist() == [3, 4, 5, 6, 7]  # oldest first; 0, 1, 2 were dropped
    assert buffer.stats() == {"held": 5, "accepted": 8, "dropped": 3, "refused": 0}
    assert np.array_equal(buffer.dataset().x[-1], split.standardise(windows[-1:])[0])


def test_bad_windows_are_refused_counted_logged_and_never_trained_on(split, caplog) -> None:  # type: ignore[no-untyped-def]
    buffer = WindowBuffer(10, TASK.window, split.standardise)
    good = recording_windows(
        TASK, recordings_of("basic_motions").signals[0], recordings_of("basic_motions").annotations[0]
    )[0][0]
    nan = good.copy()
    nan[4, 3:6] = np.nan
    with caplog.at_level(logging.WARNING, logger="fedchain.device.stream"):
        assert not buffer.push(nan, 10.0, 0)
        assert not buffer.push(good[:, :20], 10.0, 0)
        assert not buffer.push(good, 20.0, 0)
        assert buffer.push(good, 10.0, 1)
    assert buffer.stats() == {
        "held": 1,
        "accepted": 1,
        "dropped": 0,
        "refused": 3,
        "refused_not_finite": 1,
        "refused_wrong_length": 1,
        "refused_wrong_rate": 1,
    }
    assert "window refused (not_finite)" in caplog.text and "wrong_rate" in caplog.text
    assert np.isfinite(buffer.dataset().x).all() and buffer.dataset().y.tolist() == [1]


def test_training_on_the_buffer_uses_what_it_holds(split) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    spec = wearable_task_spec("basic_motions")
    buffer = WindowBuffer(16, TASK.window, split.standardise)
    model = build_model(spec.model)
    assert train_on_buffer(model, buffer, spec.train, seed=0) is None  # nothing has arrived
    before = get_weights(model)
    buffer.push_all(_replay(10.0).until(100.0))
    result = train_on_buffer(model, buffer, TrainSpec(batch_size=8, lr=0.05), seed=0)
    assert result is not None and result.num_samples == 16
    assert any(not np.array_equal(before[k], v) for k, v in get_weights(model).items())


def test_switch_placement_turns_the_watch_a_quarter_turn() -> None:
    signal = np.arange(12, dtype=float).reshape(6, 2)
    turned = switch_placement(signal)
    assert turned[:, 0].tolist() == [2, -0, 4, 8, -6, 10]
    assert np.array_equal(switch_placement(switch_placement(switch_placement(switch_placement(signal)))), signal)
    with pytest.raises(ValueError, match="6 channels"):
        switch_placement(signal[:3])


def test_the_model_adapts_after_the_sensor_moves() -> None:
    torch.set_num_threads(1)
    run = simulate_drift()
    before, final = run.last_before_drift(), run.final()
    assert run.drift_time == pytest.approx(30.0)  # 30 training recordings of 10 s at 10x, switched halfway
    assert run.buffer["held"] == 160 and run.buffer["dropped"] == 320 and run.buffer_bytes == 160 * (150 * 4 + 8)
    # Before the move the model has never seen the new placement; after it, it learns it from the buffer.
    assert before.accuracy_switched < 0.9
    assert final.accuracy_switched >= before.accuracy_switched + 0.08
    assert final.accuracy_original >= 0.9
