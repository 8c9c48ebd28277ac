"""Typed binding of the ComputeMarket contract (issue 6) over web3.py.

The market: requesters post jobs (stages of units) with their payment in escrow; staked workers claim units, two
replicas per unit, and are paid when their results agree. Results are sealed: each replica commits to
`result_commitment(worker, result_tag(job, unit, resets, digest))`, then reveals the tag, and one replica publishes
the digest once the tags match, so neither a lazy replica nor an arbiter can copy a result. Different tags dispute
the unit; its arbiter is drawn (`draw_arbiter`, from the next block, with the dispute block's hash as the beacon)
among the registered workers, never claimed, and only the drawn worker may arbitrate; the replica the arbiter's
digest disagrees with is slashed. Expired claims, withheld reveals and arbiters that do not answer forfeit stake;
a new claim needs minStake per open claim; a dispute without a verdict times out (`expire_dispute`). The job's
coordinator commits one checkpoint per stage. Payments are pull payments (`withdraw`). See
contracts/ComputeMarket.sol.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from fedchain.chain.contract_client import ContractClient
from fedchain.chain.tx import TxResult, _revert_data

MARKET_CONTRACT = "ComputeMarket"
ESCROW_FACTOR = 3
ARBITER_SLOT = 2
NUM_SLOTS = 3
ZERO_ADDRESS = "0x" + "00" * 20
ZERO_DIGEST = b"\x00" * 32
# Gas limits of the per-unit calls, so no estimate is needed on the hot path: about twice the measured maximum
# (tests/contracts/test_market_gas.py): claimUnit ~125k (a claim that closes an expired one and takes its forfeit),
# commitResult ~88k (the second, which opens the reveal window), revealResult ~54k (disputing), publishResult ~165k
# (reveal, accept, pay both), submitArbitration ~142k (accept, pay, slash), drawArbiter ~83k (at most ~150k: 16
# tries over cold pool places), commitCheckpoint ~84k, postJob ~277k. expireClaim, expireReveal, expireDispute
# and refund touch a handful of slots (a forfeit or two); their limits are generous.
MARKET_GAS_LIMITS = {
    "claimUnit": 250_000,
    "commitResult": 150_000,
    "revealResult": 100_000,
    "publishResult": 300_000,
    "submitArbitration": 340_000,
    "commitCheckpoint": 170_000,
    "postJob": 560_000,
    "expireClaim": 200_000,
    "expireReveal": 250_000,
    "expireDispute": 250_000,
    "drawArbiter": 300_000,
    "refund": 150_000,
}
# Calls whose outcome depends on block.timestamp: sent without a preflight eth_call (which would see the latest,
# possibly older, block's time; see TransactionSender.transact).
# drawArbiter also depends on block.number (the beacon block must be mined before it).
TIME_DEPENDENT = {"expireClaim", "expireReveal", "expireDispute", "drawArbiter", "refund"}


class JobStatus(IntEnum):
    """ComputeMarket.JobStatus (NONE: no such job)."""

    NONE = 0
    OPEN = 1
    FINISHED = 2
    CANCELLED = 3


class UnitStatus(IntEnum):
    """ComputeMarket.UnitStatus: a Reset unit is Open again. REVEALING: both replicas committed. DISPUTED: the
    revealed tags differ; the arbiter is drawn."""

    OPEN = 0
    REVEALING = 1
    DISPUTED = 2
    ACCEPTED = 3


def _digest(name: str, value: bytes) -> bytes:
    value = bytes(value)
    if len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {len(value)}")
    return value


@dataclass(frozen=True)
class JobParams:
    """postJob's input (ComputeMarket.JobParams): digests of CIDv0s on IPFS, the coordinator and the job's shape."""

    model_spec_digest: bytes
    initial_checkpoint_digest: bytes
    dataset_digest: bytes
    plan_digest: bytes
    coordinator: str
    num_stages: int
    units_per_stage: int
    price_per_unit: int
    claim_duration: int = 600

    def __post_init__(self) -> None:
        for name in ("model_spec_digest", "initial_checkpoint_digest", "dataset_digest", "plan_digest"):
            value = _digest(name, getattr(self, name))
            if value == ZERO_DIGEST:
                raise ValueError(f"{name} must not be zero (the contract refuses it: EmptyDigest)")
        if not Web3.is_address(self.coordinator) or int(self.coordinator, 16) == 0:
            raise ValueError(f"coordinator must be a non-zero address, got {self.coordinator!r}")
        for name, bound in (("num_stages", 2**32), ("units_per_stage", 2**32), ("claim_duration", 2**32)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < bound:
                raise ValueError(f"{name} must be an integer in 1..{bound - 1}, got {value!r}")
        if self.num_stages * self.units_per_stage >= 2**32:
            raise ValueError("too many units: numStages * unitsPerStage must fit a uint32")
        price = self.price_per_unit
        if isinstance(price, bool) or not isinstance(price, int) or price <= 0:
            raise ValueError(f"price_per_unit must be a positive integer (wei), got {self.price_per_unit!r}")

    @property
    def num_units(self) -> int:
        return self.num_stages * self.units_per_stage

    def escrow(self) -> int:
        """The exact msg.value postJob requires (mirrors escrowRequired)."""
        return escrow_required(self.num_stages, self.units_per_stage, self.price_per_unit)

    def as_tuple(self) -> tuple[Any, ...]:
        """The struct in the contract's field order."""
        return (
            bytes(self.model_spec_digest),
            bytes(self.initial_checkpoint_digest),
            bytes(self.dataset_digest),
            bytes(self.plan_digest),
            Web3.to_checksum_address(self.coordinator),
            self.num_stages,
            self.units_per_stage,
            self.price_per_unit,
            self.claim_duration,
        )


