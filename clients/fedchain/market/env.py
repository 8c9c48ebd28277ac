"""The environment a worker process sets before anything imports torch (light: importing this loads no numpy or
torch). Equal to `fedchain.learning.units.deterministic_env()`, which cannot be imported before torch is configured
because it lives in a module that imports torch; tests/unit/market/test_market_env.py keeps the two equal."""

from __future__ import annotations

import os

WORKER_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
}


def apply_worker_env() -> None:
    """Set the deterministic worker environment in this process (call before importing torch or numpy)."""
    os.environ.update(WORKER_ENV)
