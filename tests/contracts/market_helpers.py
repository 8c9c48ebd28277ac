"""Helpers for the ComputeMarket tests (issue 6: lend spare compute, paid only for verified work)."""

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum

import brownie
from brownie.exceptions import _errors as brownie_errors
from brownie.exceptions import decode_typed_error
from eth_abi import encode as abi_encode
from eth_utils import keccak

ETHER = 10**18
MIN_STAKE = ETHER // 10
SLASH_AMOUNT = ETHER // 20 + 1  # odd, to see where the odd wei of a split goes
PRICE = 10**15 + 1
CLAIM_DURATION = 600
NUM_STAGES = 2
UNITS_PER_STAGE = 2
ESCROW_FACTOR = 3
ARBITER_SLOT = 2
ZERO_ADDRESS = "0x" + "00" * 20
ZERO_BYTES32 = b"\x00" * 32


class JobStatus(IntEnum):
    """ComputeMarket.JobStatus."""

    Nonexistent = 0
    Open = 1
    Finished = 2
    Cancelled = 3


class UnitStatus(IntEnum):
    """ComputeMarket.UnitStatus: Revealing once both replicas committed; a Reset unit is Open again."""

    Open = 0
    Revealing = 1
    Disputed = 2
    Accepted = 3


def digest(label: str) -> bytes:
    """A stand-in CIDv0 digest: contract logic only needs 32 non-zero bytes."""
    return hashlib.sha256(label.encode()).digest()


def market_container():
    """brownie's ContractContainer for ComputeMarket."""
    return brownie.project.get_loaded_projects()[0].ComputeMarket


def escrow_for(num_stages: int, units_per_stage: int, price: int) -> int:
    return num_stages * units_per_stage * price * ESCROW_FACTOR


# ---------------------------------------------------------------- custom errors


def _error_abi(name: str) -> dict:
    matches = [item for item in market_container().abi if item["type"] == "error" and item["name"] == name]
    assert len(matches) == 1, f"ComputeMarket has no (unique) custom error {name!r}"
    return matches[0]


def encode_error(name: str, *args) -> str:
    """Revert data of a ComputeMarket custom error: selector of `Name(types)` and the abi-encoded arguments."""
    types = [item["type"] for item in _error_abi(name)["inputs"]]
    assert len(types) == len(args), f"{name} takes {len(types)} arguments, got {len(args)}"
    selector = keccak(text=f"{name}({','.join(types)})")[:4]
    return "0x" + (selector + abi_encode(types, [int(a) if isinstance(a, IntEnum) else a for a in args])).hex()


@contextmanager
def market_reverts(name: str, *args):
    """Expect the block to revert with exactly the ComputeMarket custom error `name(*args)` (see conftest's
    reverts_with: the expected text comes from brownie's own decoder fed with data we encode ourselves)."""
    data = encode_error(name, *args)
    assert data[:10] in brownie_errors, f"brownie does not know the selector of {name}"
    with brownie.reverts(decode_typed_error(data)):
        yield


# ---------------------------------------------------------------- deploying and posting


def deploy_market(deployer, min_stake=MIN_STAKE, slash_amount=SLASH_AMOUNT):
    return market_container().deploy(min_stake, slash_amount, {"from": deployer})


def job_params(coordinator, /, label="job", **overrides) -> tuple:
    """JobParams as a tuple, in the struct's order; overrides by field name."""
    params = {
        "modelSpecDigest": digest(f"{label}-spec"),
        "initialCheckpointDigest": digest(f"{label}-ckpt-0"),
        "datasetDigest": digest(f"{label}-data"),
        "planDigest": digest(f"{label}-plan"),
        "coordinator": str(coordinator),
        "numStages": NUM_STAGES,
        "unitsPerStage": UNITS_PER_STAGE,
        "pricePerUnit": PRICE,
        "claimDuration": CLAIM_DURATION,
    }
    unknown = set(overrides) - set(params)
    assert not unknown, f"unknown JobParams fields {unknown}"
    params.update(overrides)
    return tuple(params.values())


def post_job(market, requester, coordinator, /, value=None, label="job", **overrides):
    """Post a job with the exact escrow (or `value`); returns (jobId, tx)."""
    params = job_params(coordinator, label=label, **overrides)
    num_stages, units_per_stage, price = params[5], params[6], params[7]
    if value is None:
        value = escrow_for(num_stages, units_per_stage, price)
    tx = market.postJob(params, {"from": requester, "value": value})
    return int(tx.events["JobPosted"]["jobId"]), tx


