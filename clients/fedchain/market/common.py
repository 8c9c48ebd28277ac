"""What the market's roles share: fetching a job's plan and checkpoints from IPFS, waiting for the market's events."""

from __future__ import annotations

import time

from fedchain.chain import EventFollower
from fedchain.learning.types import Weights
from fedchain.learning.units import JobPlan
from fedchain.storage import IpfsClient, digest_to_cid

PLAN_MAX_BYTES = 1 << 20


class JobFiles:
    """A job's plan and checkpoints, fetched by digest from IPFS (verified against their CIDs) and cached."""

    def __init__(self, ipfs: IpfsClient, cache_size: int = 4) -> None:
        self.ipfs = ipfs
        self.cache_size = cache_size
        self._plans: dict[bytes, JobPlan] = {}
        self._weights: dict[bytes, Weights] = {}

    def plan(self, plan_digest: bytes) -> JobPlan:
        if plan_digest not in self._plans:
            self._plans[plan_digest] = JobPlan.from_json(self.ipfs.cat(digest_to_cid(plan_digest), PLAN_MAX_BYTES))
        return self._plans[plan_digest]

    def weights(self, digest: bytes) -> Weights:
        if digest not in self._weights:
            if len(self._weights) >= self.cache_size:
                self._weights.pop(next(iter(self._weights)))
            self._weights[digest] = dict(self.ipfs.get_weights(digest_to_cid(digest)))
        return self._weights[digest]


def wait_for_events(follower: EventFollower, timeout: float, poll_interval: float) -> bool:
    """Poll until the contract emits something or `timeout` passes; True if events arrived."""
    deadline = time.monotonic() + timeout
    while True:
        if follower.poll():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_interval)
