"""Simulated single-lead ECG rhythm segments: the compute market's demo dataset (dataset name "ecg").

Four rhythm classes, as a wearable ECG patch would have to tell them apart from a few seconds of signal:

| label | class | rhythm |
|---|---|---|
| 0 | normal | sinus rhythm, 60–90 bpm, small beat-to-beat variability |
| 1 | bradycardia | sinus rhythm, 35–55 bpm |
| 2 | tachycardia | sinus rhythm, 110–160 bpm |
| 3 | atrial_fibrillation | no P waves, irregularly irregular RR intervals (mean 70–150 bpm), fibrillatory f-waves |

How a segment is made. Beat shapes come from neurokit2's ECGSYN model (McSharry et al. 2003, `nk.ecg_simulate`),
simulated at a grid of heart rates, with and without P waves (ECGSYN's P amplitude set to 0 for AF); ECGSYN
narrows the waves and shortens QT as the rate rises, so a beat's shape carries its rate as in a real ECG. A
segment draws its RR intervals (sinus: a base rate with about 3 % beat-to-beat variation; AF: independent RR
intervals with a 20 % spread), time-stretches the beat of the nearest grid rate to each interval, starts at a
random phase, and adds per-segment amplitude, baseline wander, Gaussian noise and, for AF, f-waves.

The beat bank is shipped (ecg_beats.npz beside this module, 32 beats, float32) rather than simulated at load time.
ECGSYN integrates an ODE with scipy's adaptive RK45 at rtol 1e-3, and its step choices follow last-bit differences
of numpy's BLAS kernels: with OPENBLAS_CORETYPE=Sandybridge instead of this machine's Haswell kernels the beats
moved by up to 0.14 mV and 65 % of the dataset's values changed. Replicated training needs the same data bits on
every worker's CPU, so the bank is simulated once (`simulate_beat_bank`; `write_beat_bank()`
rewrites the file) and everything after it is plain numpy: 2000 segments take well under a second.

Each segment is standardized on its own (zero mean, unit variance) and rounded to a 1/256 grid, so last-bit
differences of numpy's SIMD kernels (sin, the normal sampler) almost never reach the data; a job plan still pins
the digest of the loaded arrays (see `fedchain.learning.units`). `nk.data()` is never called (it downloads).

The result is cached in memory per configuration (regenerating is cheaper than a disk cache would be worth).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

CLASSES: Final = ("normal", "bradycardia", "tachycardia", "atrial_fibrillation")
# Mean heart rate (bpm) of each class, drawn uniformly per segment.
CLASS_RATES: Final = ((60.0, 90.0), (35.0, 55.0), (110.0, 160.0), (70.0, 150.0))
AF_LABEL: Final = 3

# The beat bank: ECGSYN at these rates (bpm), simulated at BANK_RATE Hz.
BANK_HEART_RATES: Final = tuple(float(h) for h in range(30, 181, 10))
BANK_RATE: Final = 500
BANK_SECONDS: Final = 8.0
BANK_PATH: Final = Path(__file__).with_name("ecg_beats.npz")
# ECGSYN's default wave amplitudes (P, Q, R, S, T); AF beats have no P wave.
ECGSYN_AI: Final = (1.2, -5.0, 30.0, -7.5, 0.75)
# Where a beat is cut: this fraction of the RR interval before the R peak (mid T-P segment at every rate).
CUT_BEFORE_R: Final = 0.45
QUANTUM: Final = 1.0 / 256.0


@dataclass(frozen=True)
class EcgConfig:
    """What to generate: `per_class` segments of each class, `seconds` long at `sampling_rate` Hz."""

    per_class: int = 500
    sampling_rate: int = 100
    seconds: float = 2.5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("per_class", "sampling_rate", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ValueError(f"EcgConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float) or not 0.5 <= self.seconds <= 60:
            raise ValueError(f"EcgConfig.seconds must be in [0.5, 60], got {self.seconds!r}")
        object.__setattr__(self, "seconds", float(self.seconds))
        if not 50 <= self.sampling_rate <= BANK_RATE:
            raise ValueError(f"EcgConfig.sampling_rate must be in [50, {BANK_RATE}], got {self.sampling_rate}")

    @property
    def length(self) -> int:
        """Samples per segment."""
        return round(self.seconds * self.sampling_rate)


def _ecgsyn(heart_rate: float, p_amplitude: float) -> np.ndarray:
    import neurokit2 as nk  # imported here: it takes seconds, and only regenerating the bank needs it

    ai = (p_amplitude, *ECGSYN_AI[1:])
    # heart_rate_std=0 and noise=0: a noiseless recording at a constant rate; variability is added per segment.
    signal = nk.ecg_simulate(
        duration=BANK_SECONDS,
        sampling_rate=BANK_RATE,
        heart_rate=heart_rate,
        heart_rate_std=0,
        noise=0,
        random_state=0,
        method="ecgsyn",
        ai=ai,
    )
    return np.asarray(signal, dtype=np.float64)


def _one_beat(signal: np.ndarray, heart_rate: float) -> np.ndarray:
    """One cardiac cycle from the recording's steady state, from mid T-P to mid T-P, ends pinned to 0."""
    period = BANK_RATE * 60.0 / heart_rate
    low = signal.min() + 0.7 * (signal.max() - signal.min())
    peaks = np.flatnonzero((signal[1:-1] > signal[:-2]) & (signal[1:-1] >= signal[2:]) & (signal[1:-1] > low)) + 1
    # The last full cycle: past the start-up transient, and clear of the end.
    peaks = peaks[(peaks - CUT_BEFORE_R * period >= 0) & (peaks + (1 - CUT_BEFORE_R) * period < len(signal) - 1)]
    if len(peaks) == 0:
        raise RuntimeError(f"no complete ECGSYN beat at {heart_rate} bpm")
    start = peaks[-1] - CUT_BEFORE_R * period
    grid = start + np.arange(int(np.floor(period)) + 1)
    beat = np.interp(grid, np.arange(len(signal)), signal)
    # Remove the straight line through the ends so consecutive beats join without steps.
    ramp = np.linspace(beat[0], beat[-1], len(beat))
    return beat - ramp


