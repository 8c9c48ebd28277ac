"""Pure parts of the market roles: the cheater's perturbation and the demo's option checks (no chain)."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.app.market_demo import MarketDemoOptions
from fedchain.learning.units import result_digest
from fedchain.market.worker import cheat_result

A = "0x" + "11" * 20
B = "0x" + "22" * 20


def weights() -> dict[str, np.ndarray]:
    return {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "b": np.zeros(3, dtype=np.float32)}


def test_cheat_result_differs_from_honest_and_between_cheaters() -> None:
    honest = weights()
    a1, a2 = cheat_result(honest, A, 1, 0), cheat_result(honest, A.upper().replace("0X", "0x"), 1, 0)
    assert result_digest(a1) == result_digest(a2)  # deterministic, case-insensitive in the address
    assert result_digest(a1) != result_digest(honest)
    assert result_digest(cheat_result(honest, B, 1, 0)) != result_digest(a1)
    assert result_digest(cheat_result(honest, A, 1, 1)) != result_digest(a1)
    assert {k: v.dtype for k, v in a1.items()} == {"w": np.float32, "b": np.float32}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workers": 1, "cheaters": 0},
        {"workers": 3, "cheaters": 2},
        {"workers": 4, "cheaters": 2},
        {"workers": 2, "cheaters": 1},
        {"steps_per_unit": 0},
    ],
)
def test_demo_options_refuse_unworkable_setups(kwargs) -> None:
    with pytest.raises(ValueError):
        MarketDemoOptions(**kwargs).check()


def test_demo_options_defaults_and_roles() -> None:
    options = MarketDemoOptions(workers=3, cheaters=1)
    options.check()
    assert options.worker_indices() == [2, 3, 4]
    assert [options.is_cheater(i) for i in range(3)] == [False, False, True]
    MarketDemoOptions(workers=5, cheaters=2).check()
