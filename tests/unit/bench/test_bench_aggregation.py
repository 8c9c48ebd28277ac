"""The aggregation speed benchmark's memory probe: streaming FedAvg's peak does not grow with the update count."""

from __future__ import annotations

from fedchain.bench.aggregation import fedavg_peak_bytes, run


def test_fedavg_peak_memory_is_one_model_not_n_updates() -> None:
    params = 200_000
    few, many = fedavg_peak_bytes(4, params), fedavg_peak_bytes(40, params)
    model = 4 * params
    assert many < 1.1 * few  # would be ~10x if the updates were kept
    assert many < 8 * model  # float64 accumulator, one float32 update and its float64 temporaries


def test_run_reports_every_strategy() -> None:
    report = run(n_updates=12, n_params=5_000, repeat=1)
    assert {"fedavg", "multi-krum", "bulyan", "trimmed-mean", "median"} <= set(report["seconds_best_of_repeat"])
    assert report["fedavg_memory"]["grows_with_updates"] is False