def escrow_required(num_stages: int, units_per_stage: int, price_per_unit: int) -> int:
    """numStages * unitsPerStage * pricePerUnit * ESCROW_FACTOR: two replicas and an arbiter per unit."""
    return num_stages * units_per_stage * price_per_unit * ESCROW_FACTOR


def result_tag(job_id: int, unit_index: int, attempt: int, result_digest: bytes) -> bytes:
    """What a replica reveals (mirrors ComputeMarket.resultTag): keccak256(abi.encode(jobId, unitIndex, attempt,
    digest)). `attempt` is the unit's `resets`; the tag hides the digest, so revealing it gives nothing to copy."""
    digest = _digest("result_digest", result_digest)
    return keccak(abi_encode(["uint256", "uint32", "uint32", "bytes32"], [job_id, unit_index, attempt, digest]))


def result_commitment(account: str, tag: bytes) -> bytes:
    """What a replica commits (mirrors ComputeMarket.resultCommitment): its tag bound to its address."""
    return keccak(abi_encode(["address", "bytes32"], [Web3.to_checksum_address(account), _digest("tag", tag)]))


def stage_of(unit_index: int, units_per_stage: int) -> int:
    return unit_index // units_per_stage


def stage_units(stage: int, units_per_stage: int) -> range:
    """Global unit indices of a stage."""
    return range(stage * units_per_stage, (stage + 1) * units_per_stage)


@dataclass(frozen=True)
class JobInfo:
    """A job as `job(jobId)` returns it."""

    requester: str
    status: JobStatus
    current_stage: int
    accepted_in_stage: int
    coordinator: str
    num_stages: int
    units_per_stage: int
    claim_duration: int
    last_claim_deadline: int
    price_per_unit: int
    escrow_remaining: int
    model_spec_digest: bytes
    initial_checkpoint_digest: bytes
    dataset_digest: bytes
    plan_digest: bytes
    latest_checkpoint_digest: bytes
    final_model_digest: bytes

    @classmethod
    def from_tuple(cls, values: Any) -> JobInfo:
        v = list(values)
        if len(v) != 17:
            raise ValueError(f"job(): expected 17 fields, got {len(v)}")
        return cls(
            requester=str(v[0]),
            status=JobStatus(int(v[1])),
            current_stage=int(v[2]),
            accepted_in_stage=int(v[3]),
            coordinator=str(v[4]),
            num_stages=int(v[5]),
            units_per_stage=int(v[6]),
            claim_duration=int(v[7]),
            last_claim_deadline=int(v[8]),
            price_per_unit=int(v[9]),
            escrow_remaining=int(v[10]),
            model_spec_digest=bytes(v[11]),
            initial_checkpoint_digest=bytes(v[12]),
            dataset_digest=bytes(v[13]),
            plan_digest=bytes(v[14]),
            latest_checkpoint_digest=bytes(v[15]),
            final_model_digest=bytes(v[16]),
        )

    @property
    def num_units(self) -> int:
        return self.num_stages * self.units_per_stage

    @property
    def stage_complete(self) -> bool:
        """Every unit of the current stage is Accepted: the coordinator may commit its checkpoint."""
        return self.status == JobStatus.OPEN and self.accepted_in_stage == self.units_per_stage

    def current_units(self) -> range:
        return stage_units(self.current_stage, self.units_per_stage)


