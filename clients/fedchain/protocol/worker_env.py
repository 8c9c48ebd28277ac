"""The deterministic worker environment: what a worker process sets before anything imports torch or numpy.

Single-threaded BLAS/OpenMP, MKL's reproducible code path, torch's baseline CPU kernels (read when torch is
imported, so they must be set at process start), a fixed hash seed. The market's work units do not depend on them
(`fedchain.learning.cnn_numpy` computes in numpy float64 from IEEE-exact operations); torch code in the same worker
does. Light: importing this loads no numpy or torch.
"""

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
