"""ComputeMarket (issue 6): staking, posting, claiming, sealed replication (commit, reveal, publish), arbitration,
reveal expiry, checkpoints, payouts, refunds."""

import pytest
from conftest import set_next_block_timestamp
from market_helpers import (
    ARBITER_SLOT,
    CLAIM_DURATION,
    ESCROW_FACTOR,
    MIN_STAKE,
    NUM_STAGES,
    PRICE,
    SLASH_AMOUNT,
    UNITS_PER_STAGE,
    ZERO_ADDRESS,
    ZERO_BYTES32,
    JobStatus,
    UnitStatus,
    arbitrate,
    assert_conserved,
    commit,
    commitment,
    deploy_market,
    digest,
    draw,
    escrow_for,
    expected_draw,
    gas_cost,
    honest,
    job_info,
    job_params,
    market_container,
    market_reverts,
    post_job,
    register_workers,
    reveal,
    run_disputed,
    run_stage,
    run_unit,
    sealed,
    tag,
    unit_info,
    worker_info,
)

ESCROW = escrow_for(NUM_STAGES, UNITS_PER_STAGE, PRICE)
BAD = digest("bad")
WORSE = digest("worse")


@pytest.fixture(scope="module")
def requester(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def coordinator(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def workers(accounts):
    """Six registered workers (stake = MIN_STAKE each)."""
    return list(accounts[2:8])


@pytest.fixture(scope="module")
def outsider(accounts):
    """Never registers."""
    return accounts[9]


@pytest.fixture(scope="module")
def everyone(accounts):
    return list(accounts)


@pytest.fixture(scope="module")
def market(requester, workers):
    contract = deploy_market(requester)
    register_workers(contract, workers)
    return contract


@pytest.fixture
def job(market, requester, coordinator):
    """Job 1: NUM_STAGES stages of UNITS_PER_STAGE units, stage 0 open."""
    job_id, _ = post_job(market, requester, coordinator)
    assert job_id == 1
    return job_id


@pytest.fixture
def disputed(market, job, workers):
    """Unit 0 of job 1 Disputed: workers[0] committed and revealed BAD, workers[1] the honest result."""
    w = workers
    txs = run_disputed(market, job, 0, w[0], w[1], BAD, honest(job, 0))
    assert "UnitDisputed" in txs[-1].events
    return job


def committed_both(market, job_id, unit_index, first, second, result_first, result_second=None):
    """Both replicas claim and commit (the second's result defaults to the first's); the unit is Revealing.
    Returns the second commitment's tx (RevealOpened)."""
    market.claimUnit(job_id, unit_index, {"from": first})
    market.claimUnit(job_id, unit_index, {"from": second})
    commit(market, job_id, unit_index, first, result_first)
    tx = commit(market, job_id, unit_index, second, result_second if result_second is not None else result_first)
    assert "RevealOpened" in tx.events
    return tx


def sleep_past(chain, timestamp):
    """Mine a block after `timestamp`."""
    chain.sleep(max(0, timestamp - chain.time()) + 1)
    chain.mine()


# ---------------------------------------------------------------- deployment and posting


def test_constructor(market, requester):
    assert market.minStake() == MIN_STAKE
    assert market.slashAmount() == SLASH_AMOUNT
    assert market.jobCount() == 0
    assert market.ESCROW_FACTOR() == ESCROW_FACTOR
    assert market.ARBITER_SLOT() == ARBITER_SLOT
    assert market.expiryForfeit() == SLASH_AMOUNT // 4
    assert market.ARBITER_DRAW_TRIES() == 16 and market.DISPUTE_WINDOW() == 4
    with market_reverts("InvalidConfig", "minStake is 0"):
        market_container().deploy(0, SLASH_AMOUNT, {"from": requester})
    # every open claim is backed by minStake: a slash above it could not be covered (issue 13, M3)
    with market_reverts("InvalidConfig", "slashAmount exceeds minStake"):
        market_container().deploy(MIN_STAKE, MIN_STAKE + 1, {"from": requester})
    with market_reverts("InvalidConfig", "slashAmount is 0"):
        market_container().deploy(MIN_STAKE, 0, {"from": requester})


def test_post_job_records_everything(market, requester, coordinator, everyone):
    params = job_params(coordinator)
    assert market.escrowRequired(NUM_STAGES, UNITS_PER_STAGE, PRICE) == ESCROW
    before = requester.balance()
    tx = market.postJob(params, {"from": requester, "value": ESCROW})
    assert requester.balance() == before - ESCROW - gas_cost(tx)
    event = tx.events["JobPosted"]
    assert event["jobId"] == 1 and event["requester"] == requester and event["coordinator"] == coordinator
    assert event["escrow"] == ESCROW
    assert (event["numStages"], event["unitsPerStage"], event["pricePerUnit"], event["claimDuration"]) == (
        NUM_STAGES,
        UNITS_PER_STAGE,
        PRICE,
        CLAIM_DURATION,
    )
    assert bytes(event["planDigest"]) == params[3]
    info = job_info(market, 1)
    assert info["requester"] == requester and info["coordinator"] == coordinator
    assert info["status"] == JobStatus.Open
    assert (info["currentStage"], info["acceptedInStage"], info["lastClaimDeadline"]) == (0, 0, 0)
    assert info["escrowRemaining"] == ESCROW and info["pricePerUnit"] == PRICE
    assert [info[k] for k in ("modelSpecDigest", "initialCheckpointDigest", "datasetDigest", "planDigest")] == list(
        params[:4]
    )
    assert info["latestCheckpointDigest"] == params[1] and info["finalModelDigest"] == ZERO_BYTES32
    assert market.jobCount() == 1 and market.totalEscrow() == ESCROW and market.balance() == ESCROW + 6 * MIN_STAKE
    # ids increment
    assert post_job(market, requester, coordinator, label="second")[0] == 2
    assert_conserved(market, everyone)


@pytest.mark.parametrize("delta", [-1, 1, -ESCROW])
def test_post_job_wrong_escrow(market, requester, coordinator, delta):
    with market_reverts("WrongEscrow", ESCROW, ESCROW + delta):
        post_job(market, requester, coordinator, value=ESCROW + delta)
    # the escrow counts the worst case: two replicas and an arbiter per unit
    with market_reverts("WrongEscrow", ESCROW, 2 * ESCROW // 3):
        post_job(market, requester, coordinator, value=2 * ESCROW // 3)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"numStages": 0}, "numStages is 0"),
        ({"unitsPerStage": 0}, "unitsPerStage is 0"),
        ({"pricePerUnit": 0}, "pricePerUnit is 0"),
        ({"claimDuration": 0}, "claimDuration is 0"),
        ({"coordinator": ZERO_ADDRESS}, "coordinator is zero"),
        ({"numStages": 2**16, "unitsPerStage": 2**16}, "too many units"),
        ({"pricePerUnit": 2**255}, "escrow overflows"),
    ],
)
def test_post_job_invalid(market, requester, coordinator, overrides, reason):
    with market_reverts("InvalidJob", reason):
        market.postJob(job_params(coordinator, **overrides), {"from": requester, "value": 0})


def test_post_job_empty_digest(market, requester, coordinator):
    with market_reverts("EmptyDigest"):
        post_job(market, requester, coordinator, datasetDigest=ZERO_BYTES32)


def test_unknown_job(market, workers, requester):
    w = workers[0]
    with market_reverts("UnknownJob", 7):
        market.claimUnit(7, 0, {"from": w})
    with market_reverts("UnknownJob", 7):
        market.job(7)
    with market_reverts("UnknownJob", 7):
        market.cancelJob(7, {"from": requester})
    with market_reverts("UnknownJob", 7):
        market.commitResult(7, 0, BAD, {"from": w})
    with market_reverts("UnknownJob", 7):
        market.revealResult(7, 0, BAD, {"from": w})
    with market_reverts("UnknownJob", 7):
        market.publishResult(7, 0, BAD, {"from": w})
    with market_reverts("UnknownJob", 7):
        market.submitArbitration(7, 0, BAD, {"from": w})
    with market_reverts("UnknownJob", 7):
        market.expireReveal(7, 0, {"from": w})
    with market_reverts("UnknownJob", 7):
        market.expireClaim(7, 0, 0, {"from": w})


# ---------------------------------------------------------------- stake


def test_register_worker(market, outsider, workers):
    with market_reverts("StakeTooLow", outsider.address, MIN_STAKE - 1, MIN_STAKE):
        market.registerWorker({"from": outsider, "value": MIN_STAKE - 1})
    before = outsider.balance()
    tx = market.registerWorker({"from": outsider, "value": MIN_STAKE + 5})
    assert outsider.balance() == before - MIN_STAKE - 5 - gas_cost(tx)
    assert tx.events["WorkerRegistered"]["worker"] == outsider
    assert tx.events["WorkerRegistered"]["stake"] == MIN_STAKE + 5
    assert worker_info(market, outsider) == {
        "stake": MIN_STAKE + 5,
        "openClaims": 0,
        "completedUnits": 0,
        "faults": 0,
        "registered": True,
        "activeSince": tx.block_number,
    }
    assert market.totalStaked() == 7 * MIN_STAKE + 5
    # it takes the next place of the pool arbiters are drawn from
    assert market.poolSize() == 7 and market.workerPool(6) == outsider
    with market_reverts("AlreadyRegistered", outsider.address):
        market.registerWorker({"from": outsider, "value": MIN_STAKE})
    with market_reverts("AlreadyRegistered", workers[0].address):
        market.registerWorker({"from": workers[0], "value": MIN_STAKE})


def test_add_stake(market, outsider, workers):
    with market_reverts("NotRegistered", outsider.address):
        market.addStake({"from": outsider, "value": 1})
    with market_reverts("ZeroAmount"):
        market.addStake({"from": workers[0], "value": 0})
    tx = market.addStake({"from": workers[0], "value": 123})
    assert (tx.events["StakeAdded"]["amount"], tx.events["StakeAdded"]["stake"]) == (123, MIN_STAKE + 123)
    assert worker_info(market, workers[0])["stake"] == MIN_STAKE + 123
    assert market.totalStaked() == 6 * MIN_STAKE + 123


def test_withdraw_stake_rules(market, job, workers, outsider, everyone):
    w, other = workers[0], workers[1]
    market.addStake({"from": w, "value": MIN_STAKE})  # stake 2 * MIN_STAKE
    with market_reverts("NotRegistered", outsider.address):
        market.withdrawStake(1, {"from": outsider})
    with market_reverts("ZeroAmount"):
        market.withdrawStake(0, {"from": w})
    with market_reverts("AmountExceedsStake", w.address, 2 * MIN_STAKE + 1, 2 * MIN_STAKE):
        market.withdrawStake(2 * MIN_STAKE + 1, {"from": w})
    # what is left must be 0 or at least minStake
    with market_reverts("StakeTooLow", w.address, MIN_STAKE - 1, MIN_STAKE):
        market.withdrawStake(MIN_STAKE + 1, {"from": w})
    before = w.balance()
    tx = market.withdrawStake(MIN_STAKE, {"from": w})
    assert w.balance() == before + MIN_STAKE - gas_cost(tx)
    assert (tx.events["StakeWithdrawn"]["amount"], tx.events["StakeWithdrawn"]["stake"]) == (MIN_STAKE, MIN_STAKE)
    # not while a claim is open
    market.claimUnit(job, 0, {"from": w})
    with market_reverts("HasOpenClaims", w.address, 1):
        market.withdrawStake(MIN_STAKE, {"from": w})
    # ... nor while its committed result waits for verification: committed, revealing, revealed
    commit(market, job, 0, w, honest(job, 0))
    with market_reverts("HasOpenClaims", w.address, 1):
        market.withdrawStake(MIN_STAKE, {"from": w})
    market.claimUnit(job, 0, {"from": other})
    commit(market, job, 0, other, honest(job, 0))
    with market_reverts("HasOpenClaims", w.address, 1):
        market.withdrawStake(MIN_STAKE, {"from": w})
    reveal(market, job, 0, w, honest(job, 0))
    with market_reverts("HasOpenClaims", w.address, 1):
        market.withdrawStake(MIN_STAKE, {"from": w})
    market.publishResult(job, 0, honest(job, 0), {"from": other})
    # verified: the full exit is allowed; the worker stays registered with zero stake and cannot claim
    before = w.balance()
    tx = market.withdrawStake(MIN_STAKE, {"from": w})
    assert w.balance() == before + MIN_STAKE - gas_cost(tx)
    assert worker_info(market, w)["stake"] == 0 and worker_info(market, w)["registered"]
    with market_reverts("StakeTooLow", w.address, 0, MIN_STAKE):
        market.claimUnit(job, 1, {"from": w})
    market.addStake({"from": w, "value": MIN_STAKE})
    assert market.claimUnit(job, 1, {"from": w}).events["UnitClaimed"]["slot"] == 0
    assert_conserved(market, everyone)


# ---------------------------------------------------------------- claims


def test_claim(market, job, workers, chain):
    tx = market.claimUnit(job, 1, {"from": workers[0]})
    event = tx.events["UnitClaimed"]
    assert (event["jobId"], event["unitIndex"], event["worker"], event["slot"]) == (job, 1, workers[0], 0)
    assert event["deadline"] == tx.timestamp + CLAIM_DURATION
    assert tx.return_value == 0
    tx2 = market.claimUnit(job, 1, {"from": workers[1]})
    assert tx2.events["UnitClaimed"]["slot"] == 1
    info = unit_info(market, job, 1)
    assert info.status == UnitStatus.Open and info.resets == 0
    assert info.workers == [workers[0], workers[1], ZERO_ADDRESS]
    assert info.deadlines == [tx.timestamp + CLAIM_DURATION, tx2.timestamp + CLAIM_DURATION, 0]
    assert info.seals == [ZERO_BYTES32] * 2 and info.revealed == [False, False]
    assert info.reveal_deadline == 0 and info.accepted == ZERO_BYTES32
    assert worker_info(market, workers[0])["openClaims"] == 1
    assert job_info(market, job)["lastClaimDeadline"] == tx2.timestamp + CLAIM_DURATION


def test_double_claim(market, job, workers):
    market.addStake({"from": workers[0], "value": MIN_STAKE})  # stake for a second claim: see below
    market.claimUnit(job, 0, {"from": workers[0]})
    with market_reverts("AlreadyWorkedOn", job, 0, workers[0].address):
        market.claimUnit(job, 0, {"from": workers[0]})
    market.claimUnit(job, 0, {"from": workers[1]})
    with market_reverts("NoFreeSlot", job, 0):
        market.claimUnit(job, 0, {"from": workers[2]})
    # a worker may hold claims on several units, with minStake for each
    market.claimUnit(job, 1, {"from": workers[0]})
    assert worker_info(market, workers[0])["openClaims"] == 2
    with market_reverts("InsufficientStake", workers[0].address, 2 * MIN_STAKE, 3 * MIN_STAKE):
        market.claimUnit(job, 1, {"from": workers[0]})


def test_claim_by_unregistered(market, job, outsider):
    with market_reverts("NotRegistered", outsider.address):
        market.claimUnit(job, 0, {"from": outsider})


def test_claim_future_stage_and_out_of_range(market, job, workers):
    with market_reverts("StageNotCurrent", job, UNITS_PER_STAGE, 1, 0):
        market.claimUnit(job, UNITS_PER_STAGE, {"from": workers[0]})
    total = NUM_STAGES * UNITS_PER_STAGE
    with market_reverts("UnitOutOfRange", job, total, total):
        market.claimUnit(job, total, {"from": workers[0]})
    with market_reverts("UnitOutOfRange", job, total, total):
        market.unit(job, total)


def test_expiry_and_reclaim(market, job, workers, chain):
    first, second = workers[0], workers[1]
    result = honest(job, 0)
    tx = market.claimUnit(job, 0, {"from": first})
    deadline = tx.timestamp + CLAIM_DURATION
    # not free before the deadline
    set_next_block_timestamp(tx.timestamp + 100)
    market.claimUnit(job, 0, {"from": second})
    with market_reverts("NoFreeSlot", job, 0):
        market.claimUnit(job, 0, {"from": workers[2]})
    set_next_block_timestamp(deadline + 1)
    with market_reverts("DeadlinePassed", job, 0, first.address, deadline):
        commit(market, job, 0, first, result)
    # the second replica's claim is still valid; the first one's slot goes to another worker
    set_next_block_timestamp(deadline + 2)
    escrow = job_info(market, job)["escrowRemaining"]
    tx = market.claimUnit(job, 0, {"from": workers[2]})
    assert list(tx.events.keys()) == ["ClaimExpired", "StakeForfeited", "UnitClaimed"]
    expired = tx.events["ClaimExpired"]
    assert (expired["worker"], expired["slot"], expired["unitIndex"]) == (first, 0, 0)
    # the expired claim costs stake: the other replica has not committed, so it goes to the job's escrow
    forfeited = tx.events["StakeForfeited"]
    assert (forfeited["worker"], forfeited["amount"], forfeited["beneficiary"], forfeited["faults"]) == (
        first,
        SLASH_AMOUNT // 4,
        ZERO_ADDRESS,
        1,
    )
    assert worker_info(market, first)["stake"] == MIN_STAKE - SLASH_AMOUNT // 4
    assert job_info(market, job)["escrowRemaining"] == escrow + SLASH_AMOUNT // 4
    assert tx.events["UnitClaimed"]["slot"] == 0
    assert worker_info(market, first)["openClaims"] == 0
    assert worker_info(market, workers[2])["openClaims"] == 1
    assert unit_info(market, job, 0).workers[:2] == [workers[2], second]
    with market_reverts("NotClaimant", job, 0, first.address):
        commit(market, job, 0, first, result)
    # the expired worker is barred from the unit
    assert market.isExcluded(job, 0, first)
    market.addStake({"from": first, "value": SLASH_AMOUNT // 4})
    with market_reverts("AlreadyWorkedOn", job, 0, first.address):
        market.claimUnit(job, 0, {"from": first})
    commit(market, job, 0, workers[2], result)
    commit(market, job, 0, second, result)
    reveal(market, job, 0, second, result)
    market.publishResult(job, 0, result, {"from": workers[2]})
    assert unit_info(market, job, 0).status == UnitStatus.Accepted
    assert market.balanceOf(workers[2]) == market.balanceOf(second) == PRICE
    assert market.balanceOf(first) == 0


def test_commit_at_deadline_is_in_time(market, job, workers):
    tx = market.claimUnit(job, 0, {"from": workers[0]})
    set_next_block_timestamp(tx.timestamp + CLAIM_DURATION)
    assert "ResultCommitted" in commit(market, job, 0, workers[0], BAD).events


def test_committed_replica_keeps_its_slot_after_its_deadline(market, job, workers, outsider, chain):
    """A committed result waits for the other replica: its slot is not free, nor expirable, after its deadline."""
    tx = market.claimUnit(job, 0, {"from": workers[0]})
    commit(market, job, 0, workers[0], honest(job, 0))
    sleep_past(chain, tx.timestamp + CLAIM_DURATION)
    with market_reverts("ClaimNotReleasable", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
    assert market.claimUnit(job, 0, {"from": workers[1]}).events["UnitClaimed"]["slot"] == 1
    with market_reverts("NoFreeSlot", job, 0):
        market.claimUnit(job, 0, {"from": workers[2]})
    commit(market, job, 0, workers[1], honest(job, 0))
    reveal(market, job, 0, workers[0], honest(job, 0))
    assert "UnitAccepted" in market.publishResult(job, 0, honest(job, 0), {"from": workers[1]}).events


def test_expire_claim(market, job, workers, outsider, chain):
    w = workers[0]
    tx = market.claimUnit(job, 0, {"from": w})
    deadline = tx.timestamp + CLAIM_DURATION
    with market_reverts("InvalidSlot", 3):
        market.expireClaim(job, 0, 3, {"from": outsider})
    with market_reverts("NoClaim", job, 0, 1):
        market.expireClaim(job, 0, 1, {"from": outsider})
    with market_reverts("NoClaim", job, 0, ARBITER_SLOT):
        market.expireClaim(job, 0, ARBITER_SLOT, {"from": outsider})
    with market_reverts("ClaimNotExpired", job, 0, 0, deadline):
        market.expireClaim(job, 0, 0, {"from": outsider})
    set_next_block_timestamp(deadline + 1)
    tx = market.expireClaim(job, 0, 0, {"from": outsider})
    assert tx.events["ClaimExpired"]["worker"] == w
    assert unit_info(market, job, 0).workers[0] == ZERO_ADDRESS
    assert worker_info(market, w)["openClaims"] == 0
    assert tx.events["StakeForfeited"]["amount"] == SLASH_AMOUNT // 4
    with market_reverts("NoClaim", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
    market.withdrawStake(MIN_STAKE - SLASH_AMOUNT // 4, {"from": w})
    # a committed result is not expired by its deadline, nor once both committed
    committed_both(market, job, 1, workers[1], workers[2], honest(job, 1))
    chain.sleep(CLAIM_DURATION + 10)
    chain.mine()
    for slot in (0, 1):
        with market_reverts("ClaimNotReleasable", job, 1, slot):
            market.expireClaim(job, 1, slot, {"from": outsider})


def test_expire_arbiter_claim(market, disputed, workers, outsider, chain, everyone):
    """A drawn arbiter that does not answer by its deadline forfeits expiryForfeit to the job, is excluded from the
    unit, and a new draw is scheduled, which cannot pick it again."""
    job = disputed
    drawn, arbiter = draw(market, job, 0, workers[0])
    deadline = drawn.events["ArbiterDrawn"]["deadline"]
    assert deadline == drawn.timestamp + CLAIM_DURATION
    assert unit_info(market, job, 0).deadlines[ARBITER_SLOT] == deadline
    with market_reverts("ClaimNotExpired", job, 0, ARBITER_SLOT, deadline):
        market.expireClaim(job, 0, ARBITER_SLOT, {"from": outsider})
    set_next_block_timestamp(deadline + 1)
    with market_reverts("DeadlinePassed", job, 0, arbiter.address, deadline):
        market.submitArbitration(job, 0, honest(job, 0), {"from": arbiter})
    escrow = job_info(market, job)["escrowRemaining"]
    tx = market.expireClaim(job, 0, ARBITER_SLOT, {"from": outsider})
    assert list(tx.events.keys()) == ["ClaimExpired", "StakeForfeited", "ArbiterDrawScheduled"]
    assert (tx.events["ClaimExpired"]["worker"], tx.events["ClaimExpired"]["slot"]) == (arbiter, ARBITER_SLOT)
    forfeited = tx.events["StakeForfeited"]
    assert (forfeited["worker"], forfeited["amount"], forfeited["beneficiary"]) == (
        arbiter,
        SLASH_AMOUNT // 4,
        ZERO_ADDRESS,
    )
    assert job_info(market, job)["escrowRemaining"] == escrow + SLASH_AMOUNT // 4
    assert worker_info(market, arbiter)["openClaims"] == 0 and market.isExcluded(job, 0, arbiter)
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Disputed and info.workers[ARBITER_SLOT] == ZERO_ADDRESS
    assert info.draw_block == tx.block_number
    # the replicas' committed claims stay (the dispute is still to be settled)
    for slot in (0, 1):
        with market_reverts("ClaimNotReleasable", job, 0, slot):
            market.expireClaim(job, 0, slot, {"from": outsider})
    # a new draw, never the excluded arbiter
    _, tx, second = arbitrate(market, job, 0, honest(job, 0), outsider)
    assert second != arbiter and unit_info(market, job, 0).status == UnitStatus.Accepted
    assert_conserved(market, everyone)


def test_h1_attacker_cannot_choose_its_own_judge(market, job, workers, accounts, chain, everyone):
    """Issue 13, H1. The attack: the attacker's replica commits garbage so the unit is disputed, and its second
    account takes the arbiter slot and confirms the garbage. Now the arbiter slot cannot be claimed, only the drawn
    worker may arbitrate, and an account that becomes eligible after the beacon block is never drawn."""
    attacker, honest_replica = workers[0], workers[1]
    accomplice = accounts[8]  # the attacker's second account, staked only once the dispute is visible
    txs = run_disputed(market, job, 0, attacker, honest_replica, BAD, honest(job, 0))
    dispute = txs[-1]
    assert [e.name for e in dispute.events] == ["ResultRevealed", "UnitDisputed", "ArbiterDrawScheduled"]
    scheduled = dispute.events["ArbiterDrawScheduled"]
    assert (scheduled["drawBlock"], scheduled["poolSize"]) == (dispute.block_number, 6)
    market.registerWorker({"from": accomplice, "value": MIN_STAKE})
    # 1. the arbiter slot is not claimable, by anyone
    for w in (accomplice, *workers[2:]):
        with market_reverts("UnitNotClaimable", job, 0, UnitStatus.Disputed):
            market.claimUnit(job, 0, {"from": w})
    # 2. nobody arbitrates before the draw, and the draw waits for the beacon block to be mined
    for w in (accomplice, attacker, workers[2]):
        with market_reverts("NotClaimant", job, 0, w.address):
            market.submitArbitration(job, 0, BAD, {"from": w})
    # 3. the draw picks the worker the beacon says (the test mirrors the contract's rule), never a replica, never an
    #    account registered after the beacon block; only that worker may submit
    _, arbiter = draw(market, job, 0, attacker)
    assert arbiter not in (attacker, honest_replica, accomplice) and arbiter in workers[2:]
    assert unit_info(market, job, 0).workers[ARBITER_SLOT] == arbiter
    with market_reverts("ArbiterAlreadyDrawn", job, 0, arbiter.address):
        market.drawArbiter(job, 0, {"from": attacker})
    with market_reverts("NotClaimant", job, 0, accomplice.address):
        market.submitArbitration(job, 0, BAD, {"from": accomplice})
    # the honest drawn arbiter settles it: the attacker is slashed, the honest replica and the arbiter are paid
    tx = market.submitArbitration(job, 0, honest(job, 0), {"from": arbiter})
    assert tx.events["WorkerSlashed"]["worker"] == attacker
    assert (tx.events["UnitAccepted"]["paidA"], tx.events["UnitAccepted"]["paidB"]) == (honest_replica, arbiter)
    assert market.balanceOf(accomplice) == market.balanceOf(attacker) == 0
    assert_conserved(market, everyone)


def test_h1_late_stake_is_not_eligible_and_draws_are_redone(requester, coordinator, accounts, chain, everyone):
    """With only the two replicas and an accomplice staked after the beacon block, no try is eligible: the draw is
    scheduled again from a later block (nobody is drawn). A worker staked before that block becomes eligible."""
    market = deploy_market(requester)
    attacker, honest_replica, accomplice, latecomer = accounts[2], accounts[3], accounts[4], accounts[5]
    register_workers(market, [attacker, honest_replica])
    job, _ = post_job(market, requester, coordinator)
    run_disputed(market, job, 0, attacker, honest_replica, BAD, honest(job, 0))
    market.registerWorker({"from": accomplice, "value": MIN_STAKE})  # after the beacon block
    assert worker_info(market, accomplice)["activeSince"] > unit_info(market, job, 0).draw_block
    tx = market.drawArbiter(job, 0, {"from": attacker})
    assert [e.name for e in tx.events] == ["ArbiterDrawScheduled"]
    assert tx.return_value == ZERO_ADDRESS
    info = unit_info(market, job, 0)
    assert (info.draw_block, info.draw_pool_size, info.workers[ARBITER_SLOT]) == (tx.block_number, 3, ZERO_ADDRESS)
    # the accomplice was staked before the new beacon block: it may be drawn now (the pool has only it to offer)
    register_workers(market, [latecomer])
    _, arbiter = draw(market, job, 0, honest_replica)
    # the only eligible place below the new pool size; the latecomer only if 16 tries all missed it (p = 0.15%)
    assert arbiter in (accomplice, latecomer)
    assert_conserved(market, everyone)


def test_h1_stale_beacon_is_redrawn(market, disputed, workers, chain):
    """blockhash only reaches 256 blocks back: a draw called later schedules a new one from its own block."""
    job = disputed
    chain.mine(257)
    tx = market.drawArbiter(job, 0, {"from": workers[0]})
    assert [e.name for e in tx.events] == ["ArbiterDrawScheduled"]
    assert unit_info(market, job, 0).draw_block == tx.block_number
    _, arbiter = draw(market, job, 0, workers[0])
    assert arbiter in workers[2:]


def test_h1_draw_errors_and_uniformity(market, job, workers, requester, chain):
    with market_reverts("UnitNotDisputed", job, 0, UnitStatus.Open):
        market.drawArbiter(job, 0, {"from": workers[0]})
    run_disputed(market, job, 0, workers[0], workers[1], BAD, honest(job, 0))
    expected = expected_draw(market, job, 0)
    chain.mine()
    assert expected_draw(market, job, 0) == expected  # fixed by the beacon: mining more blocks changes nothing
    market.cancelJob(job, {"from": requester})
    with market_reverts("JobNotOpen", job, 3):
        market.drawArbiter(job, 0, {"from": workers[0]})


def test_h1_draw_spreads_over_eligible_workers(requester, coordinator, accounts, chain):
    """Over many disputes every eligible worker is drawn, none of the replicas ever (a coarse check of the
    mirror of the rule, which the draw() helper asserts at each draw)."""
    market = deploy_market(requester)
    workers = list(accounts[2:8])
    register_workers(market, workers, stake=4 * MIN_STAKE)
    job, _ = post_job(market, requester, coordinator, numStages=1, unitsPerStage=12)
    seen = set()
    for u in range(12):
        run_disputed(market, job, u, workers[0], workers[1], BAD, honest(job, u))
        _, _, arbiter = arbitrate(market, job, u, honest(job, u), workers[1])
        seen.add(str(arbiter))
        market.addStake({"from": workers[0], "value": SLASH_AMOUNT})
    # The beacon is a block hash, so which workers come up varies from run to run; two of four at least in twelve
    # draws (a run once drew only two), and never a replica.
    assert seen <= {str(w) for w in workers[2:]} and len(seen) >= 2, seen


def test_arbiter_claim_of_accepted_unit_stays_closed(market, disputed, workers, outsider, chain):
    """_accept already closed the arbiter's claim (openClaims - 1) though the slot still names it: expireClaim must
    not close it a second time, or the arbiter's committed result on unit 1 would no longer lock its stake."""
    job = disputed
    _, tx, arbiter = arbitrate(market, job, 0, honest(job, 0), workers[0])
    assert "UnitAccepted" in tx.events
    market.claimUnit(job, 1, {"from": arbiter})
    commit(market, job, 1, arbiter, honest(job, 1))
    assert worker_info(market, arbiter)["openClaims"] == 1
    sleep_past(chain, unit_info(market, job, 0).deadlines[ARBITER_SLOT])
    with market_reverts("ClaimNotReleasable", job, 0, ARBITER_SLOT):
        market.expireClaim(job, 0, ARBITER_SLOT, {"from": outsider})
    assert worker_info(market, arbiter)["openClaims"] == 1
    with market_reverts("HasOpenClaims", arbiter.address, 1):
        market.withdrawStake(MIN_STAKE, {"from": arbiter})


# ---------------------------------------------------------------- sealed results: commit, reveal, publish


def test_tag_and_commitment_match_the_contract(market, workers):
    cases = [(1, 0, 0, honest(1, 0)), (2**200 + 3, 2**32 - 1, 2**32 - 1, BAD), (5, 3, 7, digest("x"))]
    for job_id, unit_index, attempt, result in cases:
        t = tag(job_id, unit_index, attempt, result)
        assert bytes(market.resultTag(job_id, unit_index, attempt, result)) == t
        for w in workers[:2]:
            assert bytes(market.resultCommitment(w, t)) == commitment(w, t)
    # every input changes the tag, and the commitment is bound to its worker
    base = tag(1, 0, 0, BAD)
    assert len({base, tag(2, 0, 0, BAD), tag(1, 1, 0, BAD), tag(1, 0, 1, BAD), tag(1, 0, 0, WORSE)}) == 5
    assert commitment(workers[0], base) != commitment(workers[1], base)


def test_commit_reveal_publish_lifecycle(market, job, workers, everyone):
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    t = tag(job, 0, 0, result)
    market.claimUnit(job, 0, {"from": a})
    claim_b = market.claimUnit(job, 0, {"from": b})
    tx = commit(market, job, 0, a, result)
    assert list(tx.events.keys()) == ["ResultCommitted"]
    event = tx.events["ResultCommitted"]
    assert (event["jobId"], event["unitIndex"], event["worker"], event["slot"]) == (job, 0, a, 0)
    assert bytes(event["commitment"]) == commitment(a, t)
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Open and info.seals == [commitment(a, t), ZERO_BYTES32]
    assert info.revealed == [False, False] and info.reveal_deadline == 0
    # the second commitment opens the reveal window and makes it the job's last deadline
    set_next_block_timestamp(claim_b.timestamp + 100)
    tx = commit(market, job, 0, b, result)
    assert list(tx.events.keys()) == ["ResultCommitted", "RevealOpened"]
    reveal_deadline = tx.timestamp + CLAIM_DURATION
    assert tx.events["ResultCommitted"]["slot"] == 1
    assert (tx.events["RevealOpened"]["unitIndex"], tx.events["RevealOpened"]["revealDeadline"]) == (0, reveal_deadline)
    assert job_info(market, job)["lastClaimDeadline"] == reveal_deadline > claim_b.timestamp + CLAIM_DURATION
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Revealing and info.reveal_deadline == reveal_deadline
    assert info.seals == [commitment(a, t), commitment(b, t)] and info.revealed == [False, False]
    # a Revealing unit takes no claim, not even an arbiter's
    with market_reverts("UnitNotClaimable", job, 0, UnitStatus.Revealing):
        market.claimUnit(job, 0, {"from": workers[2]})
    # the first replica reveals its tag: it replaces its commitment
    tx = reveal(market, job, 0, a, result)
    assert list(tx.events.keys()) == ["ResultRevealed"]
    event = tx.events["ResultRevealed"]
    assert (event["worker"], event["slot"], bytes(event["tag"])) == (a, 0, t)
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Revealing
    assert info.seals == [t, commitment(b, t)] and info.revealed == [True, False]
    assert market.balanceOf(a) == market.balanceOf(b) == 0
    # the second publishes the digest, revealing its own tag in the same call: accepted and paid
    tx = market.publishResult(job, 0, result, {"from": b})
    assert list(tx.events.keys()) == ["ResultRevealed", "UnitAccepted"]
    event = tx.events["ResultRevealed"]
    assert (event["worker"], event["slot"], bytes(event["tag"])) == (b, 1, t)
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Accepted and info.accepted == result
    assert info.seals == [t, t] and info.revealed == [True, True]
    assert info.workers == [a, b, ZERO_ADDRESS]
    assert_conserved(market, everyone)


def test_matching_results_accept_and_pay(market, job, workers, everyone):
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    txs = run_unit(market, job, 0, a, b, result)
    tx = txs[-1]
    assert list(tx.events.keys()) == ["ResultRevealed", "UnitAccepted"]
    accepted = tx.events["UnitAccepted"]
    assert bytes(accepted["resultDigest"]) == result
    assert (accepted["paidA"], accepted["paidB"], accepted["pricePerUnit"]) == (a, b, PRICE)
    assert market.balanceOf(a) == market.balanceOf(b) == PRICE
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Accepted and info.accepted == result
    assert bytes(market.acceptedDigest(job, 0)) == result
    assert bytes(market.acceptedDigest(job, 1)) == ZERO_BYTES32
    for w in (a, b):
        assert worker_info(market, w)["openClaims"] == 0
        assert worker_info(market, w)["completedUnits"] == 1
    j = job_info(market, job)
    assert j["escrowRemaining"] == ESCROW - 2 * PRICE and j["acceptedInStage"] == 1
    assert market.totalOwed() == 2 * PRICE
    with market_reverts("UnitNotClaimable", job, 0, UnitStatus.Accepted):
        market.claimUnit(job, 0, {"from": workers[2]})
    for w in (a, b):
        with market_reverts("AlreadyAccepted", job, 0):
            market.publishResult(job, 0, result, {"from": w})
        with market_reverts("AlreadySubmitted", job, 0, w.address):
            commit(market, job, 0, w, result)
        with market_reverts("AlreadyRevealed", job, 0, w.address):
            reveal(market, job, 0, w, result)
    with market_reverts("NotRevealing", job, 0, UnitStatus.Accepted):
        market.expireReveal(job, 0, {"from": workers[2]})
    assert_conserved(market, everyone)


def test_publish_after_both_revealed(market, job, workers):
    """Both may reveal with revealResult; then either publishes (the first here), with nothing left to reveal."""
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    committed_both(market, job, 0, a, b, result)
    reveal(market, job, 0, a, result)
    tx = reveal(market, job, 0, b, result)
    assert list(tx.events.keys()) == ["ResultRevealed"]  # equal tags: no dispute
    assert unit_info(market, job, 0).status == UnitStatus.Revealing
    tx = market.publishResult(job, 0, result, {"from": a})
    assert list(tx.events.keys()) == ["UnitAccepted"]
    assert market.balanceOf(a) == market.balanceOf(b) == PRICE


def test_commit_errors(market, job, workers, outsider):
    w = workers[0]
    with market_reverts("NotClaimant", job, 0, outsider.address):
        market.commitResult(job, 0, BAD, {"from": outsider})
    with market_reverts("NotClaimant", job, 0, w.address):
        commit(market, job, 0, w, BAD)
    market.claimUnit(job, 0, {"from": w})
    with market_reverts("EmptyDigest"):
        market.commitResult(job, 0, ZERO_BYTES32, {"from": w})
    with market_reverts("NotClaimant", job, 0, workers[1].address):
        commit(market, job, 0, workers[1], BAD)
    commit(market, job, 0, w, BAD)
    # once: not even to change its mind
    with market_reverts("AlreadySubmitted", job, 0, w.address):
        commit(market, job, 0, w, honest(job, 0))
    assert unit_info(market, job, 0).seals[0] == sealed(market, job, 0, w, BAD)


def test_reveal_errors(market, job, workers, outsider):
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    with market_reverts("NotClaimant", job, 0, a.address):
        reveal(market, job, 0, a, result)
    market.claimUnit(job, 0, {"from": a})
    # nothing to reveal before both committed
    with market_reverts("RevealNotOpen", job, 0):
        reveal(market, job, 0, a, result)
    commit(market, job, 0, a, result)
    with market_reverts("RevealNotOpen", job, 0):
        reveal(market, job, 0, a, result)
    with market_reverts("RevealNotOpen", job, 0):
        market.publishResult(job, 0, result, {"from": a})
    market.claimUnit(job, 0, {"from": b})
    with market_reverts("RevealNotOpen", job, 0):
        reveal(market, job, 0, a, result)
    commit(market, job, 0, b, result)
    with market_reverts("NotClaimant", job, 0, outsider.address):
        market.revealResult(job, 0, tag(job, 0, 0, result), {"from": outsider})
    # a tag that does not open the commitment: another result, another attempt, another unit or job, the digest
    for wrong in (tag(job, 0, 0, BAD), tag(job, 0, 1, result), tag(job, 1, 0, result), tag(2, 0, 0, result), result):
        with market_reverts("WrongReveal", job, 0, a.address):
            market.revealResult(job, 0, wrong, {"from": a})
    reveal(market, job, 0, a, result)
    with market_reverts("AlreadyRevealed", job, 0, a.address):
        reveal(market, job, 0, a, result)
    with market_reverts("AlreadyRevealed", job, 0, a.address):
        reveal(market, job, 0, a, BAD)
    assert unit_info(market, job, 0).revealed == [True, False]


def test_reveal_window_deadlines(market, job, workers):
    """A reveal at the window's last second is in time; after it, reveal and publish revert DeadlinePassed."""
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    tx = committed_both(market, job, 0, a, b, result)
    reveal_deadline = tx.events["RevealOpened"]["revealDeadline"]
    assert reveal_deadline == tx.timestamp + CLAIM_DURATION
    set_next_block_timestamp(reveal_deadline)
    assert "ResultRevealed" in reveal(market, job, 0, a, result).events
    set_next_block_timestamp(reveal_deadline + 1)
    with market_reverts("DeadlinePassed", job, 0, b.address, reveal_deadline):
        reveal(market, job, 0, b, result)
    # publishing reveals too: too late for b, and too late for a (already revealed)
    with market_reverts("DeadlinePassed", job, 0, b.address, reveal_deadline):
        market.publishResult(job, 0, result, {"from": b})
    with market_reverts("DeadlinePassed", job, 0, a.address, reveal_deadline):
        market.publishResult(job, 0, result, {"from": a})


def test_publish_at_window_end_is_in_time(market, job, workers):
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    reveal_deadline = committed_both(market, job, 0, a, b, result).events["RevealOpened"]["revealDeadline"]
    reveal(market, job, 0, a, result)
    set_next_block_timestamp(reveal_deadline)
    assert "UnitAccepted" in market.publishResult(job, 0, result, {"from": b}).events


def test_publish_needs_both_tags_revealed_and_equal(market, job, workers, outsider):
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    committed_both(market, job, 0, a, b, result)
    with market_reverts("NotClaimant", job, 0, outsider.address):
        market.publishResult(job, 0, result, {"from": outsider})
    with market_reverts("EmptyDigest"):
        market.publishResult(job, 0, ZERO_BYTES32, {"from": a})
    # before the other replica revealed: the digest is not published, and the caller's tag is not revealed either
    with market_reverts("ResultsNotAgreed", job, 0):
        market.publishResult(job, 0, result, {"from": a})
    info = unit_info(market, job, 0)
    assert info.revealed == [False, False] and info.seals == [sealed(market, job, 0, w, result) for w in (a, b)]
    reveal(market, job, 0, a, result)
    with market_reverts("ResultsNotAgreed", job, 0):
        market.publishResult(job, 0, result, {"from": a})
    # a digest that does not open the caller's commitment
    with market_reverts("WrongReveal", job, 0, b.address):
        market.publishResult(job, 0, BAD, {"from": b})
    reveal(market, job, 0, b, result)
    # both revealed: only the digest of the agreed tag is accepted
    for w in (a, b):
        with market_reverts("ResultsNotAgreed", job, 0):
            market.publishResult(job, 0, BAD, {"from": w})
    assert unit_info(market, job, 0).status == UnitStatus.Revealing
    assert "UnitAccepted" in market.publishResult(job, 0, result, {"from": b}).events


def test_copied_commitment_cannot_be_opened(market, job, workers, outsider, chain, everyone):
    """A lazy replica that submits the other's commitment as its own cannot open it: the commitment is bound to
    its worker. It cannot publish, is excluded when the window passes, and is paid nothing."""
    worker, lazy = workers[0], workers[1]
    result = honest(job, 0)
    t = tag(job, 0, 0, result)
    market.claimUnit(job, 0, {"from": worker})
    market.claimUnit(job, 0, {"from": lazy})
    copied = bytes(commit(market, job, 0, worker, result).events["ResultCommitted"]["commitment"])
    tx = market.commitResult(job, 0, copied, {"from": lazy})
    reveal_deadline = tx.events["RevealOpened"]["revealDeadline"]
    reveal(market, job, 0, worker, result)
    # it knows the tag now, and even the digest would not help: neither opens a commitment bound to another worker
    with market_reverts("WrongReveal", job, 0, lazy.address):
        market.revealResult(job, 0, t, {"from": lazy})
    with market_reverts("WrongReveal", job, 0, lazy.address):
        market.publishResult(job, 0, result, {"from": lazy})
    with market_reverts("ResultsNotAgreed", job, 0):
        market.publishResult(job, 0, result, {"from": worker})
    # the window passes: the lazy replica is excluded; the one that revealed may claim the unit again
    sleep_past(chain, reveal_deadline)
    tx = market.expireReveal(job, 0, {"from": outsider})
    event = tx.events["RevealExpired"]
    assert (event["resets"], event["replica0"], event["excluded0"], event["replica1"], event["excluded1"]) == (
        1,
        worker,
        False,
        lazy,
        True,
    )
    # it also forfeits slashAmount, credited to the replica that revealed
    forfeited = tx.events["StakeForfeited"]
    assert (forfeited["worker"], forfeited["amount"], forfeited["beneficiary"]) == (lazy, SLASH_AMOUNT, worker)
    assert market.balanceOf(lazy) == 0 and market.balanceOf(worker) == SLASH_AMOUNT
    info = worker_info(market, lazy)
    assert (info["stake"], info["openClaims"], info["completedUnits"], info["faults"]) == (
        MIN_STAKE - SLASH_AMOUNT,
        0,
        0,
        1,
    )
    market.addStake({"from": lazy, "value": SLASH_AMOUNT})
    assert market.isExcluded(job, 0, lazy) and not market.isExcluded(job, 0, worker)
    with market_reverts("AlreadyWorkedOn", job, 0, lazy.address):
        market.claimUnit(job, 0, {"from": lazy})
    assert market.claimUnit(job, 0, {"from": worker}).events["UnitClaimed"]["slot"] == 0
    assert job_info(market, job)["escrowRemaining"] == ESCROW
    assert_conserved(market, everyone)


def test_copied_tag_cannot_be_revealed(market, job, workers, everyone):
    """A lazy replica committed before it saw anything; the other's revealed tag does not open its commitment, and
    it cannot commit again. Its only way out is to reveal its own guess, which disputes the unit and gets it
    slashed."""
    lazy, worker, arbiter = workers[0], workers[1], workers[2]
    result = honest(job, 0)
    market.claimUnit(job, 0, {"from": lazy})
    market.claimUnit(job, 0, {"from": worker})
    commit(market, job, 0, lazy, BAD)  # a guess
    commit(market, job, 0, worker, result)
    revealed = bytes(reveal(market, job, 0, worker, result).events["ResultRevealed"]["tag"])
    with market_reverts("WrongReveal", job, 0, lazy.address):
        market.revealResult(job, 0, revealed, {"from": lazy})
    with market_reverts("AlreadySubmitted", job, 0, lazy.address):
        market.commitResult(job, 0, commitment(lazy, revealed), {"from": lazy})
    tx = reveal(market, job, 0, lazy, BAD)
    assert list(tx.events.keys()) == ["ResultRevealed", "UnitDisputed", "ArbiterDrawScheduled"]
    _, tx, _ = arbitrate(market, job, 0, result, arbiter)
    assert tx.events["WorkerSlashed"]["worker"] == lazy
    assert market.balanceOf(lazy) == 0
    assert market.balanceOf(worker) == PRICE + SLASH_AMOUNT // 2 + 1
    assert_conserved(market, everyone)


# ---------------------------------------------------------------- disputes and arbitration


def test_different_tags_dispute(market, job, workers, outsider):
    a, b = workers[0], workers[1]
    txs = run_disputed(market, job, 0, a, b, BAD, honest(job, 0))
    assert list(txs[-2].events.keys()) == ["ResultRevealed"]
    tx = txs[-1]
    assert list(tx.events.keys()) == ["ResultRevealed", "UnitDisputed", "ArbiterDrawScheduled"]
    t0, t1 = tag(job, 0, 0, BAD), tag(job, 0, 0, honest(job, 0))
    assert (bytes(tx.events["UnitDisputed"]["tag0"]), bytes(tx.events["UnitDisputed"]["tag1"])) == (t0, t1)
    assert tx.events["UnitDisputed"]["disputeDeadline"] == tx.timestamp + 4 * CLAIM_DURATION
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Disputed
    assert (info.draw_block, info.draw_pool_size, info.dispute_deadline) == (
        tx.block_number,
        6,
        tx.timestamp + 4 * CLAIM_DURATION,
    )
    assert info.seals == [t0, t1] and info.revealed == [True, True]
    assert info.workers == [a, b, ZERO_ADDRESS] and info.accepted == ZERO_BYTES32
    # neither digest can be published, and nothing is left to reveal
    for w, result in ((a, BAD), (b, honest(job, 0))):
        with market_reverts("ResultsNotAgreed", job, 0):
            market.publishResult(job, 0, result, {"from": w})
        with market_reverts("AlreadyRevealed", job, 0, w.address):
            reveal(market, job, 0, w, result)
    # the window closing does not matter any more: the dispute waits for its drawn arbiter
    with market_reverts("NotRevealing", job, 0, UnitStatus.Disputed):
        market.expireReveal(job, 0, {"from": outsider})
    assert market.balanceOf(a) == market.balanceOf(b) == 0


def test_mismatch_arbitration_slashes_and_redistributes(market, disputed, workers, everyone):
    job = disputed
    liar, right = workers[0], workers[1]
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Disputed
    assert info.seals == [tag(job, 0, 0, BAD), tag(job, 0, 0, honest(job, 0))]
    assert market.balanceOf(liar) == market.balanceOf(right) == 0
    # nobody claims the arbiter slot, the replicas included: it is drawn
    for w in workers[2:]:
        with market_reverts("UnitNotClaimable", job, 0, UnitStatus.Disputed):
            market.claimUnit(job, 0, {"from": w})
    tx, arbiter = draw(market, job, 0, liar)
    assert tx.return_value == arbiter
    assert unit_info(market, job, 0).workers == [liar, right, arbiter]
    assert worker_info(market, arbiter)["openClaims"] == 1
    assert job_info(market, job)["lastClaimDeadline"] == tx.events["ArbiterDrawn"]["deadline"]
    staked = market.totalStaked()
    tx = market.submitArbitration(job, 0, honest(job, 0), {"from": arbiter})
    assert list(tx.events.keys()) == ["ArbitrationSubmitted", "UnitAccepted", "WorkerSlashed"]
    submitted = tx.events["ArbitrationSubmitted"]
    assert (submitted["arbiter"], bytes(submitted["resultDigest"])) == (arbiter, honest(job, 0))
    accepted = tx.events["UnitAccepted"]
    assert (accepted["paidA"], accepted["paidB"], bytes(accepted["resultDigest"])) == (right, arbiter, honest(job, 0))
    slashed = tx.events["WorkerSlashed"]
    assert (slashed["worker"], slashed["amount"], slashed["faults"]) == (liar, SLASH_AMOUNT, 1)
    # SLASH_AMOUNT is odd: the odd wei goes to the agreeing replica
    assert SLASH_AMOUNT % 2 == 1
    assert market.balanceOf(right) == PRICE + SLASH_AMOUNT // 2 + 1
    assert market.balanceOf(arbiter) == PRICE + SLASH_AMOUNT // 2
    assert market.balanceOf(liar) == 0
    assert worker_info(market, liar) == {
        "stake": MIN_STAKE - SLASH_AMOUNT,
        "openClaims": 0,
        "completedUnits": 0,
        "faults": 1,
        "registered": True,
        "activeSince": 0,  # below minStake
    }
    for w in (right, arbiter):
        assert worker_info(market, w)["completedUnits"] == 1 and worker_info(market, w)["openClaims"] == 0
    assert market.totalStaked() == staked - SLASH_AMOUNT
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Accepted and info.accepted == honest(job, 0)
    assert info.seals == [tag(job, 0, 0, BAD), tag(job, 0, 0, honest(job, 0))]
    assert job_info(market, job)["escrowRemaining"] == ESCROW - 2 * PRICE
    # settled: no second arbitration, no publication, no draw
    with market_reverts("UnitNotDisputed", job, 0, UnitStatus.Accepted):
        market.submitArbitration(job, 0, honest(job, 0), {"from": arbiter})
    with market_reverts("AlreadyAccepted", job, 0):
        market.publishResult(job, 0, honest(job, 0), {"from": right})
    with market_reverts("UnitNotDisputed", job, 0, UnitStatus.Accepted):
        market.drawArbiter(job, 0, {"from": right})
    # slashed below minStake: the liar cannot claim until it tops up
    with market_reverts("StakeTooLow", liar.address, MIN_STAKE - SLASH_AMOUNT, MIN_STAKE):
        market.claimUnit(job, 1, {"from": liar})
    assert_conserved(market, everyone)


def test_arbiter_agreeing_with_first_replica(market, job, workers):
    run_disputed(market, job, 0, workers[0], workers[1], honest(job, 0), BAD)
    _, tx, arbiter = arbitrate(market, job, 0, honest(job, 0), workers[0])
    assert (tx.events["UnitAccepted"]["paidA"], tx.events["UnitAccepted"]["paidB"]) == (workers[0], arbiter)
    assert tx.events["WorkerSlashed"]["worker"] == workers[1]


def test_arbitration_errors(market, disputed, workers, outsider):
    job = disputed
    replicas = workers[:2]
    # only the drawn arbiter, and nobody is drawn yet
    for w in (*workers, outsider):
        with market_reverts("NotClaimant", job, 0, w.address):
            market.submitArbitration(job, 0, honest(job, 0), {"from": w})
    _, arbiter = draw(market, job, 0, outsider)
    for w in (*replicas, *[x for x in workers[2:] if x != arbiter]):
        with market_reverts("NotClaimant", job, 0, w.address):
            market.submitArbitration(job, 0, honest(job, 0), {"from": w})
    with market_reverts("EmptyDigest"):
        market.submitArbitration(job, 0, ZERO_BYTES32, {"from": arbiter})
    # the arbiter is not a replica: it has nothing to commit, reveal or publish
    with market_reverts("NotClaimant", job, 0, arbiter.address):
        commit(market, job, 0, arbiter, honest(job, 0))
    with market_reverts("NotClaimant", job, 0, arbiter.address):
        reveal(market, job, 0, arbiter, honest(job, 0))
    with market_reverts("NotClaimant", job, 0, arbiter.address):
        market.publishResult(job, 0, honest(job, 0), {"from": arbiter})
    # its claim is on unit 0 only
    with market_reverts("NotClaimant", job, 1, arbiter.address):
        market.submitArbitration(job, 1, honest(job, 1), {"from": arbiter})


def test_arbiter_submitting_a_tag_resets(market, disputed, workers, everyone):
    """The arbiter sees only the tags; submitting one of them as its digest matches neither replica: the unit is
    Reset and nobody is paid or slashed."""
    job = disputed
    first, second = workers[0], workers[1]
    copied = unit_info(market, job, 0).seals[1]  # the honest replica's revealed tag
    assert copied == tag(job, 0, 0, honest(job, 0))
    owed, staked = market.totalOwed(), market.totalStaked()
    _, tx, arbiter = arbitrate(market, job, 0, copied, first)
    assert list(tx.events.keys()) == ["ArbitrationSubmitted", "UnitReset"]
    assert market.totalOwed() == owed and market.totalStaked() == staked
    for w in (first, second, arbiter):
        assert worker_info(market, w)["faults"] == 0 and market.isExcluded(job, 0, w)
    assert unit_info(market, job, 0).status == UnitStatus.Open
    assert_conserved(market, everyone)


def test_m3_every_open_claim_is_backed_by_a_full_slash(requester, coordinator, accounts, everyone):
    """Issue 13, M3. The attack: a worker with the minimum stake claims (and cheats on) three units at once, and
    only the first slash takes anything. Now a second claim needs 2 * minStake; a worker staked for three claims
    loses a full slashAmount on each of its three wrong results."""
    market = deploy_market(requester)
    cheater, w1, w2, w3, w4 = accounts[2:7]
    register_workers(market, [w1, w2, w3, w4], stake=3 * MIN_STAKE)
    register_workers(market, [cheater])
    job, _ = post_job(market, requester, coordinator, numStages=1, unitsPerStage=3)
    market.claimUnit(job, 0, {"from": cheater})
    for u in (1, 2):
        with market_reverts("InsufficientStake", cheater.address, MIN_STAKE, 2 * MIN_STAKE):
            market.claimUnit(job, u, {"from": cheater})
    # staked for three open claims: each of its three wrong results is slashed in full
    market.addStake({"from": cheater, "value": 2 * MIN_STAKE})
    for u in (1, 2):
        market.claimUnit(job, u, {"from": cheater})
    with market_reverts("InsufficientStake", cheater.address, 3 * MIN_STAKE, 4 * MIN_STAKE):
        market.claimUnit(job, 0, {"from": cheater})  # the stake is checked first
    slashed = 0
    for u in range(3):
        market.claimUnit(job, u, {"from": w1})
        commit(market, job, u, cheater, BAD)
        commit(market, job, u, w1, honest(job, u))
        reveal(market, job, u, w1, honest(job, u))
        reveal(market, job, u, cheater, BAD)
        _, tx, _ = arbitrate(market, job, u, honest(job, u), w1)
        slashed += tx.events["WorkerSlashed"]["amount"]
    assert slashed == 3 * SLASH_AMOUNT
    assert worker_info(market, cheater)["stake"] == 3 * MIN_STAKE - 3 * SLASH_AMOUNT
    assert_conserved(market, everyone)


def test_third_result_matching_neither_resets(market, disputed, workers, everyone):
    job = disputed
    first, second = workers[0], workers[1]
    _, arbiter = draw(market, job, 0, first)
    fresh = [w for w in workers[2:] if w != arbiter]
    owed, staked = market.totalOwed(), market.totalStaked()
    tx = market.submitArbitration(job, 0, WORSE, {"from": arbiter})
    assert list(tx.events.keys()) == ["ArbitrationSubmitted", "UnitReset"]
    reset = tx.events["UnitReset"]
    assert (reset["resets"], reset["replica0"], reset["replica1"], reset["arbiter"]) == (1, first, second, arbiter)
    # nobody paid, nobody slashed
    assert market.totalOwed() == owed and market.totalStaked() == staked
    assert job_info(market, job)["escrowRemaining"] == ESCROW
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Open and info.resets == 1
    assert info.workers == [ZERO_ADDRESS] * 3 and info.seals == [ZERO_BYTES32] * 2
    assert info.revealed == [False, False] and info.reveal_deadline == 0 and info.deadlines == [0, 0, 0]
    assert (info.draw_block, info.draw_pool_size, info.dispute_deadline) == (0, 0, 0)
    for w in (first, second, arbiter):
        assert worker_info(market, w)["openClaims"] == 0
        assert worker_info(market, w)["faults"] == 0
        assert market.isExcluded(job, 0, w)
        with market_reverts("AlreadyWorkedOn", job, 0, w.address):
            market.claimUnit(job, 0, {"from": w})
    assert not market.isExcluded(job, 0, fresh[0])
    # fresh replication by other workers, sealed for the new attempt
    assert tag(job, 0, 1, honest(job, 0)) != tag(job, 0, 0, honest(job, 0))
    txs = run_unit(market, job, 0, fresh[0], fresh[1], honest(job, 0))
    assert bytes(txs[-2].events["ResultRevealed"]["tag"]) == tag(job, 0, 1, honest(job, 0))
    assert "UnitAccepted" in txs[-1].events
    assert market.balanceOf(fresh[0]) == market.balanceOf(fresh[1]) == PRICE
    # the excluded workers are still free to work on other units
    market.claimUnit(job, 1, {"from": first})
    assert_conserved(market, everyone)


def test_second_reset_then_arbitration(market, disputed, workers, accounts):
    """After a reset the unit may be disputed and arbitrated again; exclusions accumulate, and an excluded worker
    is never drawn."""
    job = disputed
    _, _, first_arbiter = arbitrate(market, job, 0, WORSE, workers[0])
    fresh = [w for w in workers[2:] if w != first_arbiter]
    run_disputed(market, job, 0, fresh[0], fresh[1], honest(job, 0), BAD)
    _, tx, second_arbiter = arbitrate(market, job, 0, digest("third"), workers[0])
    assert second_arbiter == fresh[2]  # the only worker neither excluded nor a replica
    assert tx.events["UnitReset"]["resets"] == 2
    assert all(market.isExcluded(job, 0, w) for w in workers)
    newcomer = accounts[8]
    register_workers(market, [newcomer])
    market.claimUnit(job, 0, {"from": newcomer})


# ---------------------------------------------------------------- reveal expiry


def test_expire_reveal_errors(market, job, workers, outsider):
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    with market_reverts("NotRevealing", job, 0, UnitStatus.Open):
        market.expireReveal(job, 0, {"from": outsider})
    market.claimUnit(job, 0, {"from": a})
    market.claimUnit(job, 0, {"from": b})
    commit(market, job, 0, a, result)
    with market_reverts("NotRevealing", job, 0, UnitStatus.Open):
        market.expireReveal(job, 0, {"from": outsider})
    reveal_deadline = commit(market, job, 0, b, result).events["RevealOpened"]["revealDeadline"]
    with market_reverts("RevealNotExpired", job, 0, reveal_deadline):
        market.expireReveal(job, 0, {"from": outsider})
    set_next_block_timestamp(reveal_deadline)
    with market_reverts("RevealNotExpired", job, 0, reveal_deadline):
        market.expireReveal(job, 0, {"from": outsider})
    set_next_block_timestamp(reveal_deadline + 1)
    assert "RevealExpired" in market.expireReveal(job, 0, {"from": outsider}).events
    with market_reverts("NotRevealing", job, 0, UnitStatus.Open):
        market.expireReveal(job, 0, {"from": outsider})


def test_expire_reveal_excludes_the_replica_that_kept_its_tag(market, job, workers, outsider, chain, everyone):
    """The replica that revealed may claim again; the one that did not is excluded. The new attempt changes every
    tag: the first attempt's tag opens no commitment of the second."""
    revealer, silent, other = workers[0], workers[1], workers[2]
    result = honest(job, 0)
    old = tag(job, 0, 0, result)
    reveal_deadline = committed_both(market, job, 0, revealer, silent, result).events["RevealOpened"]["revealDeadline"]
    reveal(market, job, 0, revealer, result)
    sleep_past(chain, reveal_deadline)
    owed, staked = market.totalOwed(), market.totalStaked()
    tx = market.expireReveal(job, 0, {"from": outsider})
    assert list(tx.events.keys()) == ["RevealExpired", "StakeForfeited"]
    event = tx.events["RevealExpired"]
    assert (event["jobId"], event["unitIndex"], event["resets"]) == (job, 0, 1)
    assert (event["replica0"], event["excluded0"], event["replica1"], event["excluded1"]) == (
        revealer,
        False,
        silent,
        True,
    )
    # the silent replica forfeits slashAmount to the revealer
    forfeited = tx.events["StakeForfeited"]
    assert (forfeited["worker"], forfeited["amount"], forfeited["beneficiary"], forfeited["faults"]) == (
        silent,
        SLASH_AMOUNT,
        revealer,
        1,
    )
    assert market.totalOwed() == owed + SLASH_AMOUNT and market.totalStaked() == staked - SLASH_AMOUNT
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Open and info.resets == 1
    assert info.workers == [ZERO_ADDRESS] * 3 and info.deadlines == [0, 0, 0]
    assert info.seals == [ZERO_BYTES32] * 2 and info.revealed == [False, False] and info.reveal_deadline == 0
    for w in (revealer, silent):
        assert worker_info(market, w)["openClaims"] == 0
    assert worker_info(market, revealer)["faults"] == 0 and worker_info(market, silent)["faults"] == 1
    assert market.isExcluded(job, 0, silent) and not market.isExcluded(job, 0, revealer)
    market.addStake({"from": silent, "value": SLASH_AMOUNT})
    with market_reverts("AlreadyWorkedOn", job, 0, silent.address):
        market.claimUnit(job, 0, {"from": silent})
    # the revealer claims again, with another worker; its old tag does not open its new commitment
    assert market.claimUnit(job, 0, {"from": revealer}).events["UnitClaimed"]["slot"] == 0
    market.claimUnit(job, 0, {"from": other})
    commit(market, job, 0, revealer, result)
    commit(market, job, 0, other, result)
    assert (
        unit_info(market, job, 0).seals[0] == commitment(revealer, tag(job, 0, 1, result)) != commitment(revealer, old)
    )
    with market_reverts("WrongReveal", job, 0, revealer.address):
        market.revealResult(job, 0, old, {"from": revealer})
    reveal(market, job, 0, revealer, result)
    tx = market.publishResult(job, 0, result, {"from": other})
    assert bytes(tx.events["UnitAccepted"]["resultDigest"]) == result
    assert market.balanceOf(revealer) == PRICE + SLASH_AMOUNT and market.balanceOf(other) == PRICE
    assert market.balanceOf(silent) == 0
    assert_conserved(market, everyone)


def test_old_tag_is_worthless_in_a_new_attempt(market, job, workers, outsider, chain, everyone):
    """A newcomer that seals the tag revealed in attempt 0 can open it in attempt 1, but it is not the tag of the
    result in attempt 1: it disputes the unit and is slashed."""
    revealer, silent, lazy = workers[0], workers[1], workers[2]
    result = honest(job, 0)
    reveal_deadline = committed_both(market, job, 0, revealer, silent, result).events["RevealOpened"]["revealDeadline"]
    old = bytes(reveal(market, job, 0, revealer, result).events["ResultRevealed"]["tag"])
    sleep_past(chain, reveal_deadline)
    market.expireReveal(job, 0, {"from": outsider})
    market.claimUnit(job, 0, {"from": revealer})
    market.claimUnit(job, 0, {"from": lazy})
    commit(market, job, 0, revealer, result)
    market.commitResult(job, 0, commitment(lazy, old), {"from": lazy})
    reveal(market, job, 0, revealer, result)
    # the lazy replica cannot publish the digest against its sealed old tag (it does not know the digest anyway)
    with market_reverts("WrongReveal", job, 0, lazy.address):
        market.publishResult(job, 0, result, {"from": lazy})
    tx = market.revealResult(job, 0, old, {"from": lazy})
    assert list(tx.events.keys()) == ["ResultRevealed", "UnitDisputed", "ArbiterDrawScheduled"]
    _, tx, arbiter = arbitrate(market, job, 0, result, outsider)
    assert arbiter != silent  # excluded
    assert tx.events["WorkerSlashed"]["worker"] == lazy
    assert (tx.events["UnitAccepted"]["paidA"], tx.events["UnitAccepted"]["paidB"]) == (revealer, arbiter)
    assert_conserved(market, everyone)


def test_expire_reveal_without_any_reveal_excludes_both(market, job, workers, outsider, chain):
    a, b = workers[0], workers[1]
    tx = committed_both(market, job, 0, a, b, honest(job, 0))
    sleep_past(chain, tx.events["RevealOpened"]["revealDeadline"])
    escrow = job_info(market, job)["escrowRemaining"]
    tx = market.expireReveal(job, 0, {"from": outsider})
    event = tx.events["RevealExpired"]
    assert (event["excluded0"], event["excluded1"]) == (True, True)
    assert market.isExcluded(job, 0, a) and market.isExcluded(job, 0, b)
    # both forfeit slashAmount, to the job (neither revealed)
    assert [(e["worker"], e["amount"], e["beneficiary"]) for e in tx.events["StakeForfeited"]] == [
        (a, SLASH_AMOUNT, ZERO_ADDRESS),
        (b, SLASH_AMOUNT, ZERO_ADDRESS),
    ]
    assert job_info(market, job)["escrowRemaining"] == escrow + 2 * SLASH_AMOUNT
    run_unit(market, job, 0, workers[2], workers[3], honest(job, 0))


def test_expire_reveal_excludes_both_when_nobody_publishes(market, job, workers, outsider, chain, everyone):
    """Both revealed equal tags, so both know the digest, and neither published it: both are excluded."""
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    reveal_deadline = committed_both(market, job, 0, a, b, result).events["RevealOpened"]["revealDeadline"]
    reveal(market, job, 0, a, result)
    reveal(market, job, 0, b, result)
    assert unit_info(market, job, 0).status == UnitStatus.Revealing
    sleep_past(chain, reveal_deadline)
    with market_reverts("DeadlinePassed", job, 0, a.address, reveal_deadline):
        market.publishResult(job, 0, result, {"from": a})
    tx = market.expireReveal(job, 0, {"from": outsider})
    event = tx.events["RevealExpired"]
    assert (event["replica0"], event["excluded0"], event["replica1"], event["excluded1"]) == (a, True, b, True)
    for w in (a, b):
        assert market.isExcluded(job, 0, w) and market.balanceOf(w) == 0
        assert worker_info(market, w)["openClaims"] == 0
        with market_reverts("StakeTooLow", w.address, MIN_STAKE - SLASH_AMOUNT, MIN_STAKE):
            market.claimUnit(job, 0, {"from": w})
        market.addStake({"from": w, "value": SLASH_AMOUNT})
        with market_reverts("AlreadyWorkedOn", job, 0, w.address):
            market.claimUnit(job, 0, {"from": w})
    # both knew the digest and kept it back: both forfeit slashAmount to the job
    assert job_info(market, job)["escrowRemaining"] == ESCROW + 2 * SLASH_AMOUNT
    assert_conserved(market, everyone)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_only_coordinator_and_only_complete_stage(market, job, workers, coordinator, requester):
    ckpt = digest("ckpt-1")
    with market_reverts("NotCoordinator", job, requester.address):
        market.commitCheckpoint(job, 0, ckpt, {"from": requester})
    with market_reverts("StageIncomplete", job, 0, 0, UNITS_PER_STAGE):
        market.commitCheckpoint(job, 0, ckpt, {"from": coordinator})
    run_unit(market, job, 0, workers[0], workers[1], honest(job, 0))
    with market_reverts("StageIncomplete", job, 0, 1, UNITS_PER_STAGE):
        market.commitCheckpoint(job, 0, ckpt, {"from": coordinator})
    # a disputed unit does not count
    run_disputed(market, job, 1, workers[0], workers[1], honest(job, 1), BAD)
    with market_reverts("StageIncomplete", job, 0, 1, UNITS_PER_STAGE):
        market.commitCheckpoint(job, 0, ckpt, {"from": coordinator})
    arbitrate(market, job, 1, honest(job, 1), workers[0])
    with market_reverts("WrongStage", job, 0, 1):
        market.commitCheckpoint(job, 1, ckpt, {"from": coordinator})
    with market_reverts("EmptyDigest"):
        market.commitCheckpoint(job, 0, ZERO_BYTES32, {"from": coordinator})
    tx = market.commitCheckpoint(job, 0, ckpt, {"from": coordinator})
    assert list(tx.events.keys()) == ["CheckpointCommitted"]
    assert (tx.events["CheckpointCommitted"]["stage"], bytes(tx.events["CheckpointCommitted"]["checkpointDigest"])) == (
        0,
        ckpt,
    )
    info = job_info(market, job)
    assert (info["currentStage"], info["acceptedInStage"], info["latestCheckpointDigest"]) == (1, 0, ckpt)
    assert bytes(market.checkpointDigest(job, 0)) == ckpt
    # stage 1 is claimable now
    assert "UnitClaimed" in market.claimUnit(job, UNITS_PER_STAGE, {"from": workers[3]}).events


def test_last_checkpoint_finishes_the_job(market, job, workers, coordinator):
    for stage in range(NUM_STAGES):
        run_stage(market, job, stage, UNITS_PER_STAGE, workers[0], workers[1])
        tx = market.commitCheckpoint(job, stage, digest(f"ckpt-{stage}"), {"from": coordinator})
    assert list(tx.events.keys()) == ["CheckpointCommitted", "JobFinished"]
    final = digest(f"ckpt-{NUM_STAGES - 1}")
    assert bytes(tx.events["JobFinished"]["finalModelDigest"]) == final
    info = job_info(market, job)
    assert info["status"] == JobStatus.Finished and info["finalModelDigest"] == final
    assert info["currentStage"] == NUM_STAGES - 1
    with market_reverts("JobNotOpen", job, JobStatus.Finished):
        market.commitCheckpoint(job, NUM_STAGES - 1, final, {"from": coordinator})
    with market_reverts("JobNotOpen", job, JobStatus.Finished):
        market.claimUnit(job, 0, {"from": workers[2]})
    assert [bytes(market.acceptedDigest(job, u)) for u in range(NUM_STAGES * UNITS_PER_STAGE)] == [
        honest(job, u) for u in range(NUM_STAGES * UNITS_PER_STAGE)
    ]


# ---------------------------------------------------------------- payouts and refunds


def test_withdraw_pays_exactly(market, job, workers, outsider, everyone):
    a, b = workers[0], workers[1]
    run_unit(market, job, 0, a, b, honest(job, 0))
    run_unit(market, job, 1, a, b, honest(job, 1))
    assert market.balanceOf(a) == 2 * PRICE
    before, held = a.balance(), market.balance()
    tx = market.withdraw({"from": a})
    assert tx.events["Withdrawn"]["account"] == a and tx.events["Withdrawn"]["amount"] == 2 * PRICE
    assert a.balance() == before + 2 * PRICE - gas_cost(tx)
    assert market.balance() == held - 2 * PRICE
    assert market.balanceOf(a) == 0 and market.balanceOf(b) == 2 * PRICE
    with market_reverts("NothingToWithdraw", a.address):
        market.withdraw({"from": a})
    with market_reverts("NothingToWithdraw", outsider.address):
        market.withdraw({"from": outsider})
    assert_conserved(market, everyone)


def test_refund_after_finish(market, job, workers, coordinator, requester, outsider, everyone):
    with market_reverts("RefundNotYet", job, JobStatus.Open, 0):
        market.refund(job, {"from": requester})
    for stage in range(NUM_STAGES):
        run_stage(market, job, stage, UNITS_PER_STAGE, workers[0], workers[1])
        market.commitCheckpoint(job, stage, digest(f"ckpt-{stage}"), {"from": coordinator})
    with market_reverts("NotRequester", job, outsider.address):
        market.refund(job, {"from": outsider})
    spent = NUM_STAGES * UNITS_PER_STAGE * 2 * PRICE
    tx = market.refund(job, {"from": requester})
    assert tx.events["Refunded"]["amount"] == ESCROW - spent == ESCROW // 3
    assert market.balanceOf(requester) == ESCROW - spent
    assert job_info(market, job)["escrowRemaining"] == 0 and market.totalEscrow() == 0
    with market_reverts("NothingToRefund", job):
        market.refund(job, {"from": requester})
    before = requester.balance()
    tx = market.withdraw({"from": requester})
    assert requester.balance() == before + ESCROW - spent - gas_cost(tx)
    for w in workers[:2]:
        market.withdraw({"from": w})
    # only the stakes are left
    assert market.balance() == market.totalStaked() == 6 * MIN_STAKE
    assert_conserved(market, everyone)


def test_cancel_rules(market, job, requester, outsider, workers):
    with market_reverts("NotRequester", job, outsider.address):
        market.cancelJob(job, {"from": outsider})
    tx = market.cancelJob(job, {"from": requester})
    assert (tx.events["JobCancelled"]["stage"], tx.events["JobCancelled"]["lastClaimDeadline"]) == (0, 0)
    assert job_info(market, job)["status"] == JobStatus.Cancelled
    with market_reverts("JobNotOpen", job, JobStatus.Cancelled):
        market.cancelJob(job, {"from": requester})
    with market_reverts("JobNotOpen", job, JobStatus.Cancelled):
        market.claimUnit(job, 0, {"from": workers[0]})


def test_cancelled_job_takes_no_arbiter(market, disputed, requester, workers):
    market.cancelJob(disputed, {"from": requester})
    with market_reverts("JobNotOpen", disputed, JobStatus.Cancelled):
        market.claimUnit(disputed, 0, {"from": workers[2]})


def test_refund_after_cancel_without_claims(market, job, requester, everyone):
    market.cancelJob(job, {"from": requester})
    tx = market.refund(job, {"from": requester})
    assert tx.events["Refunded"]["amount"] == ESCROW
    assert market.balanceOf(requester) == ESCROW
    assert_conserved(market, everyone)


def test_refund_after_cancel_waits_for_open_claims(market, job, requester, workers, outsider, chain, everyone):
    w = workers
    # unit 0: accepted before the cancellation
    run_unit(market, job, 0, w[0], w[1], honest(job, 0))
    # unit 1: one replica committed, the other still computing when the job is cancelled
    market.claimUnit(job, 1, {"from": w[2]})
    commit(market, job, 1, w[2], honest(job, 1))
    claim = market.claimUnit(job, 1, {"from": w[3]})
    last = claim.timestamp + CLAIM_DURATION
    tx = market.cancelJob(job, {"from": requester})
    assert tx.events["JobCancelled"]["lastClaimDeadline"] == last
    with market_reverts("JobNotOpen", job, JobStatus.Cancelled):
        market.claimUnit(job, 0, {"from": w[4]})
    with market_reverts("RefundNotYet", job, JobStatus.Cancelled, last):
        market.refund(job, {"from": requester})
    # the claim made before the cancellation is still honoured: it commits at its deadline, which opens a reveal
    # window beyond it; the refund waits for that window, and an agreeing result published in it is paid
    set_next_block_timestamp(last)
    tx = commit(market, job, 1, w[3], honest(job, 1))
    last = tx.events["RevealOpened"]["revealDeadline"]
    assert last == claim.timestamp + 2 * CLAIM_DURATION == job_info(market, job)["lastClaimDeadline"]
    set_next_block_timestamp(claim.timestamp + CLAIM_DURATION + 1)
    with market_reverts("RefundNotYet", job, JobStatus.Cancelled, last):
        market.refund(job, {"from": requester})
    reveal(market, job, 1, w[2], honest(job, 1))
    set_next_block_timestamp(last - 1)
    assert "UnitAccepted" in market.publishResult(job, 1, honest(job, 1), {"from": w[3]}).events
    set_next_block_timestamp(last)
    with market_reverts("RefundNotYet", job, JobStatus.Cancelled, last):
        market.refund(job, {"from": requester})
    set_next_block_timestamp(last + 1)
    tx = market.refund(job, {"from": requester})
    assert tx.events["Refunded"]["amount"] == ESCROW - 2 * 2 * PRICE
    assert market.balanceOf(w[2]) == market.balanceOf(w[3]) == PRICE
    assert_conserved(market, everyone)


def test_cancelled_job_refund_waits_for_the_reveal_window(market, job, requester, workers, outsider, everyone):
    """Both committed before the cancellation: the reveal window is the job's last deadline; a result published
    within it is paid, then the refund takes the rest."""
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    market.claimUnit(job, 0, {"from": a})
    claim = market.claimUnit(job, 0, {"from": b})
    commit(market, job, 0, a, result)
    set_next_block_timestamp(claim.timestamp + 300)
    reveal_deadline = commit(market, job, 0, b, result).events["RevealOpened"]["revealDeadline"]
    assert reveal_deadline == claim.timestamp + 300 + CLAIM_DURATION
    market.cancelJob(job, {"from": requester})
    assert job_info(market, job)["lastClaimDeadline"] == reveal_deadline
    # every claim deadline has passed, the reveal window has not
    set_next_block_timestamp(claim.timestamp + CLAIM_DURATION + 1)
    with market_reverts("RefundNotYet", job, JobStatus.Cancelled, reveal_deadline):
        market.refund(job, {"from": requester})
    reveal(market, job, 0, a, result)
    set_next_block_timestamp(reveal_deadline)
    assert "UnitAccepted" in market.publishResult(job, 0, result, {"from": b}).events
    set_next_block_timestamp(reveal_deadline + 1)
    assert market.refund(job, {"from": requester}).events["Refunded"]["amount"] == ESCROW - 2 * PRICE
    assert market.balanceOf(a) == market.balanceOf(b) == PRICE
    assert_conserved(market, everyone)


def test_cancelled_job_releases_unverified_claims(market, job, requester, workers, outsider, chain, everyone):
    """A committed result that can no longer be verified locks its worker's stake until the job is over."""
    w = workers
    run_disputed(market, job, 0, w[0], w[1], BAD, honest(job, 0))  # disputed, arbitration never comes
    market.claimUnit(job, 1, {"from": w[2]})
    commit(market, job, 1, w[2], honest(job, 1))  # waits for a second replica
    market.cancelJob(job, {"from": requester})
    last = job_info(market, job)["lastClaimDeadline"]
    assert last == max(unit_info(market, job, 0).reveal_deadline, unit_info(market, job, 1).deadlines[0])
    with market_reverts("ClaimNotReleasable", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
    with market_reverts("HasOpenClaims", w[2].address, 1):
        market.withdrawStake(MIN_STAKE, {"from": w[2]})
    set_next_block_timestamp(last)
    with market_reverts("ClaimNotReleasable", job, 1, 0):
        market.expireClaim(job, 1, 0, {"from": outsider})
    set_next_block_timestamp(last + 1)
    market.refund(job, {"from": requester})
    released = []
    for unit_index, slot in ((0, 0), (0, 1), (1, 0)):
        tx = market.expireClaim(job, unit_index, slot, {"from": outsider})
        released.append(tx.events["ClaimReleased"]["worker"])
        if (unit_index, slot) == (0, 0):
            # one replica released: the dispute is gone, the other's tag stays until it is released too
            info = unit_info(market, job, 0)
            assert info.status == UnitStatus.Open and info.reveal_deadline == 0
            assert info.seals == [ZERO_BYTES32, tag(job, 0, 0, honest(job, 0))] and info.revealed == [False, True]
    assert released == [w[0], w[1], w[2]]
    for unit_index in (0, 1):
        info = unit_info(market, job, unit_index)
        assert info.workers == [ZERO_ADDRESS] * 3 and info.seals == [ZERO_BYTES32] * 2
        assert info.revealed == [False, False]
    for account in w[:3]:
        assert worker_info(market, account)["openClaims"] == 0
        market.withdrawStake(MIN_STAKE, {"from": account})
        assert worker_info(market, account)["faults"] == 0
    with market_reverts("NoClaim", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
    # nothing was paid: the refund took the whole escrow
    assert market.balanceOf(requester) == ESCROW
    assert_conserved(market, everyone)


def test_cancelled_job_revealing_unit_expires_or_is_released(market, job, requester, workers, outsider, chain):
    """In a cancelled job a unit left Revealing can be reset by expireReveal (as in an open job) or, once the job's
    last deadline passed, its claims released one by one."""
    w = workers
    committed_both(market, job, 0, w[0], w[1], honest(job, 0))
    committed_both(market, job, 1, w[2], w[3], honest(job, 1))
    reveal(market, job, 1, w[2], honest(job, 1))
    market.cancelJob(job, {"from": requester})
    sleep_past(chain, job_info(market, job)["lastClaimDeadline"])
    tx = market.expireReveal(job, 0, {"from": outsider})
    assert (tx.events["RevealExpired"]["excluded0"], tx.events["RevealExpired"]["excluded1"]) == (True, True)
    tx = market.expireClaim(job, 1, 1, {"from": outsider})
    assert tx.events["ClaimReleased"]["worker"] == w[3]
    with market_reverts("NotRevealing", job, 1, UnitStatus.Open):
        market.expireReveal(job, 1, {"from": outsider})
    market.expireClaim(job, 1, 0, {"from": outsider})
    for account in w[:4]:
        assert worker_info(market, account)["openClaims"] == 0
    # the two replicas of unit 0 withheld their reveals: their forfeits went to the job, refunded with it
    assert market.refund(job, {"from": requester}).events["Refunded"]["amount"] == ESCROW + 2 * SLASH_AMOUNT


def test_accepted_claims_are_not_releasable(market, job, requester, workers, outsider, chain):
    run_unit(market, job, 0, workers[0], workers[1], honest(job, 0))
    market.cancelJob(job, {"from": requester})
    chain.sleep(2 * CLAIM_DURATION + 1)
    chain.mine()
    for slot in (0, 1):
        with market_reverts("ClaimNotReleasable", job, 0, slot):
            market.expireClaim(job, 0, slot, {"from": outsider})


# ---------------------------------------------------------------- issue 13: M1, M2, L2


def test_m1_alternating_expired_claims_cost_stake_and_the_honest_worker_gets_out(
    market, job, workers, outsider, chain, everyone
):
    """Issue 13, M1. The attack: two accounts take turns on the free replica slot and let each claim expire, so the
    unit never resolves and the honest worker that committed cannot withdraw its stake. Now each expired claim
    costs expiryForfeit (to the committed honest worker) and bars its worker from the unit, and the honest worker's
    commitment is released one claimDuration after its own deadline whatever the attackers do."""
    honest_worker, attacker_a, attacker_b = workers[0], workers[1], workers[2]
    tx = market.claimUnit(job, 0, {"from": honest_worker})
    own_deadline = tx.timestamp + CLAIM_DURATION
    commit(market, job, 0, honest_worker, honest(job, 0))
    tx = market.claimUnit(job, 0, {"from": attacker_a})
    set_next_block_timestamp(tx.timestamp + CLAIM_DURATION + 1)
    tx = market.claimUnit(job, 0, {"from": attacker_b})  # takes over the expired slot: attacker_a pays
    forfeited = tx.events["StakeForfeited"]
    assert (forfeited["worker"], forfeited["amount"], forfeited["beneficiary"]) == (
        attacker_a,
        SLASH_AMOUNT // 4,
        honest_worker,
    )
    # the honest worker's commitment is not releasable yet (its deadline + claimDuration is still ahead)
    assert tx.timestamp <= own_deadline + CLAIM_DURATION
    with market_reverts("ClaimNotReleasable", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
    set_next_block_timestamp(tx.timestamp + CLAIM_DURATION + 1)
    # attacker_a cannot take its turn again: it is excluded (and below minStake until it tops up)
    market.addStake({"from": attacker_a, "value": SLASH_AMOUNT})
    with market_reverts("AlreadyWorkedOn", job, 0, attacker_a.address):
        market.claimUnit(job, 0, {"from": attacker_a})
    tx = market.expireClaim(job, 0, 1, {"from": outsider})
    assert tx.events["StakeForfeited"]["worker"] == attacker_b
    assert market.balanceOf(honest_worker) == 2 * (SLASH_AMOUNT // 4)
    # ... and one claimDuration after its own deadline the honest worker's commitment is released
    set_next_block_timestamp(max(chain.time(), own_deadline + CLAIM_DURATION) + 1)
    tx = market.expireClaim(job, 0, 0, {"from": honest_worker})
    assert [e.name for e in tx.events] == ["ClaimReleased"]
    assert worker_info(market, honest_worker)["openClaims"] == 0
    assert not market.isExcluded(job, 0, honest_worker)
    market.withdrawStake(MIN_STAKE, {"from": honest_worker})
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Open and info.workers == [ZERO_ADDRESS] * 3
    assert_conserved(market, everyone)


def test_m1_lonely_release_needs_an_open_unit(market, job, workers, outsider, chain):
    """Once both replicas committed the release path is closed: the reveal window settles the unit."""
    tx = committed_both(market, job, 0, workers[0], workers[1], honest(job, 0))
    sleep_past(chain, tx.timestamp + 3 * CLAIM_DURATION)
    for slot in (0, 1):
        with market_reverts("ClaimNotReleasable", job, 0, slot):
            market.expireClaim(job, 0, slot, {"from": outsider})


def test_m2_withholding_a_reveal_costs_a_full_slash(market, job, workers, outsider, chain, everyone):
    """Issue 13, M2. The attack: a cheater sees the honest replica's tag differ from its own and never reveals: it
    was only excluded, kept its stake, and the honest replica got nothing. Now it forfeits slashAmount (as much as
    revealing and being arbitrated wrong), credited to the honest replica."""
    honest_worker, cheater = workers[0], workers[1]
    tx = committed_both(market, job, 0, honest_worker, cheater, honest(job, 0), BAD)
    reveal(market, job, 0, honest_worker, honest(job, 0))
    sleep_past(chain, tx.events["RevealOpened"]["revealDeadline"])
    tx = market.expireReveal(job, 0, {"from": outsider})
    forfeited = tx.events["StakeForfeited"]
    assert (forfeited["worker"], forfeited["amount"], forfeited["beneficiary"]) == (
        cheater,
        SLASH_AMOUNT,
        honest_worker,
    )
    assert worker_info(market, cheater)["stake"] == MIN_STAKE - SLASH_AMOUNT
    assert worker_info(market, honest_worker)["stake"] == MIN_STAKE
    # the honest replica is compensated with what a slash would have given it and the arbiter together
    assert market.balanceOf(honest_worker) == SLASH_AMOUNT
    assert not market.isExcluded(job, 0, honest_worker) and market.isExcluded(job, 0, cheater)
    assert_conserved(market, everyone)


def test_l2_dispute_without_a_verdict_times_out(requester, coordinator, accounts, chain, everyone):
    """Issue 13, L2. The attack: a Disputed unit nobody arbitrates keeps both replicas' stake locked until the
    requester cancels. Now, after disputeDeadline, anyone closes the dispute: both replicas are released unslashed
    and excluded, and the unit opens again. Here nobody else is staked, so no arbiter can ever be drawn."""
    market = deploy_market(requester)
    a, b, outsider = accounts[2], accounts[3], accounts[9]
    register_workers(market, [a, b])
    job, _ = post_job(market, requester, coordinator)
    txs = run_disputed(market, job, 0, a, b, BAD, honest(job, 0))
    deadline = txs[-1].events["UnitDisputed"]["disputeDeadline"]
    chain.mine()
    assert market.drawArbiter(job, 0, {"from": a}).return_value == ZERO_ADDRESS  # nobody eligible: scheduled again
    with market_reverts("DisputeNotExpired", job, 0, deadline):
        market.expireDispute(job, 0, {"from": outsider})
    set_next_block_timestamp(deadline + 1)
    with market_reverts("DisputeWindowClosed", job, 0, deadline):
        market.drawArbiter(job, 0, {"from": a})
    staked = market.totalStaked()
    tx = market.expireDispute(job, 0, {"from": outsider})
    event = tx.events["DisputeExpired"]
    assert (event["resets"], event["replica0"], event["replica1"]) == (1, a, b)
    assert market.totalStaked() == staked
    for w in (a, b):
        assert worker_info(market, w)["openClaims"] == 0 and worker_info(market, w)["faults"] == 0
        assert market.isExcluded(job, 0, w)
        market.withdrawStake(MIN_STAKE, {"from": w})
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Open and info.resets == 1 and info.workers == [ZERO_ADDRESS] * 3
    assert (info.draw_block, info.dispute_deadline) == (0, 0)
    with market_reverts("UnitNotDisputed", job, 0, UnitStatus.Open):
        market.expireDispute(job, 0, {"from": outsider})
    assert_conserved(market, everyone)


def test_l2_dispute_timeout_waits_for_a_live_arbiter_and_closes_an_expired_one(
    market, disputed, workers, outsider, chain, everyone
):
    job = disputed
    deadline = unit_info(market, job, 0).dispute_deadline
    set_next_block_timestamp(deadline - CLAIM_DURATION // 2)
    drawn, arbiter = draw(market, job, 0, workers[0])
    arbiter_deadline = drawn.events["ArbiterDrawn"]["deadline"]
    assert arbiter_deadline > deadline
    set_next_block_timestamp(deadline + 1)
    with market_reverts("ArbiterPending", job, 0, arbiter.address, arbiter_deadline):
        market.expireDispute(job, 0, {"from": outsider})
    set_next_block_timestamp(arbiter_deadline + 1)
    tx = market.expireDispute(job, 0, {"from": outsider})
    assert [e.name for e in tx.events] == ["ClaimExpired", "StakeForfeited", "DisputeExpired"]
    assert tx.events["StakeForfeited"]["worker"] == arbiter
    for w in (workers[0], workers[1], arbiter):
        assert worker_info(market, w)["openClaims"] == 0 and market.isExcluded(job, 0, w)
    assert_conserved(market, everyone)
