"""Datasets, their federated partitions, and a device's data arriving over time."""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedchain.learning.ecg import load_ecg
from fedchain.learning.spec import DatasetSpec

# How many times partition_dirichlet redraws before giving up on its min_size.
DIRICHLET_MAX_ATTEMPTS = 1000


# eq=False: array fields make field-wise equality and hashing meaningless; identity semantics instead.
@dataclass(frozen=True, eq=False)
class Dataset:
    """Features `x` (float32, (n, d)) and integer labels `y` (int64, (n,)); `groups` (int64, (n,)), when given,
    names the recording each row was cut from, so partitions and splits keep a recording's windows together."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float32)
        y = np.asarray(self.y, dtype=np.int64)
        if x.ndim != 2:
            raise ValueError(f"Dataset.x must be 2-D (n, d), got shape {x.shape}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"Dataset.y must have shape ({x.shape[0]},), got {y.shape}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        if self.groups is not None:
            groups = np.asarray(self.groups, dtype=np.int64)
            if groups.shape != y.shape:
                raise ValueError(f"Dataset.groups must have shape {y.shape}, got {groups.shape}")
            object.__setattr__(self, "groups", groups)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray) -> Dataset:
        """The rows at `indices` (copies); a boolean mask also works."""
        idx = np.asarray(indices)
        # Casting a mask to int64 would silently select rows 0 and 1 instead.
        idx = np.flatnonzero(idx) if idx.dtype == np.bool_ else idx.astype(np.int64, copy=False)
        return Dataset(self.x[idx], self.y[idx], None if self.groups is None else self.groups[idx])


def _sklearn_data_file(name: str) -> Path | None:
    """A data file scikit-learn bundles (sklearn/datasets/data/NAME), found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")  # a top-level package: located, not executed
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


# scikit-learn's copy of the UCI Breast Cancer Wisconsin (Diagnostic) table (Wolberg, Street, Mangasarian;
# CC BY 4.0), byte for byte, gzipped: for a light device installed without scikit-learn (a small gateway).
BREAST_CANCER_COPY = Path(__file__).with_name("breast_cancer.csv.gz")


def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    # Bundled with scikit-learn: no download, works offline. Read the CSV directly (as
    # sklearn.datasets.load_breast_cancer does, line for line) so a device never imports scikit-learn, which
    # costs about 1 s and 100 MiB (scipy, pandas). Without scikit-learn (or in a zipped install of it), the same
    # bytes from fedchain's own copy.
    path = _sklearn_data_file("breast_cancer.csv")
    text = path.read_bytes() if path is not None else gzip.decompress(BREAST_CANCER_COPY.read_bytes())
    with io.StringIO(text.decode("utf-8"), newline="") as csv_file:
        rows = csv.reader(csv_file)
        header = next(rows)
        n_samples, n_features = int(header[0]), int(header[1])
        x = np.empty((n_samples, n_features))
        y = np.empty((n_samples,), dtype=int)
        for i, row in enumerate(rows):
            x[i] = np.asarray(row[:-1], dtype=np.float64)
            y[i] = np.asarray(row[-1], dtype=int)
    return x, y


LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"breast_cancer": _breast_cancer}
# Simulated single-lead ECG rhythm segments (fedchain.learning.ecg): the compute market's demo task.
LOADERS["ecg"] = load_ecg


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's `sklearn.utils.extmath._approximate_mode`, draw for draw (ties broken by `rng`)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        values = np.sort(np.unique(remainder))[::-1]
        for value in values:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices of `train_test_split(..., test_size=test_fraction, random_state=seed,
    stratify=y)` in scikit-learn 1.5-1.9 (StratifiedShuffleSplit), computed with numpy alone: the same indices in
    the same order, so datasets stay bit-identical (a unit test compares the two)."""
    y = np.asarray(y)
    n_samples = int(y.shape[0])
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = math.ceil(test_fraction * n_samples)
    n_train = n_samples - n_test
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if n_train == 0:
        raise ValueError(f"test_fraction {test_fraction} of {n_samples} samples leaves no training samples")
    if np.min(class_counts) < 2:
        raise ValueError(f"every class needs at least 2 samples to stratify; too few: {classes[class_counts < 2]}")
    if n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"{n_train} train and {n_test} test samples cannot hold each of {len(classes)} classes")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[np.integer] = []
    test: list[np.integer] = []
    for i in range(len(classes)):
        permutation = rng.permutation(class_counts[i])
        perm_indices_class_i = class_indices[i].take(permutation, mode="clip")
        train.extend(perm_indices_class_i[: n_i[i]])
        test.extend(perm_indices_class_i[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


@functools.lru_cache(maxsize=8)
def load_dataset(spec: DatasetSpec) -> tuple[Dataset, Dataset]:
    """Stratified, seeded train/test split, standardised with the train split's statistics only.

    A wearable task (fedchain.learning.wearables) is split by recording instead, never by window.
    """
    # Imported here: wearables builds on this module.
    from fedchain.learning.wearables import TASKS, wearable_split

    if spec.name in TASKS:
        split = wearable_split(spec)
        return split.train, split.test
    if spec.name not in LOADERS:
        raise ValueError(f"unknown dataset {spec.name!r}; known datasets: {sorted([*LOADERS, *TASKS])}")
    x, y = LOADERS[spec.name]()
    train_idx, test_idx = stratified_split(y, spec.test_fraction, spec.seed)
    x_train, x_test, y_train, y_test = x[train_idx], x[test_idx], y[train_idx], y[test_idx]
    # Test statistics must not leak into the features the model is trained on.
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    train = Dataset((x_train - mean) / std, y_train)
    test = Dataset((x_test - mean) / std, y_test)
    # The result is shared through the cache: make it read-only so no caller can corrupt it for the others.
    for arr in (train.x, train.y, test.x, test.y):
        arr.setflags(write=False)
    return train, test


def partition_iid(num_samples: int, num_parts: int, seed: int) -> list[np.ndarray]:
    """A seeded shuffle cut into `num_parts` disjoint index arrays whose sizes differ by at most one."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if num_samples < num_parts:
        raise ValueError(f"cannot split {num_samples} samples into {num_parts} non-empty parts")
    perm = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, num_parts)]


def partition_dirichlet(
    labels: np.ndarray, num_parts: int, alpha: float, seed: int, min_size: int = 10
) -> list[np.ndarray]:
    """Label-skewed non-IID split: each class is shared out by Dirichlet(alpha) proportions (small alpha, more skew).

    Redraws until every part has at least `min_size` samples; ValueError after a bounded number of attempts.
    """
    labels = np.asarray(labels)
    n = int(labels.shape[0])
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if num_parts * min_size > n:
        raise ValueError(f"cannot give {num_parts} parts at least {min_size} samples each out of {n}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(DIRICHLET_MAX_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_parts)]
        sizes = np.zeros(num_parts, dtype=np.int64)
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            props = rng.dirichlet(np.full(num_parts, alpha))
            # As in NIID-Bench: parts already over the fair share take no more, which keeps sizes from exploding.
            props = props * (sizes < n / num_parts)
            total = props.sum()
            props = props / total if total > 0 else np.full(num_parts, 1.0 / num_parts)
            cuts = (np.cumsum(props) * len(idx)).astype(np.int64)[:-1]
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
                sizes[i] += len(chunk)
        if sizes.min() >= min_size:
            return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split of {n} samples into {num_parts} parts gave every part >= {min_size} "
        f"samples in {DIRICHLET_MAX_ATTEMPTS} attempts; raise alpha or lower min_size"
    )


def parse_partition(text: str) -> tuple[int, int]:
    """Parse "I/N" (0-based I < N) into (I, N)."""
    pieces = text.strip().split("/")
    if len(pieces) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in pieces):
        raise ValueError(f"partition must look like I/N with integers, e.g. 0/5; got {text!r}")
    index, num_parts = (int(p) for p in pieces)
    if num_parts < 1:
        raise ValueError(f"partition {text!r}: the number of parts must be >= 1")
    if index >= num_parts:
        raise ValueError(f"partition {text!r}: index must be in 0..{num_parts - 1} (0-based)")
    return index, num_parts


# Below this many records per device, IID shares overlap (scale simulations: 1,000 devices on a 426-record table).
MIN_DISJOINT_SAMPLES = 2
OVERLAP_SAMPLES = 10


