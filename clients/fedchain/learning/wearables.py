"""Wearable sensor tasks from recorded signals shipped in a wheel (sktime's data files; no download at run time).

| task | signal | label | recordings |
|---|---|---|---|
| `basic_motions` | wrist smartwatch accelerometer + gyroscope, 10 Hz | activity (4) | 80 recorded, 10 s each |
| `mitdb_rate` | single-lead ECG, 360 Hz, windows at 180 Hz | heart-rate class (3) | 1 recorded + 24 synthetic |

Windows are cut per recording as a device cuts them (`sensors.cut_windows`); the held-out test set is whole
recordings (never windows of a recording also trained on), and devices get whole recordings
(`data.device_partition`), so shares are naturally non-IID. Every task's description (`describe`) records the
source, licence, citation, sampling rate, window, channels and label set.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from fedchain.learning.data import Dataset, stratified_split
from fedchain.learning.sensors import WindowFormat, cut_windows, package_data_file, read_labelled_csv, read_ts
from fedchain.learning.spec import DatasetSpec, ModelSpec, TaskSpec, TrainSpec

SKTIME: Final = "sktime"


@dataclass(frozen=True, eq=False)
class Recordings:
    """A task's recordings before windowing: signals[i] is (channels, T_i) float64 at the task's sampling rate,
    annotations[i] a label per sample (a window's label is its largest), subjects[i] who wore the sensor,
    recorded[i] False for synthetic recordings, label[i] the recording's class for stratifying the split (or 0),
    always_test[i] True for a recording that must be held out."""

    signals: list[np.ndarray]
    annotations: list[np.ndarray]
    subjects: list[str]
    recorded: np.ndarray
    label: np.ndarray
    always_test: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass(frozen=True)
class WearableTask:
    """A task's fixed facts (what its description says) and how to build its recordings."""

    name: str
    title: str
    window: WindowFormat
    hop: int
    classes: tuple[str, ...]
    hidden: tuple[int, ...]
    source: str
    licence: str
    citation: tuple[str, ...]
    channel_names: tuple[str, ...]
    notes: str
    build: Callable[[], Recordings]
    # Local epochs per round: tuned so that 5 devices x 10 rounds of FedAvg (the demo's defaults) get close to
    # centralised training (the ECG task sits on a plateau for its first ~25 epochs).
    local_epochs: int = 1

    def model_spec(self) -> ModelSpec:
        return ModelSpec(
            kind="cnn1d",
            input_dim=self.window.features,
            hidden=self.hidden,
            num_classes=len(self.classes),
            channels=self.window.channels,
        )


# --- BasicMotions (UEA archive): a smartwatch on the wrist --------------------------------------------------------

BASIC_MOTIONS_FILES: Final = (
    "datasets/data/BasicMotions/BasicMotions_TRAIN.ts",
    "datasets/data/BasicMotions/BasicMotions_TEST.ts",
)
BASIC_MOTIONS_CLASSES: Final = ("Standing", "Walking", "Running", "Badminton")


def _basic_motions() -> Recordings:
    signals: list[np.ndarray] = []
    labels: list[int] = []
    for relative in BASIC_MOTIONS_FILES:
        values, names, _ = read_ts(package_data_file(SKTIME, relative, SKTIME))
        signals.extend(values)
        labels.extend(BASIC_MOTIONS_CLASSES.index(n) for n in names)
    label = np.asarray(labels, dtype=np.int64)
    return Recordings(
        signals=signals,
        annotations=[np.full(s.shape[1], y, dtype=np.int64) for s, y in zip(signals, label, strict=True)],
        # The files do not say which of the 4 students made a recording: each recording is its own group.
        subjects=["unknown"] * len(signals),
        recorded=np.ones(len(signals), dtype=bool),
        label=label,
        always_test=np.zeros(len(signals), dtype=bool),
    )


# --- MIT-BIH ECG (sktime's mitdb.csv): one recorded strip, grown into synthetic patients -------------------------

MITDB_FILE: Final = "datasets/data/mitdb/mitdb.csv"
MITDB_RATE: Final = 360
MITDB_DECIMATE: Final = 2  # 360 Hz -> 180 Hz, a wearable ECG patch's rate
MITDB_PATIENTS: Final = 24
MITDB_PATIENT_SECONDS: Final = 60.0
MITDB_CLASSES: Final = ("bradycardia", "normal_rate", "tachycardia")
# A synthetic patient's mean heart rate (bpm) by class; the gaps keep labels unambiguous at the class borders.
MITDB_CLASS_RATES: Final = ((40.0, 55.0), (65.0, 95.0), (105.0, 150.0))
NORMAL_RATE_LABEL: Final = 1


def _r_peaks(signal: np.ndarray, rate: int) -> np.ndarray:
    """R peaks of a clean single-lead strip: local maxima in the top 40 % of the range, >= 0.28 s apart."""
    threshold = signal.mean() + 0.6 * (signal.max() - signal.mean())
    top = (signal[1:-1] > signal[:-2]) & (signal[1:-1] >= signal[2:]) & (signal[1:-1] > threshold)
    peaks: list[int] = []
    for c in np.flatnonzero(top) + 1:
        if peaks and c - peaks[-1] < 0.28 * rate:
            if signal[c] > signal[peaks[-1]]:
                peaks[-1] = int(c)
        else:
            peaks.append(int(c))
    return np.asarray(peaks, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def mitdb_strip() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recorded strip (360 Hz, mV), its R peaks, and which R peaks lie in the file's anomaly span."""
    values, labels = read_labelled_csv(package_data_file(SKTIME, MITDB_FILE, SKTIME))
    peaks = _r_peaks(values, MITDB_RATE)
    return values, peaks, labels[peaks] == 1


def _cycles(values: np.ndarray, peaks: np.ndarray) -> list[np.ndarray]:
    """Each interior beat, from the midpoint before its R peak to the midpoint after."""
    return [values[(peaks[i - 1] + peaks[i]) // 2 : (peaks[i] + peaks[i + 1]) // 2] for i in range(1, len(peaks) - 1)]


def _decimate(signal: np.ndarray) -> np.ndarray:
    """Mean of each MITDB_DECIMATE samples (a boxcar anti-alias filter, then downsampling)."""
    usable = len(signal) // MITDB_DECIMATE * MITDB_DECIMATE
    return signal[:usable].reshape(-1, MITDB_DECIMATE).mean(axis=1)


def _synthetic_patient(
    rng: np.random.Generator, label: int, normal: list[np.ndarray], ectopic: np.ndarray, recorded_rr: float
) -> np.ndarray:
    """A patient's 60 s strip made of the recorded beats at the patient's own mean heart rate (each beat
    time-stretched, 3 % beat-to-beat jitter), the recorded premature beat now and then, gain, baseline wander and
    noise; at the decimated rate."""
    low, high = MITDB_CLASS_RATES[label]
    rate_factor = recorded_rr / (60.0 / rng.uniform(low, high))  # > 1: slower heart than the recorded patient's
    ectopic_probability = rng.uniform(0.0, 0.1)
    target = round(MITDB_PATIENT_SECONDS * MITDB_RATE)
    pieces: list[np.ndarray] = []
    length, previous_ectopic = 0, False
    while length < target:
        is_ectopic = not previous_ectopic and rng.uniform() < ectopic_probability
        beat = ectopic if is_ectopic else normal[int(rng.integers(len(normal)))]
        n = max(8, round(len(beat) * rate_factor * (1.0 + 0.03 * rng.standard_normal())))
        pieces.append(np.interp(np.linspace(0, len(beat) - 1, n), np.arange(len(beat)), beat))
        length += n
        previous_ectopic = is_ectopic
    strip = np.concatenate(pieces)[:target]
    t = np.arange(target) / MITDB_RATE
    strip = strip * rng.uniform(0.7, 1.3)
    strip = strip + rng.uniform(0.0, 0.2) * np.sin(2 * np.pi * (rng.uniform(0.15, 0.4) * t + rng.uniform()))
    strip = strip + rng.uniform(0.01, 0.04) * rng.standard_normal(target)
    return _decimate(strip)


def _mitdb_rate(patients: int = MITDB_PATIENTS, seed: int = 0) -> Recordings:
    values, peaks, is_ectopic = mitdb_strip()
    cycles = _cycles(values, peaks)
    interior = is_ectopic[1:-1]
    if interior.sum() != 1:
        raise ValueError(f"expected one premature beat in sktime's mitdb strip, found {int(interior.sum())}")
    ectopic = cycles[int(np.flatnonzero(interior)[0])]
    normal = [c for c, e in zip(cycles, interior, strict=True) if not e]
    recorded_rr = float(np.median(np.diff(peaks))) / MITDB_RATE
    recorded = _decimate(values)
    signals = [recorded[None, :]]
    labels = [NORMAL_RATE_LABEL]  # the recorded patient: ~73 bpm
    for patient in range(patients):
        label = patient % len(MITDB_CLASSES)
        strip = _synthetic_patient(np.random.default_rng([seed, patient, 0xEC7]), label, normal, ectopic, recorded_rr)
        signals.append(strip[None, :])
        labels.append(label)
    n = len(signals)
    label_array = np.asarray(labels, dtype=np.int64)
    return Recordings(
        signals=signals,
        annotations=[np.full(s.shape[1], y, dtype=np.int64) for s, y in zip(signals, label_array, strict=True)],
        subjects=["mitdb-recorded"] + [f"synthetic-{p}" for p in range(patients)],
        recorded=np.arange(n) == 0,
        label=label_array,
        # The one recorded strip is always held out: the model is judged on real beats too.
        always_test=np.arange(n) == 0,
    )


UEA_CITATION: Final = (
    "Bagnall A, Dau HA, Lines J, Flynn M, Large J, Bostrom A, Southam P, Keogh E. The UEA multivariate time series "
    "classification archive, 2018. arXiv:1811.00075.",
    "Dataset: BasicMotions, UEA & UCR Time Series Classification Repository, https://timeseriesclassification.com",
)
MITDB_CITATION: Final = (
    "Moody GB, Mark RG. The impact of the MIT-BIH Arrhythmia Database. IEEE Eng in Med and Biol 20(3):45-50 "
    "(May-June 2001). doi:10.1109/51.932724",
    "Goldberger AL, Amaral LAN, Glass L, Hausdorff JM, Ivanov PCh, Mark RG, Mietus JE, Moody GB, Peng C-K, Stanley "
    "HE. PhysioBank, PhysioToolkit, and PhysioNet. Circulation 101(23):e215-e220 (2000). "
    "doi:10.1161/01.CIR.101.23.e215",
)

TASKS: Final[dict[str, WearableTask]] = {
    "basic_motions": WearableTask(
        name="basic_motions",
        title="activity recognition from a wrist smartwatch (accelerometer + gyroscope)",
        window=WindowFormat(channels=6, length=25, sampling_rate=10.0),
        hop=10,
        classes=BASIC_MOTIONS_CLASSES,
        hidden=(16, 32),
        source="UEA archive BasicMotions, as shipped in sktime's wheel (sktime/datasets/data/BasicMotions/*.ts)",
        licence=(
            "no explicit licence in the UEA/UCR archive (its maintainers ask users to cite it); sktime, which ships "
            "the files, is BSD-3-Clause"
        ),
        citation=UEA_CITATION,
        channel_names=("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"),
        notes=(
            "Recorded: 4 students, 4 activities, 5 recordings each = 80 recordings of 10 s at 10 Hz. The files do "
            "not say which student made a recording, so recordings (not subjects) are the unit of split: the test "
            "set is whole held-out recordings (stratified by activity), and each device holds whole recordings. "
            "Windows: 2.5 s (25 samples), cut every 1 s per recording; channels standardised with the training "
            "recordings' per-channel mean and standard deviation."
        ),
        build=_basic_motions,
        local_epochs=2,
    ),
    "mitdb_rate": WearableTask(
        name="mitdb_rate",
        title="heart-rate class (brady / normal / tachy) from a single-lead ECG patch, recorded MIT-BIH beats",
        window=WindowFormat(channels=1, length=450, sampling_rate=MITDB_RATE / MITDB_DECIMATE),
        hop=180,
        classes=MITDB_CLASSES,
        hidden=(8, 16, 32),
        source="MIT-BIH Arrhythmia Database (PhysioNet), a 20.8 s strip shipped in sktime's wheel "
        "(sktime/datasets/data/mitdb/mitdb.csv, 7,500 samples at 360 Hz with an anomaly label)",
        licence="MIT-BIH Arrhythmia Database: Open Data Commons Attribution License v1.0 (PhysioNet); "
        "sktime itself is BSD-3-Clause",
        citation=MITDB_CITATION,
        channel_names=("ecg",),
        notes=(
            "RECORDED vs SYNTHETIC: the recorded strip is one patient (26 beats, ~73 bpm, one premature beat in "
            "the file's anomaly span): alone it supports no training, only a check (all its windows are "
            "normal_rate). The training data are SYNTHETIC patients grown from it with numpy (not neurokit2), "
            f"{MITDB_PATIENTS} of them, 8 per class: 60 s each of the recorded beats time-stretched to the "
            "patient's own mean rate (bradycardia 40-55, normal 65-95, tachycardia 105-150 bpm), with 3 % "
            "beat-to-beat jitter, the recorded premature beat at 0-10 % of beats, gain, baseline wander and noise. "
            "The recorded strip is always in the test set (reported apart). Windows: 2.5 s at 180 Hz (decimated "
            "from 360 Hz), cut every 1 s. Beat morphology is that of one patient and stretching a whole beat "
            "is cruder than real rate-dependent QT change: a pipeline on real beats, not a clinical classifier. "
            "sktime's mitdb strip (one premature beat) cannot support an arrhythmia-beat task: we tried ectopic-"
            "window detection and a 1-D CNN with average pooling stayed at the majority class in federated runs."
        ),
        build=_mitdb_rate,
        local_epochs=6,
    ),
}


def wearable_task(name: str) -> WearableTask:
    if name not in TASKS:
        raise ValueError(f"unknown wearable task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


@dataclass(frozen=True, eq=False)
class WearableSplit:
    """A task's windows split by recording, standardised per channel with the training recordings' statistics."""

    train: Dataset
    test: Dataset
    recordings: Recordings
    test_recordings: np.ndarray  # indices into recordings
    mean: np.ndarray  # (channels,)
    std: np.ndarray

    def standardise(self, windows: np.ndarray) -> np.ndarray:
        """(n, channels, length) raw windows -> (n, channels * length) float32, as the model reads them."""
        scaled = (np.asarray(windows, dtype=np.float64) - self.mean[None, :, None]) / self.std[None, :, None]
        return scaled.reshape(scaled.shape[0], -1).astype(np.float32)


def recording_windows(task: WearableTask, signal: np.ndarray, annotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A recording's raw windows (n, channels, length) and their labels (the largest annotation in each)."""
    windows = cut_windows(signal, task.window.length, task.hop)
    labels = (
        cut_windows(annotation[None, :], task.window.length, task.hop)[:, 0, :].max(axis=1)
        if len(windows)
        else np.zeros(0)
    )
    return windows, labels.astype(np.int64)


@functools.lru_cache(maxsize=4)
def recordings_of(name: str) -> Recordings:
    return wearable_task(name).build()


@functools.lru_cache(maxsize=8)
def wearable_split(spec: DatasetSpec) -> WearableSplit:
    """`spec.test_fraction` of the recordings (stratified by the recording's class, seeded by `spec.seed`) plus the
    always-held-out ones form the test set; everything else is the training set. groups = recording index."""
    task = wearable_task(spec.name)
    recs = recordings_of(spec.name)
    candidates = np.flatnonzero(~recs.always_test)
    if len(np.unique(recs.label[candidates])) > 1:
        _, test_local = stratified_split(recs.label[candidates], spec.test_fraction, spec.seed)
    else:
        order = np.random.default_rng(spec.seed).permutation(len(candidates))
        test_local = order[: math.ceil(spec.test_fraction * len(candidates))]
    test_recordings = np.sort(np.concatenate([candidates[test_local], np.flatnonzero(recs.always_test)]))
    per_recording = [recording_windows(task, s, a) for s, a in zip(recs.signals, recs.annotations, strict=True)]
    is_test = np.isin(np.arange(len(per_recording)), test_recordings)
    train_windows = np.concatenate([w for (w, _), t in zip(per_recording, is_test, strict=True) if not t])
    mean = train_windows.mean(axis=(0, 2))
    std = train_windows.std(axis=(0, 2))
    std[std == 0] = 1.0
    split_parts: dict[bool, Dataset] = {}
    for held_out in (False, True):
        chosen = [i for i in range(len(per_recording)) if is_test[i] == held_out]
        windows = np.concatenate([per_recording[i][0] for i in chosen])
        scaled = ((windows - mean[None, :, None]) / std[None, :, None]).reshape(len(windows), -1)
        labels = np.concatenate([per_recording[i][1] for i in chosen])
        groups = np.concatenate([np.full(len(per_recording[i][1]), i, dtype=np.int64) for i in chosen])
        data = Dataset(scaled, labels, groups)
        for arr in (data.x, data.y, data.groups):
            arr.setflags(write=False)
        split_parts[held_out] = data
    return WearableSplit(split_parts[False], split_parts[True], recs, test_recordings, mean, std)


def wearable_task_spec(name: str, seed: int = 0) -> TaskSpec:
    """The task's description: its dataset, its 1-D CNN, and local training tuned for it."""
    task = wearable_task(name)
    return TaskSpec(
        dataset=DatasetSpec(name=name, test_fraction=0.25, seed=seed),
        model=task.model_spec(),
        train=TrainSpec(local_epochs=task.local_epochs, batch_size=16, lr=0.05, momentum=0.9),
        seed=seed,
    )


def _subjects(recs: Recordings) -> str:
    if "unknown" in recs.subjects:
        return "4 (which recording is whose is not in the files)"
    recorded = len({s for s, r in zip(recs.subjects, recs.recorded, strict=True) if r})
    synthetic = len({s for s, r in zip(recs.subjects, recs.recorded, strict=True) if not r})
    return f"{recorded} recorded + {synthetic} synthetic"


def describe(name: str) -> dict[str, Any]:
    """What `fedchain datasets` lists for a wearable task (counts from the default split)."""
    task = wearable_task(name)
    split = wearable_split(DatasetSpec(name=name))
    recs = split.recordings
    synthetic = int((~recs.recorded).sum())
    return {
        "name": name,
        "title": task.title,
        "source": task.source,
        "licence": task.licence,
        "citation": list(task.citation),
        "records": len(recs.signals),
        "recorded_records": int(recs.recorded.sum()),
        "synthetic_records": synthetic,
        "subjects": _subjects(recs),
        "windows": len(split.train) + len(split.test),
        "train_windows": len(split.train),
        "test_windows": len(split.test),
        "classes": list(task.classes),
        "sampling_rate_hz": task.window.sampling_rate,
        "window_seconds": task.window.seconds,
        "window_samples": task.window.length,
        "hop_samples": task.hop,
        "channels": list(task.channel_names),
        "notes": task.notes,
    }


__all__ = [
    "TASKS",
    "Recordings",
    "WearableSplit",
    "WearableTask",
    "describe",
    "mitdb_strip",
    "recording_windows",
    "recordings_of",
    "wearable_split",
    "wearable_task",
    "wearable_task_spec",
]
