"""The simulated ECG dataset: shapes, balance, determinism, the shipped beat bank, and the "ecg" loader."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.learning import ecg
from fedchain.learning.data import LOADERS, load_dataset
from fedchain.learning.ecg import BANK_HEART_RATES, BANK_RATE, CLASSES, EcgConfig, beat_bank, simulate_ecg
from fedchain.learning.spec import DatasetSpec


def test_default_dataset_shapes_balance_and_grid() -> None:
    x, y = simulate_ecg()
    assert x.shape == (2000, 250) and x.dtype == np.float32
    assert y.shape == (2000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * len(CLASSES)
    assert not x.flags.writeable and not y.flags.writeable
    assert np.isfinite(x).all()
    # Each segment standardized on its own, then rounded to the 1/256 grid.
    assert np.abs(x.mean(axis=1)).max() < 0.01
    assert np.abs(x.std(axis=1) - 1).max() < 0.01
    assert np.array_equal(x * 256, np.round(x * 256))
    # Labels are shuffled, not in blocks.
    assert len(np.unique(y[:40])) == 4


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    config = EcgConfig(per_class=20, seed=3)
    x1, y1 = simulate_ecg(config)
    x2, y2 = ecg._generate(config)  # bypassing the cache
    assert x1.tobytes() == x2.tobytes() and y1.tobytes() == y2.tobytes()
    x3, _ = simulate_ecg(EcgConfig(per_class=20, seed=4))
    assert x3.tobytes() != x1.tobytes()
    x4, y4 = simulate_ecg(EcgConfig(per_class=10, sampling_rate=50, seconds=5.0))
    assert x4.shape == (40, 250) and np.bincount(y4).tolist() == [10] * 4


def test_rates_are_visible_in_the_signal() -> None:
    """R peaks per segment (crude threshold count) rank the classes as their heart rates do."""
    x, y = simulate_ecg()
    peaks = ((x[:, 1:-1] > 2.0) & (x[:, 1:-1] >= x[:, :-2]) & (x[:, 1:-1] > x[:, 2:])).sum(axis=1)
    per_class = [float(np.median(peaks[y == c])) for c in range(4)]
    normal, brady, tachy, _ = per_class
    assert brady < normal < tachy


def test_af_segments_are_irregular() -> None:
    """Beat-to-beat variation of the RR intervals is larger in AF than in any sinus class."""
    rng = np.random.default_rng(0)
    spread = []
    for label in range(4):
        cv = [np.std(r) / np.mean(r) for r in (ecg._rr_intervals(rng, label, 2.5) for _ in range(200))]
        spread.append(float(np.median(cv)))
    assert spread[ecg.AF_LABEL] > 3 * max(spread[:3])


def test_loader_registered() -> None:
    assert "ecg" in LOADERS and "breast_cancer" in LOADERS
    train, test = load_dataset(DatasetSpec(name="ecg", test_fraction=0.25, seed=0))
    assert train.x.shape == (1500, 250) and test.x.shape == (500, 250)
    assert np.bincount(test.y).tolist() == [125] * 4


def test_shipped_beat_bank() -> None:
    bank = beat_bank()
    assert set(bank) == {(rate, p) for rate in BANK_HEART_RATES for p in (True, False)}
    for (rate, _), beat in bank.items():
        assert len(beat) == int(np.floor(BANK_RATE * 60 / rate)) + 1
        assert beat[0] == pytest.approx(0.0, abs=1e-6) and beat[-1] == pytest.approx(0.0, abs=1e-6)
        assert 0.8 < beat.max() < 1.6  # the R peak, ECGSYN's scale in mV
    # AF beats have no P wave: flat where the sinus beat has its P bump (before the QRS).
    sinus, af = bank[(60.0, True)], bank[(60.0, False)]
    r_peak = int(np.argmax(sinus))
    p_region = slice(r_peak - 150, r_peak - 50)
    assert sinus[p_region].max() > 0.15 and np.abs(af[p_region]).max() < 0.05


def test_bank_regenerates_close_to_the_shipped_one() -> None:
    """neurokit2's ECGSYN still gives (up to the machine's last bits, amplified by its ODE solver) the shipped beats."""
    fresh = ecg.simulate_beat_bank((70.0,))
    for key, beat in fresh.items():
        shipped = beat_bank()[key]
        assert beat.shape == shipped.shape
        assert np.abs(beat - shipped).max() < 0.2
        assert np.corrcoef(beat, shipped)[0, 1] > 0.98


@pytest.mark.parametrize(
    "kwargs",
    [{"per_class": 0}, {"per_class": True}, {"sampling_rate": 20}, {"seconds": 0.1}, {"seed": -1}, {"seconds": True}],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EcgConfig(**kwargs)  # type: ignore[arg-type]
