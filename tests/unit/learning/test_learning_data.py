"""Datasets, partitions and online streams."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.learning.data import (
    Dataset,
    OnlineStream,
    device_partition,
    load_dataset,
    parse_partition,
    partition_dirichlet,
    partition_iid,
)
from fedchain.learning.spec import DatasetSpec


def test_load_shapes_and_types() -> None:
    train, test = load_dataset(DatasetSpec())
    assert train.x.shape == (426, 30) and test.x.shape == (143, 30)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert len(train) + len(test) == 569
    assert set(np.unique(train.y)) == {0, 1}
    # Stratified: the class ratio is (almost) the same on both sides.
    assert abs(train.y.mean() - test.y.mean()) < 0.01


def test_standardised_with_train_statistics_only() -> None:
    train, test = load_dataset(DatasetSpec())
    np.testing.assert_allclose(train.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.x.std(axis=0), 1.0, atol=1e-4)
    # Test features use the train split's mean/std, so they are not themselves exactly centred.
    assert np.abs(test.x.mean(axis=0)).max() > 1e-3


def test_cached_and_read_only() -> None:
    a, _ = load_dataset(DatasetSpec())
    b, _ = load_dataset(DatasetSpec())
    assert a is b
    with pytest.raises(ValueError):
        a.x[0, 0] = 1.0


def test_split_depends_on_seed() -> None:
    a, _ = load_dataset(DatasetSpec(seed=0))
    b, _ = load_dataset(DatasetSpec(seed=1))
    assert not np.array_equal(a.y, b.y) or not np.array_equal(a.x, b.x)


def test_unknown_dataset_lists_known() -> None:
    with pytest.raises(ValueError, match="breast_cancer"):
        load_dataset(DatasetSpec(name="mnist"))


def test_dataset_validation_and_subset() -> None:
    data = Dataset(np.arange(12).reshape(6, 2), np.array([0, 1, 0, 1, 0, 1]))
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64
    sub = data.subset(np.array([4, 1]))
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.x, [[8, 9], [2, 3]])
    np.testing.assert_array_equal(sub.y, [0, 1])
    np.testing.assert_array_equal(data.subset(data.y == 1).x[:, 0], [2, 6, 10])
    with pytest.raises(ValueError):
        Dataset(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError):
        Dataset(np.zeros((3, 2)), np.zeros(2))


@pytest.mark.parametrize(("n", "parts"), [(426, 5), (10, 3), (7, 7), (100, 1)])
def test_iid_partition(n: int, parts: int) -> None:
    result = partition_iid(n, parts, seed=1)
    assert len(result) == parts
    joined = np.concatenate(result)
    assert len(joined) == n and set(joined.tolist()) == set(range(n))  # disjoint and complete
    sizes = [len(p) for p in result]
    assert max(sizes) - min(sizes) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(result, partition_iid(n, parts, seed=1), strict=True))
    if parts > 1 and n > parts:
        assert not np.array_equal(result[0], partition_iid(n, parts, seed=2)[0])


def test_iid_partition_rejects() -> None:
    with pytest.raises(ValueError):
        partition_iid(3, 0, seed=0)
    with pytest.raises(ValueError):
        partition_iid(3, 4, seed=0)


def _labels() -> np.ndarray:
    return load_dataset(DatasetSpec())[0].y


def _ratio_spread(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    ratios = [labels[p].mean() for p in parts]
    return float(max(ratios) - min(ratios))


def test_dirichlet_partition_is_a_partition() -> None:
    labels = _labels()
    parts = partition_dirichlet(labels, 5, alpha=0.5, seed=0)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and set(joined.tolist()) == set(range(len(labels)))
    assert min(len(p) for p in parts) >= 10


def test_dirichlet_deterministic_per_seed() -> None:
    labels = _labels()
    a = partition_dirichlet(labels, 5, alpha=0.5, seed=3)
    b = partition_dirichlet(labels, 5, alpha=0.5, seed=3)
    c = partition_dirichlet(labels, 5, alpha=0.5, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_small_alpha_is_skewed() -> None:
    labels = _labels()
    iid = [_ratio_spread(labels, partition_iid(len(labels), 5, seed=s)) for s in range(5)]
    skewed = [_ratio_spread(labels, partition_dirichlet(labels, 5, alpha=0.1, seed=s)) for s in range(5)]
    # IID parts all sit near the global ~63% benign ratio; alpha=0.1 gives parts that are almost one class.
    assert max(iid) < 0.2
    assert min(skewed) > 0.5
    assert np.mean(skewed) > 4 * np.mean(iid)


@pytest.mark.parametrize("min_size", [1, 10, 40])
def test_dirichlet_min_size_honoured(min_size: int) -> None:
    labels = _labels()
    for seed in range(3):
        parts = partition_dirichlet(labels, 5, alpha=0.3, seed=seed, min_size=min_size)
        assert min(len(p) for p in parts) >= min_size


def test_dirichlet_rejects() -> None:
    labels = _labels()
    with pytest.raises(ValueError):
        partition_dirichlet(labels, 5, alpha=0.0, seed=0)
    with pytest.raises(ValueError):
        partition_dirichlet(labels, 0, alpha=1.0, seed=0)
    with pytest.raises(ValueError, match="at least"):
        partition_dirichlet(labels, 50, alpha=1.0, seed=0, min_size=10)
    # Feasible on paper but, with such skew, never drawn: bounded attempts, then a clear error.
    with pytest.raises(ValueError, match="attempts"):
        partition_dirichlet(labels, 5, alpha=0.01, seed=0, min_size=80)


def test_parse_partition() -> None:
    assert parse_partition("0/5") == (0, 5)
    assert parse_partition(" 4/5 ") == (4, 5)
    assert parse_partition("0/1") == (0, 1)


@pytest.mark.parametrize("text", ["", "5", "5/5", "6/5", "-1/5", "1/0", "a/b", "1/2/3", "1.0/2", "1/"])
def test_parse_partition_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="partition"):
        parse_partition(text)


def test_device_partition() -> None:
    train, _ = load_dataset(DatasetSpec())
    iid = [device_partition(train, i, 5, None, seed=0) for i in range(5)]
    assert sum(len(d) for d in iid) == len(train)
    skew = [device_partition(train, i, 5, 0.5, seed=0) for i in range(5)]
    assert sum(len(d) for d in skew) == len(train)
    np.testing.assert_array_equal(device_partition(train, 2, 5, 0.5, seed=0).y, skew[2].y)
    with pytest.raises(ValueError):
        device_partition(train, 5, 5, None, seed=0)


def test_online_stream_grows_and_caps() -> None:
    data = Dataset(np.arange(200, dtype=np.float32).reshape(100, 2), np.arange(100) % 2)
    stream = OnlineStream(data, initial_fraction=0.3, per_round_fraction=0.1, seed=0)
    counts = [stream.num_seen(r) for r in range(12)]
    assert counts[:8] == [30, 40, 50, 60, 70, 80, 90, 100]
    assert counts[8:] == [100] * 4
    prev = stream.seen(0)
    for r in range(1, 9):
        cur = stream.seen(r)
        assert len(cur) == counts[r]
        # Data only arrives: what was seen before is a prefix of what is seen now.
        np.testing.assert_array_equal(cur.x[: len(prev)], prev.x)
        prev = cur
    assert sorted(stream.seen(20).x[:, 0].tolist()) == sorted(data.x[:, 0].tolist())


def test_online_stream_deterministic_and_seeded() -> None:
    data = Dataset(np.arange(100, dtype=np.float32).reshape(50, 2), np.arange(50) % 2)
    a = OnlineStream(data, seed=1).seen(2)
    b = OnlineStream(data, seed=1).seen(2)
    c = OnlineStream(data, seed=2).seen(2)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_online_stream_small_and_invalid() -> None:
    tiny = Dataset(np.zeros((3, 2)), np.zeros(3))
    stream = OnlineStream(tiny, initial_fraction=0.01, per_round_fraction=0.01)
    assert [stream.num_seen(r) for r in range(4)] == [1, 2, 3, 3]  # always at least one sample, always growing
    frozen = OnlineStream(tiny, initial_fraction=0.5, per_round_fraction=0.0)
    assert frozen.num_seen(10) == frozen.num_seen(0) == 2
    with pytest.raises(ValueError):
        stream.num_seen(-1)
    with pytest.raises(ValueError):
        OnlineStream(tiny, initial_fraction=0.0)
    with pytest.raises(ValueError):
        OnlineStream(tiny, per_round_fraction=1.5)
    with pytest.raises(ValueError):
        OnlineStream(Dataset(np.zeros((0, 2)), np.zeros(0)))


def test_many_skewed_devices_still_get_a_partition() -> None:
    # 20 devices at alpha 0.5 on breast cancer never all reach 10 samples: the floor is lowered, not an error.
    from fedchain.learning.data import device_partition, load_dataset
    from fedchain.learning.spec import DatasetSpec

    train, _ = load_dataset(DatasetSpec())
    parts = [device_partition(train, i, 20, 0.5, seed=0) for i in range(20)]
    assert sum(len(p) for p in parts) == len(train)
    assert min(len(p) for p in parts) >= 1


def test_more_devices_than_records_draw_overlapping_shares() -> None:
    from fedchain.learning.data import OVERLAP_SAMPLES, device_partition, overlapping_share

    train, _ = load_dataset(DatasetSpec())
    shares = [device_partition(train, i, 1000, None, seed=0) for i in (0, 1, 999)]
    assert all(len(share) == OVERLAP_SAMPLES for share in shares)
    # A share depends on (seed, device index) only: the same with 1,000 or 2,000 devices, another for another seed.
    again = device_partition(train, 1, 2000, None, seed=0)
    assert np.array_equal(again.x, shares[1].x)
    assert not np.array_equal(device_partition(train, 1, 1000, None, seed=1).x, shares[1].x)
    picked = overlapping_share(len(train), 5, OVERLAP_SAMPLES, seed=0)
    assert len(set(picked.tolist())) == OVERLAP_SAMPLES and picked.max() < len(train)
    # Disjoint IID shares are unchanged wherever the table suffices.
    assert sum(len(device_partition(train, i, 100, None, seed=0)) for i in range(100)) == len(train)
    with pytest.raises(ValueError):
        overlapping_share(5, 0, 6, seed=0)
