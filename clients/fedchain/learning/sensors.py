"""Recorded sensor signals that a package ships in its wheel, cut into windows as a wearable device cuts them.

The files are read straight from the installed package's directory (located with importlib, never imported), so a
device pays neither the package's import (sktime pulls pandas and scikit-learn) nor a download: the data is on disk
once the wheel is installed. Windows are checked the way a device checks what its sensor hands it (`check_window`):
a window of the wrong length or sampling rate, or one with NaN samples from a faulty sensor, is refused.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MissingPackageData(RuntimeError):
    """A task's data ships in a pip package that is not installed (or does not carry the file)."""


def package_data_file(package: str, relative: str, pip_name: str) -> Path:
    """PACKAGE/RELATIVE inside the installed package, found without importing it; a clear error naming the pip
    package when it is missing."""
    spec = importlib.util.find_spec(package)  # a top-level package: located, not executed
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageData(
            f"this task's recorded data ships in the pip package {pip_name!r}, which is not installed: "
            f"pip install {pip_name}"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise MissingPackageData(
        f"the installed {pip_name!r} does not carry {relative} (looked in {list(spec.submodule_search_locations)}); "
        f"install a version that ships it: pip install {pip_name}"
    )


def read_ts(path: Path) -> tuple[np.ndarray, list[str], tuple[str, ...]]:
    """A UEA/UCR .ts file of equal-length multivariate series: values (n, channels, length) float64, each series'
    class name, and the class names the header declares (in header order)."""
    series: list[np.ndarray] = []
    labels: list[str] = []
    class_names: tuple[str, ...] = ()
    in_data = False
    with path.open("r", encoding="utf-8") as ts_file:
        for raw in ts_file:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                lowered = line.lower()
                if lowered.startswith("@classlabel"):
                    class_names = tuple(line.split()[2:])
                elif lowered.startswith("@data"):
                    in_data = True
                continue
            *dimensions, label = line.split(":")
            series.append(np.array([[float(v) for v in dim.split(",")] for dim in dimensions]))
            labels.append(label.strip())
    if not series:
        raise ValueError(f"{path}: no series after @data")
    return np.stack(series), labels, class_names


def read_labelled_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A two-column CSV with a header (value,label): the values (float64) and labels (int64)."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if table.shape[1] != 2:
        raise ValueError(f"{path}: expected 2 columns (value, label), got {table.shape[1]}")
    return table[:, 0], table[:, 1].astype(np.int64)


def window_starts(num_samples: int, length: int, hop: int) -> np.ndarray:
    """Where a device cutting `length`-sample windows every `hop` samples starts each complete window."""
    if length < 1 or hop < 1:
        raise ValueError(f"window length and hop must be >= 1, got {length}, {hop}")
    if num_samples < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, num_samples - length + 1, hop, dtype=np.int64)


def cut_windows(signal: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(channels, T) -> (windows, channels, length): every complete window, `hop` samples apart."""
    starts = window_starts(signal.shape[-1], length, hop)
    return (
        np.stack([signal[..., s : s + length] for s in starts])
        if len(starts)
        else np.zeros((0, *signal.shape[:-1], length))
    )


@dataclass(frozen=True)
class WindowFormat:
    """What a task's windows look like: channels x length samples at sampling_rate Hz."""

    channels: int
    length: int
    sampling_rate: float

    @property
    def seconds(self) -> float:
        return self.length / self.sampling_rate

    @property
    def features(self) -> int:
        """A flattened window's width (channel-major), as the model reads it."""
        return self.channels * self.length


class WindowRejected(ValueError):
    """A window a device must not train on; `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"window refused ({reason}): {detail}")
        self.reason = reason


REJECT_REASONS = ("wrong_length", "wrong_rate", "wrong_channels", "not_finite")


def check_window(samples: np.ndarray, sampling_rate: float, expected: WindowFormat) -> np.ndarray:
    """The window as float64 (channels, length) if it is what the task expects; WindowRejected otherwise.

    A faulty sensor's NaN or infinite samples refuse the whole window: a model must never see them (one NaN in a
    batch turns every weight into NaN).
    """
    array = np.asarray(samples, dtype=np.float64)
    if array.ndim == 1 and expected.channels == 1:
        array = array[None, :]
    if sampling_rate != expected.sampling_rate:
        raise WindowRejected(
            "wrong_rate", f"sampled at {sampling_rate} Hz, the task expects {expected.sampling_rate} Hz"
        )
    if array.ndim != 2 or array.shape[0] != expected.channels:
        raise WindowRejected("wrong_channels", f"shape {array.shape}, the task expects {expected.channels} channels")
    if array.shape[1] != expected.length:
        raise WindowRejected(
            "wrong_length", f"{array.shape[1]} samples, the task expects {expected.length} ({expected.seconds:g} s)"
        )
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise WindowRejected("not_finite", f"{bad} NaN/infinite samples (faulty sensor)")
    return array


__all__ = [
    "REJECT_REASONS",
    "MissingPackageData",
    "WindowFormat",
    "WindowRejected",
    "check_window",
    "cut_windows",
    "package_data_file",
    "read_labelled_csv",
    "read_ts",
    "window_starts",
]
