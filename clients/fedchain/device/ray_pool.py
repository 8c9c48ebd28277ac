"""Pools of virtual devices as Ray actors: the same `DevicePool` on every core of a Ray cluster (or of this machine),
so 100k devices spread over a cluster without code changes.

Each actor holds one pool (a contiguous share of the devnet accounts and partitions, and its own relayer account
when updates are relayed). The driver registers every pool first, reports ready, then runs them. An actor that dies
(its node lost, its process killed) is started again, up to `max_restarts` times, and its devices resume from chain
state as a restarted `fedchain pool` does. Only plain data crosses Ray: indices and the settings dataclass.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedchain.device.runner import DeviceSettings
from fedchain.learning.ray_env import init_ray

log = logging.getLogger("fedchain.device.ray")


@dataclass(frozen=True)
class PoolShare:
    """One actor's devices: devnet accounts [start, end), partitions from `first_partition`, optional relayer."""

    start: int
    end: int
    first_partition: int
    relayer_account: int | None = None


def split_accounts(start: int, end: int, pools: int, relayers: list[int] | None = None) -> list[PoolShare]:
    """`pools` contiguous shares of the accounts [start, end) (partition i for account start + i)."""
    count = end - start
    if not 1 <= pools <= count:
        raise ValueError(f"cannot split {count} devices into {pools} pools")
    if relayers is not None and len(relayers) != pools:
        raise ValueError(f"{pools} pools need {pools} relayer accounts, got {len(relayers)}")
    shares = []
    for p in range(pools):
        lo, hi = p * count // pools, (p + 1) * count // pools
        shares.append(PoolShare(start + lo, start + hi, lo, relayers[p] if relayers else None))
    return shares


class _PoolActor:
    """The body of the Ray actor (kept importable without Ray for its unit test)."""

    def __init__(self, settings: DeviceSettings, share: PoolShare) -> None:
        import torch

        from fedchain.chain.accounts import devnet_accounts
        from fedchain.device.pool import DevicePool

        torch.set_num_threads(1)
        members = [(a, share.first_partition + j) for j, a in enumerate(devnet_accounts(range(share.start, share.end)))]
        relayer = devnet_accounts([share.relayer_account])[0] if share.relayer_account is not None else None
        self.pool = DevicePool(settings, members, relayer=relayer)

    def register(self) -> int:
        self.pool.ensure_registered()
        return len(self.pool)

    def run(self, max_rounds: int | None = None) -> int:
        return self.pool.run(max_rounds=max_rounds)


def run_on_ray(
    settings: DeviceSettings,
    shares: list[PoolShare],
    *,
    address: str | None = None,
    local_cpus: int | None = None,
    max_rounds: int | None = None,
    max_restarts: int = 3,
    on_ready: Callable[[], None] | None = None,
) -> list[int]:
    """Run one pool actor per share until the task ends; returns the rounds each pool trained in."""
    # No extra environment for the actors: they train exactly as a `fedchain device` process does.
    ray, temp_dir = init_ray(address, local_cpus)
    try:
        actor_class: Any = ray.remote(num_cpus=1)(_PoolActor)
        actors = [actor_class.remote(settings, share) for share in shares]
        sizes = ray.get([a.register.remote() for a in actors])
        log.info("%d pools of %s devices registered on Ray", len(actors), sizes)
        if on_ready is not None:
            on_ready()
        results: list[int] = [0] * len(shares)
        restarts = [0] * len(shares)
        pending = {a.run.remote(max_rounds): i for i, a in enumerate(actors)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            try:
                results[i] = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                restarts[i] += 1
                if restarts[i] > max_restarts:
                    raise RuntimeError(f"pool {i} died {restarts[i]} times on Ray: {exc}") from exc
                log.warning("pool %d died on Ray (%s): restarting it; its devices resume from chain state", i, exc)
                actors[i] = actor_class.remote(settings, shares[i])
                pending[actors[i].run.remote(max_rounds)] = i
        return results
    finally:
        ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
