"""Units computed through a local Ray are the bits computed in this process (skipped without the ray package)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest

from fedchain.learning.units import default_plan, initial_checkpoint, result_digest, run_unit
from fedchain.market.parallel import RAY_LOOPBACK_ENV, RayUnitRunner

# Not imported here: ray reads its loopback settings at import time, which RayUnitRunner sets first.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray package is not installed"),
]


def test_ray_units_equal_in_process_units(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in RAY_LOOPBACK_ENV.items():  # restored after the test (RayUnitRunner sets them for good)
        monkeypatch.setenv(name, value)

    plan = replace(default_plan(), num_stages=1, units_per_stage=2, steps_per_unit=20)
    checkpoint = initial_checkpoint(plan)
    runner = RayUnitRunner(local_cpus=2)
    try:
        assert runner.slots == 2
        results = runner.run(plan, checkpoint, [(0, 0), (0, 1)])
    finally:
        runner.shutdown()
    expected = [run_unit(plan, checkpoint, 0, i) for i in range(2)]
    assert [result_digest(r) for r in results] == [result_digest(e) for e in expected]
    assert result_digest(results[0]) != result_digest(results[1])