def register_workers(market, workers, stake=MIN_STAKE):
    return [market.registerWorker({"from": w, "value": stake}) for w in workers]


# ---------------------------------------------------------------- views as plain Python values

JOB_FIELDS = (
    "requester",
    "status",
    "currentStage",
    "acceptedInStage",
    "coordinator",
    "numStages",
    "unitsPerStage",
    "claimDuration",
    "lastClaimDeadline",
    "pricePerUnit",
    "escrowRemaining",
    "modelSpecDigest",
    "initialCheckpointDigest",
    "datasetDigest",
    "planDigest",
    "latestCheckpointDigest",
    "finalModelDigest",
)
WORKER_FIELDS = ("stake", "openClaims", "completedUnits", "faults", "registered", "activeSince")


def _plain(value):
    if isinstance(value, bytes | bytearray) or type(value).__name__ == "HexBytes":
        return bytes(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    return str(value)


def job_info(market, job_id) -> dict:
    values = market.job(job_id)
    assert len(values) == len(JOB_FIELDS)
    info = {name: _plain(v) for name, v in zip(JOB_FIELDS, values, strict=True)}
    info["status"] = JobStatus(info["status"])
    return info


@dataclass
class UnitInfo:
    """`unit(jobId, unitIndex)`: slots 0 and 1 are the replicas, 2 the arbiter; `seals[i]` is replica i's
    commitment (zero: none yet), or its tag once `revealed[i]`."""

    status: UnitStatus
    resets: int
    workers: list[str]
    deadlines: list[int]
    seals: list[bytes]
    revealed: list[bool]
    reveal_deadline: int
    accepted: bytes
    draw_block: int = 0
    draw_pool_size: int = 0
    dispute_deadline: int = 0

    def slot_of(self, account) -> int | None:
        return self.workers.index(str(account)) if str(account) in self.workers else None

    def committed(self, slot: int) -> bool:
        """Replica `slot` sealed its result (the arbiter's slot never has a seal)."""
        return slot < ARBITER_SLOT and self.seals[slot] != ZERO_BYTES32


def unit_info(market, job_id, unit_index) -> UnitInfo:
    values = market.unit(job_id, unit_index)
    status, resets, workers, deadlines, seals, revealed, reveal_deadline, accepted = values[:8]
    draw_block, draw_pool_size, dispute_deadline = values[8:]
    return UnitInfo(
        status=UnitStatus(int(status)),
        resets=int(resets),
        workers=[str(w) for w in workers],
        deadlines=[int(d) for d in deadlines],
        seals=[bytes(r) for r in seals],
        revealed=[bool(r) for r in revealed],
        reveal_deadline=int(reveal_deadline),
        accepted=bytes(accepted),
        draw_block=int(draw_block),
        draw_pool_size=int(draw_pool_size),
        dispute_deadline=int(dispute_deadline),
    )


def worker_info(market, account) -> dict:
    values = market.worker(account)
    return {name: _plain(v) for name, v in zip(WORKER_FIELDS, values, strict=True)}


def gas_cost(tx) -> int:
    """Wei the sender paid for the transaction's gas."""
    return tx.gas_used * tx.gas_price


# ---------------------------------------------------------------- the money ledger


@dataclass
class Ledger:
    """Every wei that entered the market, and where it went, from msg.value and the contract's events."""

    escrow_in: int = 0
    stake_in: int = 0
    paid: int = 0  # UnitAccepted: 2 * pricePerUnit, escrow -> balances
    refunded: int = 0  # Refunded: escrow -> requester's balance
    slashed: int = 0  # WorkerSlashed: stake -> the agreeing workers' balances
    forfeited_owed: int = 0  # StakeForfeited to a worker: stake -> its balance
    forfeited_escrow: int = 0  # StakeForfeited to the job: stake -> the job's escrow
    stake_out: int = 0  # StakeWithdrawn: stake -> the worker's address
    withdrawn: int = 0  # Withdrawn: balance -> the account's address
    events: dict[str, int] = field(default_factory=dict)  # how many of each event

    def record(self, tx) -> None:
        for event in tx.events:  # every event, in order
            self.events[event.name] = self.events.get(event.name, 0) + 1
        for name, getter in (
            ("JobPosted", lambda e: e["escrow"]),
            ("WorkerRegistered", lambda e: e["stake"]),
            ("StakeAdded", lambda e: e["amount"]),
            ("UnitAccepted", lambda e: 2 * e["pricePerUnit"]),
            ("Refunded", lambda e: e["amount"]),
            ("WorkerSlashed", lambda e: e["amount"]),
            ("StakeWithdrawn", lambda e: e["amount"]),
            ("Withdrawn", lambda e: e["amount"]),
            ("StakeForfeited", lambda e: e["amount"]),
        ):
            if name not in tx.events:
                continue
            for event in tx.events[name]:
                amount = int(getter(event))
                if name == "JobPosted":
                    self.escrow_in += amount
                elif name in ("WorkerRegistered", "StakeAdded"):
                    self.stake_in += amount
                elif name == "UnitAccepted":
                    self.paid += amount
                elif name == "Refunded":
                    self.refunded += amount
                elif name == "WorkerSlashed":
                    self.slashed += amount
                elif name == "StakeWithdrawn":
                    self.stake_out += amount
                elif name == "StakeForfeited":
                    if int(event["beneficiary"], 16) == 0:
                        self.forfeited_escrow += amount
                    else:
                        self.forfeited_owed += amount
                else:
                    self.withdrawn += amount

    @property
    def total_in(self) -> int:
        return self.escrow_in + self.stake_in


def assert_conserved(market, accounts, ledger: Ledger | None = None, parts: bool = True) -> dict:
    """The market's money invariant: address(this).balance == totalStaked + totalEscrow + totalOwed; with `parts`,
    each total equal to the sum of its parts over `accounts` and all jobs (one call per account and job); with a
    ledger, total in == paid + refunded + slashed + stake withdrawn + still held (escrow and stakes), and each total
    equal to what the ledger says flowed in and out of it.
    """
    balance = int(market.balance())
    staked, escrow, owed = int(market.totalStaked()), int(market.totalEscrow()), int(market.totalOwed())
    assert balance == staked + escrow + owed, (balance, staked, escrow, owed)
    if parts:
        assert staked == sum(worker_info(market, a)["stake"] for a in accounts)
        assert owed == sum(int(market.balanceOf(a)) for a in accounts)
        assert escrow == sum(job_info(market, j)["escrowRemaining"] for j in range(1, int(market.jobCount()) + 1))
    if ledger is not None:
        forfeited = ledger.forfeited_owed + ledger.forfeited_escrow
        assert escrow == ledger.escrow_in + ledger.forfeited_escrow - ledger.paid - ledger.refunded, (escrow, ledger)
        assert staked == ledger.stake_in - ledger.slashed - forfeited - ledger.stake_out, (staked, ledger)
        assert owed == ledger.paid + ledger.refunded + ledger.slashed + ledger.forfeited_owed - ledger.withdrawn, (
            owed,
            ledger,
        )
        assert (
            ledger.total_in
            == (ledger.paid + ledger.refunded + ledger.slashed + forfeited + ledger.stake_out + escrow + staked)
            - ledger.forfeited_escrow
        )
        assert balance == ledger.total_in - ledger.stake_out - ledger.withdrawn
    return {"balance": balance, "staked": staked, "escrow": escrow, "owed": owed}


# ---------------------------------------------------------------- sealed results (mirror the contract)


def tag(job_id, unit_index, attempt, result_digest) -> bytes:
    """resultTag: keccak256(abi.encode(uint256 jobId, uint32 unitIndex, uint32 attempt, bytes32 digest)); `attempt`
    is the unit's resets."""
    return keccak(
        abi_encode(
            ["uint256", "uint32", "uint32", "bytes32"], [int(job_id), int(unit_index), int(attempt), result_digest]
        )
    )


def commitment(worker, result_tag) -> bytes:
    """resultCommitment: keccak256(abi.encode(address worker, bytes32 tag))."""
    return keccak(abi_encode(["address", "bytes32"], [str(worker), result_tag]))


def resets_of(market, job_id, unit_index) -> int:
    return int(market.unit(job_id, unit_index)[1])


def sealed(market, job_id, unit_index, worker, result_digest, attempt=None) -> bytes:
    """The commitment `worker` submits for `result_digest` (attempt: the unit's resets unless given)."""
    if attempt is None:
        attempt = resets_of(market, job_id, unit_index)
    return commitment(worker, tag(job_id, unit_index, attempt, result_digest))


def commit(market, job_id, unit_index, worker, result_digest, attempt=None):
    """`worker` commits to `result_digest` (correctly sealed for the unit's current attempt unless `attempt`)."""
    value = sealed(market, job_id, unit_index, worker, result_digest, attempt)
    return market.commitResult(job_id, unit_index, value, {"from": worker})


def reveal(market, job_id, unit_index, worker, result_digest, attempt=None):
    """`worker` reveals the tag of `result_digest`."""
    if attempt is None:
        attempt = resets_of(market, job_id, unit_index)
    return market.revealResult(job_id, unit_index, tag(job_id, unit_index, attempt, result_digest), {"from": worker})


def run_unit(market, job_id, unit_index, first, second, result):
    """Both replicas claim and commit `result`, the first reveals, the second publishes (revealing its own tag in
    the same call): the unit is Accepted. Returns the six txs."""
    attempt = resets_of(market, job_id, unit_index)
    return [
        market.claimUnit(job_id, unit_index, {"from": first}),
        market.claimUnit(job_id, unit_index, {"from": second}),
        commit(market, job_id, unit_index, first, result, attempt),
        commit(market, job_id, unit_index, second, result, attempt),
        reveal(market, job_id, unit_index, first, result, attempt),
        market.publishResult(job_id, unit_index, result, {"from": second}),
    ]


def run_disputed(market, job_id, unit_index, first, second, result_first, result_second):
    """Both replicas claim, commit and reveal different results: the unit is Disputed. Returns the six txs."""
    assert result_first != result_second
    attempt = resets_of(market, job_id, unit_index)
    return [
        market.claimUnit(job_id, unit_index, {"from": first}),
        market.claimUnit(job_id, unit_index, {"from": second}),
        commit(market, job_id, unit_index, first, result_first, attempt),
        commit(market, job_id, unit_index, second, result_second, attempt),
        reveal(market, job_id, unit_index, first, result_first, attempt),
        reveal(market, job_id, unit_index, second, result_second, attempt),
    ]


def expected_draw(market, job_id, unit_index):
    """The worker drawArbiter would pick now (mirrors the contract's _pick), or None: the beacon is the hash of the
    unit's drawBlock, the candidates the first eligible of ARBITER_DRAW_TRIES pool places derived from it."""
    info = unit_info(market, job_id, unit_index)
    if brownie.web3.eth.block_number + 1 - info.draw_block > 256:
        return None  # blockhash(drawBlock) is zero in the next block: the draw is scheduled again
    block = brownie.web3.eth.get_block(info.draw_block)
    seed = keccak(
        abi_encode(["bytes32", "uint256", "uint32", "uint32"], [bytes(block.hash), job_id, unit_index, info.resets])
    )
    min_stake = int(market.minStake())
    for i in range(int(market.ARBITER_DRAW_TRIES())):
        place = int.from_bytes(keccak(abi_encode(["bytes32", "uint256"], [seed, i])), "big") % info.draw_pool_size
        candidate = str(market.workerPool(place))
        if candidate in info.workers[:2] or market.isExcluded(job_id, unit_index, candidate):
            continue
        w = worker_info(market, candidate)
        if w["activeSince"] == 0 or w["activeSince"] > info.draw_block:
            continue
        if w["stake"] < min_stake * (w["openClaims"] + 1):
            continue
        return candidate
    return None


def draw(market, job_id, unit_index, caller, max_draws=8):
    """Draw the arbiter of a Disputed unit (mining a block first if the draw is not ready), drawing again while a
    draw finds nobody eligible; returns (the drawArbiter tx that drew, the arbiter's account)."""
    for _ in range(max_draws):
        if brownie.web3.eth.block_number <= unit_info(market, job_id, unit_index).draw_block:
            brownie.chain.mine()
        expected = expected_draw(market, job_id, unit_index)
        tx = market.drawArbiter(job_id, unit_index, {"from": caller})
        if "ArbiterDrawn" in tx.events:
            arbiter = str(tx.events["ArbiterDrawn"]["arbiter"])
            assert arbiter == expected, (arbiter, expected)
            return tx, next(a for a in brownie.accounts if str(a) == arbiter)
        assert expected is None and "ArbiterDrawScheduled" in tx.events
    raise AssertionError(f"no arbiter drawn for unit {unit_index} of job {job_id} in {max_draws} draws")


def arbitrate(market, job_id, unit_index, result, caller):
    """The arbiter of a Disputed unit is drawn (`caller` sends the draw) and submits `result`; returns
    (draw tx, submit tx, arbiter)."""
    drawn, arbiter = draw(market, job_id, unit_index, caller)
    return drawn, market.submitArbitration(job_id, unit_index, result, {"from": arbiter}), arbiter


def honest(job_id, unit_index) -> bytes:
    return digest(f"result-{job_id}-{unit_index}")


def run_stage(market, job_id, stage, units_per_stage, first, second):
    """Every unit of the stage accepted by two agreeing replicas."""
    for u in range(stage * units_per_stage, (stage + 1) * units_per_stage):
        run_unit(market, job_id, u, first, second, honest(job_id, u))
