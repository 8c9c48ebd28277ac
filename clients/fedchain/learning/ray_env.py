"""Ray on loopback only (see ../shared/TOOLCHAIN.md), for every part that spreads work over Ray: the compute
market's workers and the pools of virtual devices. Dependency-free: importing it loads neither ray nor torch.

Ray contacts outside addresses unless told otherwise: usage stats off, the node address pinned to 127.0.0.1 with no
route probe, stray HTTP requests sent to a dead local port, no dashboard.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

# Set before ray is imported (its constants read them at import time).
RAY_LOOPBACK_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    # ...but not the chain's and IPFS's loopback endpoints, which this process's own clients reach.
    "no_proxy": "127.0.0.1,localhost,::1",
    "NO_PROXY": "127.0.0.1,localhost,::1",
}


def init_ray(
    address: str | None = None, local_cpus: int | None = None, env_vars: dict[str, str] | None = None
) -> tuple[Any, str | None]:
    """Join the Ray cluster at `address`, or start a local Ray with `local_cpus` CPUs on loopback. Returns the ray
    module and the temp dir made for a local Ray (None when joining a cluster), for the caller to remove."""
    if (address is None) == (local_cpus is None):
        raise ValueError("give either a Ray address or a number of local CPUs")
    if local_cpus is not None and local_cpus < 1:
        raise ValueError(f"local CPUs must be >= 1, got {local_cpus}")
    os.environ.update(RAY_LOOPBACK_ENV)
    import ray

    runtime_env = {"env_vars": dict(env_vars or {})}
    if address is not None:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        return ray, None
    # Ray's socket paths must stay short: a temp dir under /tmp, not deep in the project.
    temp_dir = tempfile.mkdtemp(prefix="fcray-", dir="/tmp")
    ray.init(
        num_cpus=local_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        runtime_env=runtime_env,
        log_to_driver=False,
    )
    return ray, temp_dir