BankKey = tuple[float, bool]


def _bank_name(key: BankKey) -> str:
    return f"{'p' if key[1] else 'nop'}_{round(key[0]):03d}"


def simulate_beat_bank(heart_rates: tuple[float, ...] = BANK_HEART_RATES) -> dict[BankKey, np.ndarray]:
    """(heart rate, has P wave) -> one ECGSYN beat at BANK_RATE Hz (float32), simulated now with neurokit2.

    A few seconds; the bits depend on the machine's BLAS kernels (see the module docstring), so datasets are built
    from the shipped bank (`beat_bank`), which this regenerates. Beware: neurokit2 0.2.13's ECGSYN can loop
    forever (its resampled RR series ends in 0; seen with ecg_simulate(duration=10, sampling_rate=100,
    heart_rate=120)); the shipped grid of rates at BANK_RATE Hz and BANK_SECONDS does not.
    """
    bank: dict[BankKey, np.ndarray] = {}
    for heart_rate in heart_rates:
        for p_wave in (True, False):
            signal = _ecgsyn(heart_rate, ECGSYN_AI[0] if p_wave else 0.0)
            bank[(heart_rate, p_wave)] = _one_beat(signal, heart_rate).astype(np.float32)
    return bank


def write_beat_bank(path: Path = BANK_PATH) -> None:
    """Simulate the bank and write it to `path` (the shipped file by default)."""
    bank = simulate_beat_bank()
    np.savez_compressed(path, **{_bank_name(key): beat for key, beat in bank.items()})


@functools.lru_cache(maxsize=1)
def beat_bank() -> dict[BankKey, np.ndarray]:
    """The shipped beat bank: (heart rate, has P wave) -> one beat at BANK_RATE Hz, for every BANK_HEART_RATES."""
    bank: dict[BankKey, np.ndarray] = {}
    with np.load(BANK_PATH, allow_pickle=False) as stored:
        for heart_rate in BANK_HEART_RATES:
            for p_wave in (True, False):
                beat = np.array(stored[_bank_name((heart_rate, p_wave))], dtype=np.float64)
                beat.setflags(write=False)
                bank[(heart_rate, p_wave)] = beat
    return bank