@dataclass(frozen=True)
class UnitInfo:
    """A unit as `unit(jobId, unitIndex)` returns it: slots 0 and 1 are the replicas, 2 the drawn arbiter.
    `seals[i]` is replica i's commitment (zero: none yet), or its revealed tag once `revealed[i]`. A Disputed unit
    has `draw_block` (its arbiter is drawn with that block's hash, from the next block on) and `dispute_deadline`
    (after it, `expireDispute` closes the dispute)."""

    status: UnitStatus
    resets: int
    workers: tuple[str, str, str]
    deadlines: tuple[int, int, int]
    seals: tuple[bytes, bytes]
    revealed: tuple[bool, bool]
    reveal_deadline: int
    accepted_digest: bytes
    draw_block: int = 0
    draw_pool_size: int = 0
    dispute_deadline: int = 0

    @classmethod
    def from_tuple(cls, values: Any) -> UnitInfo:
        values = list(values)
        if len(values) not in (8, 11):
            raise ValueError(f"unit(): expected 11 fields, got {len(values)}")
        status, resets, workers, deadlines, seals, revealed, reveal_deadline, accepted = values[:8]
        draw_block, draw_pool_size, dispute_deadline = values[8:] or (0, 0, 0)
        return cls(
            status=UnitStatus(int(status)),
            resets=int(resets),
            workers=tuple(Web3.to_checksum_address(w) for w in workers),  # type: ignore[arg-type]
            deadlines=tuple(int(d) for d in deadlines),  # type: ignore[arg-type]
            seals=tuple(bytes(r) for r in seals),  # type: ignore[arg-type]
            revealed=tuple(bool(r) for r in revealed),  # type: ignore[arg-type]
            reveal_deadline=int(reveal_deadline),
            accepted_digest=bytes(accepted),
            draw_block=int(draw_block),
            draw_pool_size=int(draw_pool_size),
            dispute_deadline=int(dispute_deadline),
        )

    def committed(self, slot: int) -> bool:
        """Replica `slot` has sealed its result (the arbiter's slot never has: its result resolves the unit)."""
        return slot < ARBITER_SLOT and self.seals[slot] != ZERO_DIGEST

    def slot_of(self, account: str) -> int | None:
        """The slot `account` holds (0, 1 replicas, 2 arbiter), or None."""
        target = account.lower()
        for slot, holder in enumerate(self.workers):
            if holder.lower() == target:
                return slot
        return None

    def slot_free(self, slot: int, now: int) -> bool:
        """Mirrors the contract's _isFree (replica slots): never taken (or cleared), or expired without a commitment
        at `now`."""
        if int(self.workers[slot], 16) == 0:
            return True
        return not self.committed(slot) and now > self.deadlines[slot]

    def claimable_slot(self, account: str, now: int) -> int | None:
        """The replica slot claimUnit would give `account` at time `now`, or None (not Open, worked on already, no
        free slot). Only Open units are claimable: a Disputed unit's arbiter is drawn. Exclusion is not visible
        here: the contract's AlreadyWorkedOn says so."""
        if self.status != UnitStatus.OPEN or self.slot_of(account) is not None:
            return None
        for slot in (0, 1):
            if self.slot_free(slot, now):
                return slot
        return None

    @property
    def arbiter(self) -> str | None:
        """The drawn arbiter, or None."""
        holder = self.workers[ARBITER_SLOT]
        return None if int(holder, 16) == 0 else holder

    def draw_ready(self, block_number: int) -> bool:
        """A Disputed unit without an arbiter whose draw can run in the block after `block_number` (the latest)."""
        return self.status == UnitStatus.DISPUTED and self.arbiter is None and block_number >= self.draw_block

    def lonely_since(self, slot: int, claim_duration: int) -> int | None:
        """When replica `slot`'s commitment may be released (the unit still Open one claimDuration after the claim's
        deadline), or None if it did not commit or the unit is not Open."""
        if self.status != UnitStatus.OPEN or not self.committed(slot):
            return None
        return self.deadlines[slot] + claim_duration


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as `worker(account)` returns it."""

    stake: int
    open_claims: int
    completed_units: int
    faults: int
    registered: bool
    active_since: int = 0  # block since which stake >= minStake (0: below minStake)

    @classmethod
    def from_tuple(cls, values: Any) -> WorkerInfo:
        stake, open_claims, completed, faults, registered, *rest = values
        active = int(rest[0]) if rest else 0
        return cls(int(stake), int(open_claims), int(completed), int(faults), bool(registered), active)

    def can_claim(self, min_stake: int) -> bool:
        """Stake for one more open claim: stake >= minStake * (openClaims + 1)."""
        return self.registered and self.stake >= min_stake * (self.open_claims + 1)


@dataclass(frozen=True)
class MarketTotals:
    """The money the market holds: balance == staked + escrow + owed."""

    balance: int
    staked: int
    escrow: int
    owed: int

    @property
    def conserved(self) -> bool:
        return self.balance == self.staked + self.escrow + self.owed


def deploy_market(w3: Web3, admin: LocalAccount, min_stake: int, slash_amount: int) -> tuple[MarketClient, TxResult]:
    """Deploy a ComputeMarket; `admin` only pays for the deployment (the market has no owner)."""
    return MarketClient.deploy(w3, admin, min_stake, slash_amount)


class MarketClient(ContractClient):
    """One ComputeMarket contract, seen by one account (or read-only when `sender` is None)."""

    CONTRACT_NAME = MARKET_CONTRACT
    GAS_LIMITS = MARKET_GAS_LIMITS

    # ------------------------------------------------------------ views

    def _call(self, fn: Any, block: int | str = "latest") -> Any:
        try:
            return fn.call(block_identifier=block)
        except (ContractCustomError, ContractLogicError) as exc:
            raise self.decoder().decode(_revert_data(exc)) from exc

    def job(self, job_id: int, block: int | str = "latest") -> JobInfo:
        """Raises ContractRevert UnknownJob for an id never posted."""
        return JobInfo.from_tuple(self._call(self.contract.functions.job(job_id), block))

    def unit(self, job_id: int, unit_index: int, block: int | str = "latest") -> UnitInfo:
        return UnitInfo.from_tuple(self._call(self.contract.functions.unit(job_id, unit_index), block))

    def worker(self, account: str) -> WorkerInfo:
        return WorkerInfo.from_tuple(self._call(self.contract.functions.worker(Web3.to_checksum_address(account))))

    def balance_of(self, account: str) -> int:
        """Wei `account` can withdraw now."""
        return int(self._call(self.contract.functions.balanceOf(Web3.to_checksum_address(account))))

    def checkpoint_digest(self, job_id: int, stage: int) -> bytes:
        """The checkpoint committed for a stage (32 zero bytes until committed)."""
        return bytes(self._call(self.contract.functions.checkpointDigest(job_id, stage)))

    def accepted_digest(self, job_id: int, unit_index: int) -> bytes:
        """A unit's accepted result (32 zero bytes until Accepted)."""
        return bytes(self._call(self.contract.functions.acceptedDigest(job_id, unit_index)))

    def is_excluded(self, job_id: int, unit_index: int, account: str) -> bool:
        fn = self.contract.functions.isExcluded(job_id, unit_index, Web3.to_checksum_address(account))
        return bool(self._call(fn))

    def job_count(self) -> int:
        return int(self._call(self.contract.functions.jobCount()))

    def min_stake(self) -> int:
        return int(self._call(self.contract.functions.minStake()))

    def slash_amount(self) -> int:
        return int(self._call(self.contract.functions.slashAmount()))

    def expiry_forfeit(self) -> int:
        """What an expired claim (replica or arbiter) forfeits."""
        return int(self._call(self.contract.functions.expiryForfeit()))

    def pool_size(self) -> int:
        """Places in the pool arbiters are drawn from (every worker ever registered)."""
        return int(self._call(self.contract.functions.poolSize()))

    def worker_pool(self, index: int) -> str:
        return Web3.to_checksum_address(self._call(self.contract.functions.workerPool(index)))

    def escrow_required(self, num_stages: int, units_per_stage: int, price_per_unit: int) -> int:
        return int(self._call(self.contract.functions.escrowRequired(num_stages, units_per_stage, price_per_unit)))

    def totals(self) -> MarketTotals:
        f = self.contract.functions
        return MarketTotals(
            balance=int(self.w3.eth.get_balance(self.address)),
            staked=int(self._call(f.totalStaked())),
            escrow=int(self._call(f.totalEscrow())),
            owed=int(self._call(f.totalOwed())),
        )

    # ------------------------------------------------------------ transactions

    def _tx(self, fn: Any, value: int = 0, gas_limit: int | None = None) -> TxResult:
        return self._send(fn, value=value, gas_limit=gas_limit, preflight=fn.fn_name not in TIME_DEPENDENT)

    def register_worker(self, stake: int) -> TxResult:
        """Register this account as a worker with `stake` wei (at least minStake)."""
        return self._tx(self.contract.functions.registerWorker(), value=stake)

    def add_stake(self, amount: int) -> TxResult:
        return self._tx(self.contract.functions.addStake(), value=amount)

    def withdraw_stake(self, amount: int) -> TxResult:
        """Take stake back (no open claims; what is left must be 0 or at least minStake)."""
        return self._tx(self.contract.functions.withdrawStake(amount))

    def post_job(self, params: JobParams, value: int | None = None) -> tuple[int, TxResult]:
        """Post a job with its exact escrow (or `value`); returns the new job's id and the receipt summary."""
        escrow = params.escrow() if value is None else value
        result = self._tx(self.contract.functions.postJob(params.as_tuple()), value=escrow)
        receipt = self.w3.eth.get_transaction_receipt(result.tx_hash)
        events = self.contract.events.JobPosted().process_receipt(receipt)
        if not events:
            raise RuntimeError(f"postJob transaction {result.tx_hash} emitted no JobPosted event")
        return int(events[0]["args"]["jobId"]), result

    def claim_unit(self, job_id: int, unit_index: int) -> TxResult:
        """Claim a slot of a unit of the job's current stage (read `unit()` for the slot taken)."""
        return self._tx(self.contract.functions.claimUnit(job_id, unit_index))

    def commit_result(self, job_id: int, unit_index: int, commitment: bytes) -> TxResult:
        """A replica seals its result: `result_commitment(self, result_tag(job, unit, resets, digest))`."""
        value = _digest("commitment", commitment)
        return self._tx(self.contract.functions.commitResult(job_id, unit_index, value))

    def reveal_result(self, job_id: int, unit_index: int, tag: bytes) -> TxResult:
        """A replica reveals its tag once both replicas committed (before the reveal deadline)."""
        return self._tx(self.contract.functions.revealResult(job_id, unit_index, _digest("tag", tag)))

    def publish_result(self, job_id: int, unit_index: int, result_digest: bytes) -> TxResult:
        """A replica publishes the agreed digest (revealing its own tag too if needed): accepts and pays the unit.
        Reverts ResultsNotAgreed unless both tags are revealed and equal to the digest's."""
        digest = _digest("result_digest", result_digest)
        return self._tx(self.contract.functions.publishResult(job_id, unit_index, digest))

    def submit_arbitration(self, job_id: int, unit_index: int, result_digest: bytes) -> TxResult:
        """The arbiter of a Disputed unit submits its digest in the clear."""
        digest = _digest("result_digest", result_digest)
        return self._tx(self.contract.functions.submitArbitration(job_id, unit_index, digest))

    def expire_reveal(self, job_id: int, unit_index: int) -> TxResult:
        """Reset a unit whose reveal window passed without acceptance or dispute (anyone may)."""
        return self._tx(self.contract.functions.expireReveal(job_id, unit_index))

    def expire_claim(self, job_id: int, unit_index: int, slot: int) -> TxResult:
        """Close an expired claim (it forfeits), a lonely commitment, or a cancelled job's unverifiable one."""
        return self._tx(self.contract.functions.expireClaim(job_id, unit_index, slot))

    def draw_arbiter(self, job_id: int, unit_index: int) -> TxResult:
        """Draw the arbiter of a Disputed unit (anyone may, from the block after its draw block); read `unit()` for
        the worker drawn (none if the draw was scheduled again)."""
        return self._tx(self.contract.functions.drawArbiter(job_id, unit_index))

    def expire_dispute(self, job_id: int, unit_index: int) -> TxResult:
        """Close a dispute past its deadline without a verdict: both replicas released and excluded (anyone may)."""
        return self._tx(self.contract.functions.expireDispute(job_id, unit_index))

    def commit_checkpoint(self, job_id: int, stage: int, checkpoint_digest: bytes) -> TxResult:
        """Coordinator only, once every unit of the stage is Accepted; the last stage's commit finishes the job."""
        return self._tx(
            self.contract.functions.commitCheckpoint(job_id, stage, _digest("checkpoint_digest", checkpoint_digest))
        )

    def cancel_job(self, job_id: int) -> TxResult:
        return self._tx(self.contract.functions.cancelJob(job_id))

    def refund(self, job_id: int) -> TxResult:
        return self._tx(self.contract.functions.refund(job_id))

    def withdraw(self) -> TxResult:
        """Send this account its whole withdrawable balance (NothingToWithdraw if zero)."""
        return self._tx(self.contract.functions.withdraw())