def overlapping_share(num_samples: int, index: int, size: int, seed: int) -> np.ndarray:
    """Device `index`'s `size` distinct records, drawn by (seed, index) alone: shares of different devices may
    overlap, and a device's share does not depend on how many devices there are."""
    if not 0 < size <= num_samples:
        raise ValueError(f"cannot draw {size} of {num_samples} records")
    rng = np.random.default_rng([seed, index, 0x5CA1E])
    return np.sort(rng.choice(num_samples, size=size, replace=False))


def recording_partition(groups: np.ndarray, num_parts: int, seed: int) -> list[np.ndarray]:
    """Whole recordings per device (a seeded shuffle of the recordings, cut into `num_parts`): a device holds the
    windows of its own recordings only, the natural non-IID split of sensor data."""
    recordings = np.unique(groups)
    if num_parts > len(recordings):
        raise ValueError(f"cannot give {num_parts} devices a recording each: the training set has {len(recordings)}")
    order = np.random.default_rng(seed).permutation(recordings)
    return [np.flatnonzero(np.isin(groups, mine)) for mine in np.array_split(order, num_parts)]


def device_partition(train: Dataset, index: int, num_parts: int, alpha: float | None, seed: int) -> Dataset:
    """Device `index`'s share of `train`: IID if `alpha` is None, else Dirichlet(alpha) label skew."""
    if not 0 <= index < num_parts:
        raise ValueError(f"partition index must be in 0..{num_parts - 1}, got {index}")
    if alpha is None and train.groups is not None:
        return train.subset(recording_partition(train.groups, num_parts, seed)[index])
    if alpha is None and num_parts > len(train) // MIN_DISJOINT_SAMPLES:
        # More devices than the table can give disjoint shares: each draws its own records (shares overlap).
        return train.subset(overlapping_share(len(train), index, OVERLAP_SAMPLES, seed))
    if alpha is None:
        parts = partition_iid(len(train), num_parts, seed)
    else:
        # Many devices on a small dataset cannot all get 10 samples; ask for what can be had. A skewed split of
        # many devices may still never reach it (20 devices, alpha 0.5, 426 samples): halve the floor until one
        # does. Splits that succeed at the first floor are unchanged.
        min_size = min(10, max(1, len(train) // (2 * num_parts)))
        while True:
            try:
                parts = partition_dirichlet(train.y, num_parts, alpha, seed, min_size=min_size)
                break
            except ValueError:
                if min_size <= 1:
                    raise
                min_size //= 2
    return train.subset(parts[index])


class OnlineStream:
    """A device's local data arriving over time: an initial share, then a further share each round."""

    def __init__(
        self, data: Dataset, initial_fraction: float = 0.3, per_round_fraction: float = 0.1, seed: int = 0
    ) -> None:
        if len(data) == 0:
            raise ValueError("OnlineStream needs at least one sample")
        if not 0.0 < initial_fraction <= 1.0:
            raise ValueError(f"initial_fraction must be in (0, 1], got {initial_fraction}")
        if not 0.0 <= per_round_fraction <= 1.0:
            raise ValueError(f"per_round_fraction must be in [0, 1], got {per_round_fraction}")
        self.data = data
        self.initial_fraction = initial_fraction
        self.per_round_fraction = per_round_fraction
        self.order = np.random.default_rng(seed).permutation(len(data))
        n = len(data)
        # Integer counts, so round boundaries do not wobble with float rounding (0.3 + 7 * 0.1 < 1.0).
        self._initial = max(1, int(np.floor(initial_fraction * n + 0.5)))
        self._per_round = int(np.floor(per_round_fraction * n + 0.5))
        if per_round_fraction > 0:
            self._per_round = max(1, self._per_round)

    def num_seen(self, round_index: int) -> int:
        """How many samples have arrived by `round_index` (0 = the initial share)."""
        if round_index < 0:
            raise ValueError(f"round_index must be >= 0, got {round_index}")
        return min(len(self.data), self._initial + round_index * self._per_round)

    def seen(self, round_index: int) -> Dataset:
        """The samples that have arrived by `round_index`, in order of arrival."""
        return self.data.subset(self.order[: self.num_seen(round_index)])


__all__ = [
    "LOADERS",
    "Dataset",
    "OnlineStream",
    "device_partition",
    "load_dataset",
    "parse_partition",
    "partition_dirichlet",
    "partition_iid",
    "recording_partition",
    "stratified_split",
]
