"""A compute-market worker: stakes, claims units of open jobs, computes them bit-reproducibly, seals the results.

Each unit is computed by two workers and paid when their results agree. A result is canonical safetensors without
metadata, so equal weights give equal bytes and equal CIDs; its digest is the CIDv0's sha256. The market never sees
a digest before both replicas are bound to theirs: a replica commits `result_commitment(self, tag)`, reveals the
tag once both committed, and publishes the digest (uploading the bytes to IPFS only then) once the other replica's
tag equals its own. Different tags dispute the unit: its replicas call `drawArbiter` from the next block, and the
market draws the arbiter among the registered workers (nobody claims it); when this worker is the one drawn it
computes the unit and submits its digest in the clear, as nobody can copy a digest never published.

Restart-safe: units are deterministic, so a claim or commitment this worker holds is recomputed and carried on.
A reveal window that passed (a replica vanished) is closed with `expireReveal`, so the job goes on. As a replica
of a disputed unit it also closes a drawn arbiter's claim that expired (a new draw follows) and, past the
dispute's deadline, the dispute itself; a commitment of its own left alone on an Open unit is released once the
market allows it, so its stake is not locked forever. It claims only while its stake covers one more open claim
(minStake each).
`cheat=True` (evaluation only) perturbs every result, so its tags differ from the honest replicas' and the market
slashes it. `lazy=True` (evaluation only) computes nothing: it copies the other replica's commitment and then its
revealed tag, which cannot open a commitment bound to another address, so it is never paid and is excluded from
the unit when the reveal window passes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
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
from fedchain.chain.market import ARBITER_SLOT, result_commitment, result_tag
from fedchain.chain.tx import TxResult
from fedchain.learning.attacks import gaussian_noise
from fedchain.learning.types import Weights
from fedchain.learning.units import check_deterministic_runtime, run_unit
from fedchain.market.common import JobFiles, wait_for_events
from fedchain.storage import IpfsClient, IpfsUnavailable, cid_to_digest, compute_cid, encode_weights

if TYPE_CHECKING:
    from fedchain.market.parallel import RayUnitRunner

log = logging.getLogger("fedchain.market.worker")

# Reverts of claimUnit that only mean someone else was faster or the stage moved on: look for other work.
LOST_RACE = {"NoFreeSlot", "UnitNotClaimable", "StageNotCurrent", "JobNotOpen"}
# Reverts of the per-unit calls that only mean the unit moved on meanwhile (the other replica published first, a
# deadline passed, the unit was reset): the next look at the unit decides what to do.
UNIT_MOVED_ON = {
    "DeadlinePassed",
    "AlreadySubmitted",
    "AlreadyRevealed",
    "AlreadyAccepted",
    "NotClaimant",
    "RevealNotOpen",
    "ResultsNotAgreed",
    "UnitNotDisputed",
    "NotRevealing",
    "RevealNotExpired",
    "ArbiterAlreadyDrawn",
    "DrawNotReady",
    "DisputeWindowClosed",
    "DisputeNotExpired",
    "ArbiterPending",
    "ClaimNotExpired",
    "ClaimNotReleasable",
    "NoClaim",
    "JobNotOpen",
}
CHEAT_SIGMA = 0.01
REVEAL_GRACE = 10  # seconds replica 1 waits for replica 0's tag before revealing its own


@dataclass(frozen=True)
class WorkerSettings:
    market_address: str
    rpc_url: str
    ipfs_api: str
    job_id: int | None = None  # serve only this job (default: every job posted on the market)
    # stake to register with (0: minStake per unit computed at once, plus one for a unit waiting to be verified and
    # one for an arbitration); topped up to minStake at start
    stake: int = 0
    cheat: bool = False  # evaluation only: submit perturbed results
    lazy: bool = False  # evaluation only: copy the other replica's commitment and tag instead of computing
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
    committed: int = 0
    revealed: int = 0
    published: int = 0
    arbitrations: int = 0
    failed_reveals: int = 0  # a lazy worker's copied tags, refused by the market (WrongReveal)
    lost_races: int = 0
    gas_used: int = 0
    compute_seconds: float = 0.0
    withdrawn: int = 0
    units: list[tuple[int, int, int]] = field(default_factory=list)  # (job, unit, slot)

    @property
    def submitted(self) -> int:
        """Results this worker put forward: replica commitments and arbitrations."""
        return self.committed + self.arbitrations


@dataclass(frozen=True)
class ComputedResult:
    """A unit's result: its canonical safetensors bytes and the sha256 digest of their CIDv0."""

    payload: bytes
    digest: bytes


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
        self._results: dict[tuple[int, int, int], ComputedResult] = {}  # (job, unit, attempt) -> result
        self._given_up: set[tuple[int, int, int]] = set()  # lazy mode: (job, unit, attempt) whose copy failed
        self._draws_sent: set[tuple[int, int, int]] = set()  # (job, unit, draw block): one drawArbiter each
        self._min_stake = 0
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
        if settings.cheat and settings.lazy:
            raise ValueError("a worker is either cheating or lazy, not both")
        if settings.cheat:
            log.warning("worker %s CHEATS (evaluation mode): its results are perturbed", self.address)
        if settings.lazy:
            log.warning(
                "worker %s is LAZY (evaluation mode): it copies other replicas instead of computing", self.address
            )

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
        self._min_stake = min_stake
        if not info.registered:
            stake = self.settings.stake or min_stake * (self.batch_size + 2)
            stake = max(stake, min_stake)
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
        """Move every unit of the job's current stage that this worker holds one step on (commit, reveal, publish,
        arbitrate, or close an expired reveal window), then claim new units (one, or one per Ray CPU); True if we
        sent anything."""
        units = {u: self.market.unit(job_id, u) for u in job.current_units()}
        now = self._now()
        block_number = int(self.w3.eth.block_number)
        worked = False
        # Units of ours that need computing: a claim without a commitment (a fresh claim, a restart or a slow
        # commit), or an arbitration we were drawn for. Units are deterministic, so a restart recomputes the
        # committed result.
        todo: list[tuple[int, int]] = []
        for u, info in units.items():
            slot = info.slot_of(self.address)
            if info.status == UnitStatus.ACCEPTED:
                continue
            if info.status == UnitStatus.REVEALING and now > info.reveal_deadline:
                worked = self._expire_reveal(job_id, u) or worked
                continue
            if slot is None:
                continue
            if info.status == UnitStatus.DISPUTED and slot != ARBITER_SLOT:
                worked = self._settle_dispute(job_id, u, info, now, block_number) or worked
                continue
            if self.settings.lazy:
                worked = self._copy(job_id, u, slot, info) or worked
            elif slot == ARBITER_SLOT:
                if info.status == UnitStatus.DISPUTED and now <= info.deadlines[slot]:
                    todo.append((u, slot))
            elif not info.committed(slot):
                if now <= info.deadlines[slot]:
                    todo.append((u, slot))
            elif info.status == UnitStatus.REVEALING:
                worked = self._reveal_or_publish(job_id, job, u, slot, info) or worked
            elif (release_at := info.lonely_since(slot, job.claim_duration)) is not None and now > release_at:
                # our commitment waited a whole claimDuration past its deadline for a second replica: take the
                # stake back (unpenalised); the unit may be claimed again
                worked = self._release_lonely(job_id, u, slot) or worked
        limit = self.batch_size
        # minStake per open claim: claim only what the stake covers, keeping one minStake free so that this worker
        # stays eligible when an arbiter is drawn (a worker without stake for one more claim is skipped)
        me = self.market.worker(self.address)
        free_claims = max(0, me.stake // self._min_stake - me.open_claims - 1) if self._min_stake else limit
        if free_claims == 0 and me.open_claims == 0 and me.stake >= self._min_stake:
            free_claims = 1  # staked for a single claim: work, at the cost of not being drawn meanwhile
        if not self._out_of_stake and len(todo) < limit and free_claims > 0:
            offset = int(self.address, 16) % job.units_per_stage
            candidates = []
            for u, info in units.items():
                if (job_id, u) in self._excluded:
                    continue
                slot = info.claimable_slot(self.address, now)
                if slot is None:
                    continue
                # Second replicas first (they finish a unit), then fresh units, each from this worker's own offset
                # so that workers spread over the stage.
                rank = 1 if _replicas_taken(info) else 2
                candidates.append((rank, (u - offset) % job.units_per_stage, u))
            claimed = 0
            for _, _, u in sorted(candidates):
                if len(todo) >= limit or claimed >= free_claims:
                    break
                slot = self._claim(job_id, u)
                if slot is not None:
                    claimed += 1
                if slot is not None and self.settings.lazy:
                    worked = True  # nothing to compute: the next look at the unit copies the other replica
                elif slot is not None:
                    todo.append((u, slot))
        if todo:
            self._compute_and_submit(job_id, job, todo)
            worked = True
        return worked

    def _claim(self, job_id: int, unit_index: int) -> int | None:
        try:
            result = self.market.claim_unit(job_id, unit_index)
        except ContractRevert as exc:
            if exc.error in LOST_RACE:
                self.report.lost_races += 1
                return None
            if exc.error == "AlreadyWorkedOn":  # excluded (a reset, an expired claim or dispute)
                self._excluded.add((job_id, unit_index))
                return None
            if exc.error == "InsufficientStake":  # minStake per open claim: wait for a unit to resolve
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

    def _compute(self, job: JobInfo, cells: list[tuple[int, int]]) -> list[Weights]:
        plan = self.files.plan(job.plan_digest)
        checkpoint = self.files.weights(job.latest_checkpoint_digest)
        if self.runner is not None:
            return self.runner.run(plan, checkpoint, cells)
        return [run_unit(plan, checkpoint, stage, index) for stage, index in cells]

    def _result(self, job_id: int, job: JobInfo, unit_index: int, attempt: int) -> ComputedResult:
        """This worker's result of a unit (computed once per attempt; recomputed after a restart)."""
        key = (job_id, unit_index, attempt)
        if key not in self._results:
            self._compute_results(job_id, job, [unit_index], attempt_of={unit_index: attempt})
        return self._results[key]

    def _compute_results(self, job_id: int, job: JobInfo, unit_indices: list[int], attempt_of: dict[int, int]) -> None:
        missing = [u for u in unit_indices if (job_id, u, attempt_of[u]) not in self._results]
        if not missing:
            return
        started = time.perf_counter()
        outputs = self._compute(job, [divmod(u, job.units_per_stage) for u in missing])
        self.report.compute_seconds += time.perf_counter() - started
        for unit_index, weights in zip(missing, outputs, strict=True):
            if self.settings.cheat:
                weights = cheat_result(weights, self.address, job_id, unit_index)
            # No metadata: the replicas' bytes, hence CIDs, must be equal. The CID is computed here and the bytes
            # stay off IPFS until the digest is published, so no one can fetch a result before it is verified.
            payload = encode_weights(weights)
            digest = cid_to_digest(compute_cid(payload))
            self._results[(job_id, unit_index, attempt_of[unit_index])] = ComputedResult(payload, digest)
        log.info("computed %d unit(s) of job %d in %.2fs", len(missing), job_id, time.perf_counter() - started)

    def _compute_and_submit(self, job_id: int, job: JobInfo, todo: list[tuple[int, int]]) -> None:
        attempts = {u: self.market.unit(job_id, u).resets for u, _ in todo}
        self._compute_results(job_id, job, [u for u, _ in todo], attempts)
        for unit_index, slot in todo:
            result = self._results[(job_id, unit_index, attempts[unit_index])]
            if slot == ARBITER_SLOT:
                self._arbitrate(job_id, unit_index, result)
            else:
                self._commit(job_id, unit_index, slot, attempts[unit_index], result)

    def _commit(self, job_id: int, unit_index: int, slot: int, attempt: int, result: ComputedResult) -> None:
        tag = result_tag(job_id, unit_index, attempt, result.digest)
        sent = self._send("commit", job_id, unit_index, self.market.commit_result, result_commitment(self.address, tag))
        if sent:
            self.report.committed += 1
            self.report.units.append((job_id, unit_index, slot))
            log.info("committed unit %d of job %d (slot %d)", unit_index, job_id, slot)

    def _reveal_or_publish(self, job_id: int, job: JobInfo, unit_index: int, slot: int, info: UnitInfo) -> bool:
        """Both replicas committed: reveal our tag, or publish the digest once the other's tag equals ours."""
        result = self._result(job_id, job, unit_index, info.resets)
        tag = result_tag(job_id, unit_index, info.resets, result.digest)
        step = reveal_step(slot, info, tag, self._now(), job.claim_duration)
        if step == RevealStep.PUBLISH:
            # Publishing reveals the digest: only now do the bytes go to IPFS, for the coordinator to fetch.
            self.ipfs.add(result.payload)
            if self._send("publish", job_id, unit_index, self.market.publish_result, result.digest):
                self.report.published += 1
                log.info("published unit %d of job %d: the replicas agree", unit_index, job_id)
                return True
        elif step == RevealStep.REVEAL and self._send("reveal", job_id, unit_index, self.market.reveal_result, tag):
            self.report.revealed += 1
            log.info("revealed the tag of unit %d of job %d", unit_index, job_id)
            return True
        return False

    def _arbitrate(self, job_id: int, unit_index: int, result: ComputedResult) -> None:
        self.ipfs.add(result.payload)  # the arbiter's digest is public at once: its bytes may be too
        if self._send("arbitrate", job_id, unit_index, self.market.submit_arbitration, result.digest):
            self.report.arbitrations += 1
            self.report.units.append((job_id, unit_index, ARBITER_SLOT))
            log.info("arbitrated unit %d of job %d", unit_index, job_id)

    def _copy(self, job_id: int, unit_index: int, slot: int, info: UnitInfo) -> bool:
        """Evaluation only (lazy): try to be paid without computing, by copying the other replica. It fails: the
        copied commitment is bound to the other's address, so no tag this worker can learn opens it."""
        if slot == ARBITER_SLOT or (job_id, unit_index, info.resets) in self._given_up:
            return False
        other = 1 - slot
        if not info.committed(slot):
            if not info.committed(other):
                return False  # nothing to copy yet
            if self._send("copy the commitment of", job_id, unit_index, self.market.commit_result, info.seals[other]):
                self.report.committed += 1
                log.warning("LAZY: copied the commitment of unit %d of job %d", unit_index, job_id)
                return True
            return False
        if info.status != UnitStatus.REVEALING or info.revealed[slot] or not info.revealed[other]:
            return False
        try:
            result = self.market.reveal_result(job_id, unit_index, info.seals[other])
        except ContractRevert as exc:
            if exc.error != "WrongReveal":
                raise
            self.report.failed_reveals += 1
            self._given_up.add((job_id, unit_index, info.resets))
            log.warning("LAZY: the copied tag of unit %d of job %d does not open our commitment", unit_index, job_id)
            return True
        # Only reachable if the other replica committed for this worker's address: not a copy at all.
        self.report.gas_used += result.gas_used
        return True

    def _settle_dispute(self, job_id: int, unit_index: int, info: UnitInfo, now: int, block_number: int) -> bool:
        """As a replica of a Disputed unit: draw its arbiter once the beacon block is mined (once per draw block),
        close a drawn arbiter's claim that expired (it forfeits; a new draw follows), and close the dispute once its
        deadline passed without a verdict."""
        arbiter = info.arbiter
        if now > info.dispute_deadline:
            if arbiter is not None and now <= info.deadlines[ARBITER_SLOT]:
                return False  # the arbiter drawn last may still answer
            if self._send("close the expired dispute of", job_id, unit_index, self.market.expire_dispute):
                log.warning("unit %d of job %d: dispute expired without a verdict, unit reset", unit_index, job_id)
                return True
            return False
        if arbiter is not None:
            if now > info.deadlines[ARBITER_SLOT]:
                sent = self._send("expire the arbiter of", job_id, unit_index, self.market.expire_claim, ARBITER_SLOT)
                if sent:
                    log.warning(
                        "unit %d of job %d: arbiter %s did not answer, drawing again", unit_index, job_id, arbiter
                    )
                return sent
            return False
        key = (job_id, unit_index, info.draw_block)
        if not info.draw_ready(block_number) or key in self._draws_sent:
            return False
        self._draws_sent.add(key)
        if not self._send("draw the arbiter of", job_id, unit_index, self.market.draw_arbiter):
            return False
        drawn = self.market.unit(job_id, unit_index).arbiter
        if drawn is None:
            log.info("unit %d of job %d: nobody eligible in this draw, drawing again", unit_index, job_id)
        else:
            log.info("unit %d of job %d: arbiter %s drawn", unit_index, job_id, drawn)
        return True

    def _release_lonely(self, job_id: int, unit_index: int, slot: int) -> bool:
        if self._send("release our lonely commitment on", job_id, unit_index, self.market.expire_claim, slot):
            log.warning("unit %d of job %d: no second replica came, commitment released", unit_index, job_id)
            return True
        return False

    def _expire_reveal(self, job_id: int, unit_index: int) -> bool:
        """A reveal window passed without a verdict (a replica vanished): reset the unit so the job goes on."""
        if self._send("expire the reveal window of", job_id, unit_index, self.market.expire_reveal):
            log.warning("unit %d of job %d: reveal window passed, unit reset", unit_index, job_id)
            return True
        return False

    def _send(self, what: str, job_id: int, unit_index: int, call: Callable[..., TxResult], *args: bytes | int) -> bool:
        """Send one per-unit transaction; a revert that only means the unit moved on is logged, not raised."""
        try:
            result = call(job_id, unit_index, *args)
        except ContractRevert as exc:
            if exc.error in UNIT_MOVED_ON:
                log.warning("could not %s unit %d of job %d: %s", what, unit_index, job_id, exc)
                return False
            raise
        self.report.gas_used += result.gas_used
        return True

    def _now(self) -> int:
        """The chain's time as the next block will see it (at least the latest block's timestamp)."""
        return max(int(self.w3.eth.get_block("latest")["timestamp"]), int(time.time()))


class RevealStep(Enum):
    """What a replica does next in a unit whose replicas both committed."""

    WAIT = "wait"
    REVEAL = "reveal"
    PUBLISH = "publish"


def reveal_step(slot: int, info: UnitInfo, tag: bytes, now: int, claim_duration: int) -> RevealStep:
    """The next step of replica `slot` (whose result has tag `tag`) in a Revealing unit, at chain time `now`.

    Who speaks when, so that the usual unit costs one reveal and one publish (not two of each, one of them
    reverted): replica 0 reveals at once and replica 1 publishes (revealing its tag in the same call) as soon as it
    sees an equal tag. Fallbacks keep a slow partner from stalling the unit: replica 1 reveals by itself after a
    grace period, and publishes an agreement of two revealed tags if replica 0 has not within half the window.
    A digest is published only when the other replica's revealed tag equals ours: before that it could still be
    disputed, and an arbiter must not be able to copy it.
    """
    other = 1 - slot
    opened = info.reveal_deadline - claim_duration
    agreed = info.revealed[other] and info.seals[other] == tag
    if agreed:
        if info.revealed[slot] and slot == 1 and now < opened + claim_duration // 2:
            return RevealStep.WAIT  # replica 0 publishes
        return RevealStep.PUBLISH
    if info.revealed[slot]:
        return RevealStep.WAIT  # for the other replica's tag, or for arbitration
    if slot == 1 and not info.revealed[other] and now < opened + min(REVEAL_GRACE, claim_duration // 4):
        return RevealStep.WAIT  # replica 0 reveals first; we publish on its tag
    return RevealStep.REVEAL


def _replicas_taken(info: UnitInfo) -> bool:
    return any(int(w, 16) != 0 for w in info.workers[:2])
