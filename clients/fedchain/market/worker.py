"""A compute-market worker: stakes, claims units of open jobs, computes them bit-reproducibly, submits the digests.

Each unit is computed by two workers; the market pays both when their result digests agree. The result is uploaded
to IPFS as canonical safetensors without metadata, so equal weights give equal bytes and equal CIDs, and the
submitted digest is the CIDv0's sha256 (the coordinator fetches the accepted result by it). A disputed unit opens
an arbitration slot, which this worker takes like any other slot when it did not work on the unit.

Restart-safe: a claim this worker holds without a result (before its deadline) is computed and submitted first.
`cheat=True` (evaluation only) perturbs every result, so its digests differ from the honest replicas' and the
market slashes it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount

from fedchain.chain import (
    ContractRevert,
    EventFollower,
    JobInfo,
    JobStatus,
    MarketClient,
    UnitInfo,
    UnitStatus,
    connect,
)
from fedchain.chain.market import ARBITER_SLOT, ZERO_DIGEST
from fedchain.learning.attacks import gaussian_noise
from fedchain.learning.types import Weights
from fedchain.learning.units import check_deterministic_runtime, run_unit
from fedchain.market.common import JobFiles, wait_for_events
from fedchain.storage import IpfsClient, IpfsUnavailable, cid_to_digest

if TYPE_CHECKING:
    from fedchain.market.parallel import RayUnitRunner

log = logging.getLogger("fedchain.market.worker")

# Reverts of claimUnit that only mean someone else was faster or the stage moved on: look for other work.
LOST_RACE = {"NoFreeSlot", "UnitNotClaimable", "StageNotCurrent", "JobNotOpen"}
CHEAT_SIGMA = 0.01


@dataclass(frozen=True)
class WorkerSettings:
    market_address: str
    rpc_url: str
    ipfs_api: str
    job_id: int | None = None  # serve only this job (default: every job posted on the market)
    stake: int = 0  # stake to register with (0: the market's minStake); topped up to minStake at start
    cheat: bool = False  # evaluation only: submit perturbed results
    poll_interval: float = 0.25
    idle_wait: float = 2.0  # longest wait for an event before looking at the jobs again
    exit_when_done: bool = True  # stop once every job seen is finished or cancelled (and at least one was seen)
    withdraw_at_end: bool = True
    # Run several claimed units at once through Ray: a cluster's address, or a local Ray with this many CPUs.
    ray_address: str | None = None
    ray_local: int | None = None


@dataclass
class WorkerReport:
    """What this worker did."""

    address: str
    claimed: int = 0
    submitted: int = 0
    arbitrations: int = 0
    lost_races: int = 0
    gas_used: int = 0
    compute_seconds: float = 0.0
    withdrawn: int = 0
    units: list[tuple[int, int, int]] = field(default_factory=list)  # (job, unit, slot)


def cheat_result(honest: Weights, address: str, job_id: int, unit_index: int) -> Weights:
    """What a cheating worker submits: the honest result plus noise seeded by worker and unit (two cheaters do not
    agree with each other either)."""
    seed = int.from_bytes(hashlib.sha256(f"{address.lower()}:{job_id}:{unit_index}".encode()).digest()[:8], "big")
    return gaussian_noise(honest, sigma=CHEAT_SIGMA, seed=seed)


class MarketWorker:
    """Works on the market's open jobs until they end (see WorkerSettings)."""

    def __init__(self, settings: WorkerSettings, account: LocalAccount) -> None:
        self.settings = settings
        self.account = account
        self.w3 = connect(settings.rpc_url, wait=30)
        self.market = MarketClient.for_account(self.w3, settings.market_address, account)
        self.ipfs = IpfsClient(settings.ipfs_api)
        self.files = JobFiles(self.ipfs)
        head = self.w3.eth.block_number
        self.follower = EventFollower(self.w3, self.market.address, self.market.abi, from_block=head)
        self.report = WorkerReport(address=account.address)
        self._jobs: set[int] = set()
        self._jobs_scanned_to = 0
        self._excluded: set[tuple[int, int]] = set()
        self._out_of_stake = False
        runtime = check_deterministic_runtime()
        if not runtime.ok:
            raise RuntimeError(
                f"this process does not compute units bit-identically (canary {runtime.canary_digest}): refusing work"
            )
        self.runner: RayUnitRunner | None = None
        if settings.ray_address is not None or settings.ray_local is not None:
            from fedchain.market.parallel import RayUnitRunner

            self.runner = RayUnitRunner(address=settings.ray_address, local_cpus=settings.ray_local)
            log.info("computing up to %d units at once through Ray", self.runner.slots)
        if settings.cheat:
            log.warning("worker %s CHEATS (evaluation mode): its results are perturbed", self.address)

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def batch_size(self) -> int:
        """Units claimed and computed at once: one, or one per Ray CPU."""
        return 1 if self.runner is None else self.runner.slots

    # ------------------------------------------------------------ stake

    def ensure_registered(self) -> None:
        """Register with the configured stake, or top the stake up to minStake."""
        info = self.market.worker(self.address)
        min_stake = self.market.min_stake()
        if not info.registered:
            stake = max(self.settings.stake, min_stake)
            self.report.gas_used += self.market.register_worker(stake).gas_used
            log.info("registered %s with stake %d wei", self.address, stake)
        elif info.stake < min_stake:
            self.report.gas_used += self.market.add_stake(min_stake - info.stake).gas_used
            log.info("topped the stake of %s up to %d wei", self.address, min_stake)

    # ------------------------------------------------------------ main loop

    def run(self) -> WorkerReport:
        self.ensure_registered()
        try:
            while True:
                jobs = self._open_jobs()
                if not jobs and self._done():
                    break
                worked = False
                for job_id, job in jobs:
                    try:
                        worked = self._work_once(job_id, job) or worked
                    except IpfsUnavailable as exc:
                        log.warning("IPFS unavailable, will retry: %s", exc)
                if not worked:
                    wait_for_events(self.follower, self.settings.idle_wait, self.settings.poll_interval)
        finally:
            if self.runner is not None:
                self.runner.shutdown()
        if self.settings.withdraw_at_end:
            self.withdraw()
        log.info(
            "worker %s done: %d units submitted (%d arbitrations), %d wei withdrawn",
            self.address,
            self.report.submitted,
            self.report.arbitrations,
            self.report.withdrawn,
        )
        return self.report

    def withdraw(self) -> int:
        balance = self.market.balance_of(self.address)
        if balance > 0:
            self.report.gas_used += self.market.withdraw().gas_used
            self.report.withdrawn += balance
            log.info("withdrew %d wei", balance)
        return balance

    def _known_jobs(self) -> set[int]:
        if self.settings.job_id is not None:
            return {self.settings.job_id}
        count = self.market.job_count()
        self._jobs.update(range(self._jobs_scanned_to + 1, count + 1))
        self._jobs_scanned_to = count
        return self._jobs

    def _open_jobs(self) -> list[tuple[int, JobInfo]]:
        out = []
        for job_id in sorted(self._known_jobs()):
            try:
                job = self.market.job(job_id)
            except ContractRevert as exc:
                if exc.error == "UnknownJob":  # not posted yet
                    continue
                raise
            if job.status == JobStatus.OPEN:
                out.append((job_id, job))
        return out

    def _done(self) -> bool:
        return (
            self.settings.exit_when_done
            and bool(self._known_jobs())
            and all(self._job_ended(j) for j in self._known_jobs())
        )

    def _job_ended(self, job_id: int) -> bool:
        try:
            return self.market.job(job_id).status in (JobStatus.FINISHED, JobStatus.CANCELLED)
        except ContractRevert:
            return False

    def _work_once(self, job_id: int, job: JobInfo) -> bool:
        """Claim and compute units of the job's current stage (one, or one per Ray CPU); True if we did something."""
        units = {u: self.market.unit(job_id, u) for u in job.current_units()}
        limit = self.batch_size
        todo: list[tuple[int, int]] = []
        # Claims of ours without a result (a restart, or a slow submission): finish them first.
        now = self._now()
        for u, info in units.items():
            slot = info.slot_of(self.address)
            if slot is None or info.results[slot] != ZERO_DIGEST or info.status == UnitStatus.ACCEPTED:
                continue
            if now <= info.deadlines[slot] and len(todo) < limit:
                todo.append((u, slot))
        if not self._out_of_stake:
            offset = int(self.address, 16) % job.units_per_stage
            candidates = []
            for u, info in units.items():
                if (job_id, u) in self._excluded:
                    continue
                slot = info.claimable_slot(self.address, now)
                if slot is None:
                    continue
                # Arbitration first (it unblocks a unit and pays), then second replicas (they finish a unit), then
                # fresh units, each from this worker's own offset so that workers spread over the stage.
                rank = 0 if slot == ARBITER_SLOT else (1 if _replicas_taken(info) else 2)
                candidates.append((rank, (u - offset) % job.units_per_stage, u))
            for _, _, u in sorted(candidates):
                if len(todo) >= limit:
                    break
                slot = self._claim(job_id, u)
                if slot is not None:
                    todo.append((u, slot))
        if not todo:
            return False
        self._compute_and_submit(job_id, job, todo)
        return True

    def _claim(self, job_id: int, unit_index: int) -> int | None:
        try:
            result = self.market.claim_unit(job_id, unit_index)
        except ContractRevert as exc:
            if exc.error in LOST_RACE:
                self.report.lost_races += 1
                return None
            if exc.error == "AlreadyWorkedOn":  # excluded after a reset
                self._excluded.add((job_id, unit_index))
                return None
            if exc.error == "StakeTooLow":
                log.warning("stake below the market's minimum (slashed?): no more claims from %s", self.address)
                self._out_of_stake = True
                return None
            raise
        self.report.gas_used += result.gas_used
        self.report.claimed += 1
        slot = self.market.unit(job_id, unit_index).slot_of(self.address)
        if slot is None:  # cannot happen: the claim was mined
            raise RuntimeError(f"claimed unit {unit_index} of job {job_id} but hold no slot")
        log.info("claimed unit %d of job %d (slot %d)", unit_index, job_id, slot)
        return slot

    def _compute(self, job: JobInfo, todo: list[tuple[int, int]]) -> list[Weights]:
        plan = self.files.plan(job.plan_digest)
        checkpoint = self.files.weights(job.latest_checkpoint_digest)
        cells = [divmod(u, job.units_per_stage) for u, _ in todo]
        if self.runner is not None:
            return self.runner.run(plan, checkpoint, cells)
        return [run_unit(plan, checkpoint, stage, index) for stage, index in cells]

    def _compute_and_submit(self, job_id: int, job: JobInfo, todo: list[tuple[int, int]]) -> None:
        started = time.perf_counter()
        results = self._compute(job, todo)
        self.report.compute_seconds += time.perf_counter() - started
        for (unit_index, slot), weights in zip(todo, results, strict=True):
            if self.settings.cheat:
                weights = cheat_result(weights, self.address, job_id, unit_index)
            cid = self.ipfs.put_weights(weights)  # no metadata: the replicas' CIDs must be equal
            try:
                result = self.market.submit_result(job_id, unit_index, cid_to_digest(cid))
            except ContractRevert as exc:
                if exc.error in ("DeadlinePassed", "AlreadySubmitted", "NotClaimant"):
                    log.warning("result of unit %d of job %d not taken: %s", unit_index, job_id, exc)
                    continue
                raise
            self.report.gas_used += result.gas_used
            self.report.submitted += 1
            self.report.arbitrations += slot == ARBITER_SLOT
            self.report.units.append((job_id, unit_index, slot))
            log.info(
                "submitted unit %d of job %d (slot %d): %s, %d unit(s) in %.2fs",
                unit_index,
                job_id,
                slot,
                cid,
                len(todo),
                time.perf_counter() - started,
            )

    def _now(self) -> int:
        """The chain's time as the next block will see it (at least the latest block's timestamp)."""
        return max(int(self.w3.eth.get_block("latest")["timestamp"]), int(time.time()))


def _replicas_taken(info: UnitInfo) -> bool:
    return any(int(w, 16) != 0 for w in info.workers[:2])
