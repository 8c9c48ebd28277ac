"""Wearable tasks from recorded signals in sktime's wheel: the files read without importing sktime, windows cut per
recording, the split and device shares by recording, the multi-channel 1-D CNN, and bad windows refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedchain.learning.data import device_partition, load_dataset, recording_partition
from fedchain.learning.model import build_model, weight_shapes
from fedchain.learning.sensors import (
    MissingPackageData,
    WindowFormat,
    WindowRejected,
    check_window,
    cut_windows,
    package_data_file,
)
from fedchain.learning.spec import DatasetSpec, ModelSpec, TaskSpec, default_task_spec
from fedchain.learning.train import train_centralized
from fedchain.learning.wearables import TASKS, mitdb_strip, recordings_of, wearable_split, wearable_task_spec


def test_loading_a_wearable_task_reads_the_files_without_importing_sktime_or_pandas() -> None:
    code = (
        "import sys; from fedchain.learning.data import load_dataset; from fedchain.learning.spec import DatasetSpec;"
        "[load_dataset(DatasetSpec(name=n)) for n in ('basic_motions', 'mitdb_rate')];"
        "print('sktime' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False"]


def test_a_missing_package_is_named_in_the_error() -> None:
    with pytest.raises(MissingPackageData, match="pip install no-such-wheel"):
        package_data_file("no_such_package_xyz", "data/x.csv", "no-such-wheel")
    with pytest.raises(MissingPackageData, match="does not carry"):
        package_data_file("sktime", "datasets/data/none.csv", "sktime")


def test_basic_motions_is_80_recorded_recordings_split_by_recording() -> None:
    recs = recordings_of("basic_motions")
    assert len(recs.signals) == 80 and all(s.shape == (6, 100) for s in recs.signals)
    assert np.bincount(recs.label).tolist() == [20, 20, 20, 20] and recs.recorded.all()
    train, test = load_dataset(DatasetSpec(name="basic_motions"))
    assert train.x.shape == (480, 150) and test.x.shape == (160, 150)  # 8 windows of 2.5 s per 10 s recording
    assert not set(train.groups.tolist()) & set(test.groups.tolist())  # no recording on both sides
    assert np.bincount(test.y).tolist() == [40, 40, 40, 40]
    assert abs(float(train.x.mean())) < 0.05  # standardised with the training recordings' statistics


def test_windows_are_cut_per_recording_as_a_device_cuts_them() -> None:
    signal = np.arange(2 * 100, dtype=float).reshape(2, 100)
    windows = cut_windows(signal, 25, 10)
    assert windows.shape == (8, 2, 25)
    assert windows[1, 0, 0] == 10 and windows[-1, 1, -1] == 194  # the last 5 samples make no complete window
    assert cut_windows(signal[:, :20], 25, 10).shape[0] == 0


def test_mitdb_keeps_recorded_and_synthetic_apart() -> None:
    values, peaks, ectopic = mitdb_strip()
    assert values.shape == (7500,) and len(peaks) == 26 and ectopic.sum() == 1
    recs = recordings_of("mitdb_rate")
    assert recs.recorded.tolist() == [True] + [False] * 24
    split = wearable_split(DatasetSpec(name="mitdb_rate"))
    assert 0 in split.test_recordings.tolist()  # the real strip is always held out
    assert 0 not in set(split.train.groups.tolist())
    assert sorted(set(split.train.y.tolist())) == [0, 1, 2]
    assert "SYNTHETIC" in TASKS["mitdb_rate"].notes and "numpy (not neurokit2)" in TASKS["mitdb_rate"].notes


def test_devices_hold_whole_recordings_and_shares_are_non_iid() -> None:
    train, _ = load_dataset(DatasetSpec(name="basic_motions"))
    parts = [device_partition(train, i, 6, None, seed=0) for i in range(6)]
    groups = [set(p.groups.tolist()) for p in parts]
    assert sum(len(g) for g in groups) == 60 and len(set().union(*groups)) == 60
    assert sum(len(p) for p in parts) == len(train)
    assert any(len(set(p.y.tolist())) < 4 or np.bincount(p.y, minlength=4).std() > 0 for p in parts)
    with pytest.raises(ValueError, match="a recording each"):
        recording_partition(train.groups, 61, seed=0)


def test_the_multichannel_cnn_reads_channel_major_rows() -> None:
    spec = TASKS["basic_motions"].model_spec()
    assert spec.channels == 6 and spec.input_dim == 150
    assert weight_shapes(spec)["conv.0.weight"] == (16, 6, 7)
    model = build_model(spec)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == weight_shapes(spec)
    # Single-channel descriptions (and so every existing task's CID) are unchanged: "channels" is left out.
    assert "channels" not in ModelSpec(kind="cnn1d", input_dim=250, hidden=(8,)).to_dict()
    assert "channels" not in default_task_spec().to_json().decode()
    assert TaskSpec.from_json(wearable_task_spec("basic_motions").to_json()) == wearable_task_spec("basic_motions")
    with pytest.raises(ValueError, match="multiple of channels"):
        ModelSpec(kind="cnn1d", input_dim=151, hidden=(4,), channels=6)
    with pytest.raises(ValueError, match="needs kind 'cnn1d'"):
        ModelSpec(kind="mlp", input_dim=12, channels=6)


def test_basic_motions_trains_to_high_accuracy_on_held_out_recordings() -> None:
    spec = wearable_task_spec("basic_motions")
    train, test = load_dataset(spec.dataset)
    assert train_centralized(spec, train, test, epochs=15).accuracy >= 0.9


FORMAT = WindowFormat(channels=6, length=25, sampling_rate=10.0)


def test_check_window_refuses_wrong_length_rate_channels_and_nan() -> None:
    good = np.zeros((6, 25))
    assert check_window(good, 10.0, FORMAT).dtype == np.float64
    cases = [
        (np.zeros((6, 24)), 10.0, "wrong_length"),
        (good, 50.0, "wrong_rate"),
        (np.zeros((3, 25)), 10.0, "wrong_channels"),
    ]
    nan = good.copy()
    nan[2, 7] = np.nan
    cases.append((nan, 10.0, "not_finite"))
    inf = good.copy()
    inf[0, 0] = np.inf
    cases.append((inf, 10.0, "not_finite"))
    for samples, rate, reason in cases:
        with pytest.raises(WindowRejected, match=reason) as info:
            check_window(samples, rate, FORMAT)
        assert info.value.reason == reason


def test_the_exact_engine_reads_multichannel_rows_as_torch_does() -> None:
    import torch

    from fedchain.learning.exact_cnn import Engine
    from fedchain.learning.model import get_weights

    spec = TASKS["basic_motions"].model_spec()
    model = build_model(spec, seed=3)
    x = np.random.default_rng(0).standard_normal((4, spec.input_dim))
    params = {k: v.astype(np.float64) for k, v in get_weights(model).items()}
    logits, _ = Engine(spec).forward(params, x)
    with torch.no_grad():
        expected = model(torch.from_numpy(x.astype(np.float32))).numpy()
    assert np.allclose(logits, expected, atol=1e-4)


def test_task_spec_for_keeps_the_default_task_and_names_every_dataset() -> None:
    from fedchain.learning.catalog import task_spec_for

    assert task_spec_for("breast_cancer").to_json() == default_task_spec().to_json()
    assert task_spec_for("ecg").dataset.name == "ecg"
    assert task_spec_for("mitdb_rate").model.num_classes == 3
    with pytest.raises(ValueError, match="unknown dataset"):
        task_spec_for("nope")