def _rr_intervals(rng: np.random.Generator, label: int, seconds: float) -> np.ndarray:
    """RR intervals (s) covering `seconds` plus one beat, for a segment of class `label`."""
    low, high = CLASS_RATES[label]
    mean_rr = 60.0 / rng.uniform(low, high)
    count = int(np.ceil(seconds / mean_rr * 1.6)) + 3
    if label == AF_LABEL:
        # Irregularly irregular: independent intervals, spread ~20 %, never shorter than 0.25 s.
        rr = mean_rr * rng.lognormal(0.0, 0.2, size=count)
        return np.maximum(rr, 0.25)
    # Sinus rhythm: slow drift plus small beat-to-beat variation (~3 %).
    drift = 1.0 + 0.02 * np.sin(2 * np.pi * rng.uniform() + np.arange(count) * rng.uniform(0.2, 0.6))
    return mean_rr * drift * (1.0 + 0.03 * rng.standard_normal(count))


def _segment(rng: np.random.Generator, label: int, config: EcgConfig, bank: dict[BankKey, np.ndarray]) -> np.ndarray:
    fs = config.sampling_rate
    rr = _rr_intervals(rng, label, config.seconds)
    onsets = np.concatenate([[0.0], np.cumsum(rr)])
    # A random phase: the window starts somewhere in the first cycle.
    times = rng.uniform(0.0, rr[0]) + np.arange(config.length) / fs
    beat_of = np.searchsorted(onsets, times, side="right") - 1
    phase = (times - onsets[beat_of]) / rr[beat_of]
    rates = np.array(BANK_HEART_RATES)
    p_wave = label != AF_LABEL
    out = np.empty(config.length)
    for beat in np.unique(beat_of):
        rate = 60.0 / rr[beat]
        template = bank[(float(rates[np.argmin(np.abs(rates - rate))]), p_wave)]
        mask = beat_of == beat
        out[mask] = np.interp(phase[mask] * (len(template) - 1), np.arange(len(template)), template)
    t = np.arange(config.length) / fs
    out *= rng.uniform(0.7, 1.3)
    # Baseline wander (breathing, movement) and sensor noise.
    out += rng.uniform(0.0, 0.3) * np.sin(2 * np.pi * (rng.uniform(0.1, 0.5) * t + rng.uniform()))
    out += rng.uniform(0.01, 0.05) * rng.standard_normal(config.length)
    if label == AF_LABEL:
        # Fibrillatory waves: a small 4-8 Hz oscillation whose frequency wanders.
        freq = rng.uniform(4.0, 8.0) * (1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t))
        out += rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * (np.cumsum(freq) / fs + rng.uniform()))
    return out


def _generate(config: EcgConfig) -> tuple[np.ndarray, np.ndarray]:
    bank = beat_bank()
    rng = np.random.default_rng([config.seed, 0xEC6])
    labels = np.repeat(np.arange(len(CLASSES), dtype=np.int64), config.per_class)
    labels = labels[rng.permutation(len(labels))]
    x = np.stack([_segment(rng, int(label), config, bank) for label in labels])
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    x = np.round(x / QUANTUM) * QUANTUM
    return x.astype(np.float32), labels


@functools.lru_cache(maxsize=4)
def simulate_ecg(config: EcgConfig = EcgConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Segments `x` (float32, (n, length)) and labels `y` (int64, (n,)); n = 4 * per_class, classes balanced.

    Deterministic for a configuration. Read-only arrays, shared through the cache.
    """
    x, y = _generate(config)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_ecg() -> tuple[np.ndarray, np.ndarray]:
    """The registered "ecg" dataset: the default configuration (2000 segments of 2.5 s at 100 Hz)."""
    return simulate_ecg(EcgConfig())


__all__ = [
    "BANK_HEART_RATES",
    "BANK_PATH",
    "BANK_RATE",
    "CLASSES",
    "CLASS_RATES",
    "EcgConfig",
    "beat_bank",
    "load_ecg",
    "simulate_beat_bank",
    "simulate_ecg",
    "write_beat_bank",
]
