"""Several claimed units at once through Ray (optional: the `ray` package), on this machine or a Ray cluster.

A unit is bit-identical in any process (fedchain.learning.units), so where it runs does not change its digest; Ray
only lets one worker account keep several CPUs busy. Ray is kept on loopback (see TOOLCHAIN.md): usage stats off,
the node address pinned to 127.0.0.1 with no route probe, stray HTTP requests sent to a dead local port, no
dashboard. Its worker processes get the deterministic worker environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from fedchain.learning.ray_env import RAY_LOOPBACK_ENV
from fedchain.learning.types import Weights
from fedchain.learning.units import JobPlan, run_unit
from fedchain.protocol.worker_env import WORKER_ENV


def _run_unit_task(plan_json: bytes, checkpoint: Weights, stage: int, index: int) -> Weights:
    """A unit in a Ray worker process (the plan travels as its canonical JSON)."""
    return run_unit(JobPlan.from_json(plan_json), checkpoint, stage, index)


class RayUnitRunner:
    """Runs units as Ray tasks: a local Ray with `local_cpus` CPUs, or the cluster at `address`."""

    def __init__(self, address: str | None = None, local_cpus: int | None = None, temp_dir: str | None = None):
        if (address is None) == (local_cpus is None):
            raise ValueError("give either a Ray address or a number of local CPUs")
        if local_cpus is not None and local_cpus < 1:
            raise ValueError(f"local CPUs must be >= 1, got {local_cpus}")
        os.environ.update(RAY_LOOPBACK_ENV)
        import ray

        self._ray: Any = ray
        self._own_temp_dir: str | None = None
        runtime_env = {"env_vars": dict(WORKER_ENV)}
        if address is not None:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            # Ray's socket paths must stay short: a temp dir under /tmp, not deep in the project.
            if temp_dir is None:
                temp_dir = self._own_temp_dir = tempfile.mkdtemp(prefix="fcray-", dir="/tmp")
            self.temp_dir = temp_dir
            ray.init(
                num_cpus=local_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=self.temp_dir,
                runtime_env=runtime_env,
                log_to_driver=False,
            )
        self._task = ray.remote(num_cpus=1)(_run_unit_task)
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def run(self, plan: JobPlan, checkpoint: Weights, units: Sequence[tuple[int, int]]) -> list[Weights]:
        """The results of units (stage, index), in the given order."""
        plan_json = plan.to_json()
        checkpoint_ref = self._ray.put(dict(checkpoint))
        refs = [self._task.remote(plan_json, checkpoint_ref, stage, index) for stage, index in units]
        return list(self._ray.get(refs))

    def shutdown(self) -> None:
        self._ray.shutdown()
        if self._own_temp_dir is not None:  # Ray's session logs and sockets, made for this runner only
            shutil.rmtree(self._own_temp_dir, ignore_errors=True)
