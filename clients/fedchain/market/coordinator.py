"""A job's coordinator: when every unit of the current stage is Accepted, merge the accepted results and commit.

Event-triggered like the aggregator, and restart-safe the same way: everything it needs is on chain (the job's
stage, the accepted digests, the latest checkpoint) or on IPFS, and the merge is deterministic (unit-index order,
float64 sums: `merge_stage`), so a restarted coordinator commits the same checkpoint. Committing the last stage's
checkpoint finishes the job; that checkpoint is the final model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from eth_account.signers.local import LocalAccount

from fedchain.chain import ContractRevert, EventFollower, JobInfo, JobStatus, MarketClient, connect
from fedchain.learning.units import merge_stage
from fedchain.market.common import JobFiles, wait_for_events
from fedchain.storage import IpfsClient, IpfsUnavailable, cid_to_digest

log = logging.getLogger("fedchain.market.coordinator")

# Reverts that mean the stage was committed already (by us, before a restart) or the job ended.
MOVED_ON = {"WrongStage", "JobNotOpen", "StageIncomplete"}


@dataclass(frozen=True)
class CoordinatorSettings:
    market_address: str
    rpc_url: str
    ipfs_api: str
    job_id: int
    poll_interval: float = 0.25
    idle_wait: float = 2.0


@dataclass
class CoordinatorReport:
    job_id: int
    checkpoints: list[str] = field(default_factory=list)  # CIDs, one per stage committed here
    gas_used: int = 0
    merge_seconds: float = 0.0
    final_status: str = ""


class CoordinatorStep(Enum):
    """What the coordinator does next with a job, as `coordinator_step` decides from the job's view alone."""

    FINISHED = "finished"  # the job is no longer Open (finished or cancelled): stop
    COMMIT = "commit"  # every unit of the current stage is Accepted: merge and commit its checkpoint
    WAIT = "wait"  # units of the current stage are still being computed or verified: wait for events


def coordinator_step(job: JobInfo) -> CoordinatorStep:
    """The coordinator's decision for one view of its job (pure: no chain, no IPFS)."""
    if job.status != JobStatus.OPEN:
        return CoordinatorStep.FINISHED
    if job.stage_complete:
        return CoordinatorStep.COMMIT
    return CoordinatorStep.WAIT


def stage_digests(job: JobInfo, accepted_digest: Callable[[int], bytes]) -> tuple[bytes, list[bytes]]:
    """What the current stage's merge reads: the latest checkpoint's digest and the accepted results' digests in
    unit-index order (the order `merge_stage` sums in, so every coordinator gets the same bits)."""
    return job.latest_checkpoint_digest, [accepted_digest(u) for u in job.current_units()]


def commit_moved_on(exc: ContractRevert) -> bool:
    """Whether a refused commit means the job moved on without us (nothing to do), not a fault to raise."""
    return exc.error in MOVED_ON


class MarketCoordinator:
    """Commits every stage's checkpoint of one job, until the job finishes or is cancelled."""

    def __init__(self, settings: CoordinatorSettings, account: LocalAccount) -> None:
        self.settings = settings
        self.account = account
        self.w3 = connect(settings.rpc_url, wait=30)
        self.market = MarketClient.for_account(self.w3, settings.market_address, account)
        job = self.market.job(settings.job_id)
        if job.coordinator.lower() != account.address.lower():
            raise PermissionError(f"{account.address} is not the coordinator of job {settings.job_id}")
        self.ipfs = IpfsClient(settings.ipfs_api)
        self.files = JobFiles(self.ipfs)
        head = self.w3.eth.block_number
        self.follower = EventFollower(self.w3, self.market.address, self.market.abi, from_block=head)
        self.report = CoordinatorReport(job_id=settings.job_id)

    def run(self) -> CoordinatorReport:
        job_id = self.settings.job_id
        while True:
            job = self.market.job(job_id)
            step = coordinator_step(job)
            if step == CoordinatorStep.FINISHED:
                self.report.final_status = job.status.name.lower()
                log.info("job %d is %s", job_id, self.report.final_status)
                return self.report
            if step == CoordinatorStep.COMMIT:
                try:
                    self.commit_stage(job)
                except IpfsUnavailable as exc:
                    log.warning("IPFS unavailable, will retry: %s", exc)
                    time.sleep(self.settings.poll_interval)
                continue
            wait_for_events(self.follower, self.settings.idle_wait, self.settings.poll_interval)

    def merged_checkpoint(self, job: JobInfo) -> dict:
        """The current stage's merge: the accepted results in unit-index order, from the latest checkpoint."""
        job_id = self.settings.job_id
        checkpoint_digest, result_digests = stage_digests(job, lambda u: self.market.accepted_digest(job_id, u))
        checkpoint = self.files.weights(checkpoint_digest)
        return merge_stage(checkpoint, [self.files.weights(d) for d in result_digests])

    def commit_stage(self, job: JobInfo) -> str | None:
        started = time.perf_counter()
        merged = self.merged_checkpoint(job)
        cid = self.ipfs.put_weights(merged)
        self.report.merge_seconds += time.perf_counter() - started
        try:
            result = self.market.commit_checkpoint(self.settings.job_id, job.current_stage, cid_to_digest(cid))
        except ContractRevert as exc:
            if commit_moved_on(exc):
                log.info("stage %d of job %d: %s", job.current_stage, self.settings.job_id, exc)
                return None
            raise
        self.report.gas_used += result.gas_used
        self.report.checkpoints.append(cid)
        log.info(
            "committed stage %d/%d of job %d: %s (gas %d)",
            job.current_stage + 1,
            job.num_stages,
            self.settings.job_id,
            cid,
            result.gas_used,
        )
        return cid
