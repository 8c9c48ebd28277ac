"""ComputeMarket (issue 6): staking, posting, claiming, replication, arbitration, checkpoints, payouts, refunds."""

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
    assert_conserved,
    deploy_market,
    digest,
    escrow_for,
    gas_cost,
    honest,
    job_info,
    job_params,
    market_container,
    market_reverts,
    post_job,
    register_workers,
    run_stage,
    run_unit,
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
    """Unit 0 of job 1 Disputed: workers[0] submitted BAD, workers[1] the honest result."""
    w = workers
    txs = run_unit(market, job, 0, w[0], w[1], BAD, honest(job, 0))
    assert "UnitDisputed" in txs[-1].events
    return job


# ---------------------------------------------------------------- deployment and posting


def test_constructor(market, requester):
    assert market.minStake() == MIN_STAKE
    assert market.slashAmount() == SLASH_AMOUNT
    assert market.jobCount() == 0
    assert market.ESCROW_FACTOR() == ESCROW_FACTOR
    with market_reverts("InvalidConfig", "minStake is 0"):
        market_container().deploy(0, SLASH_AMOUNT, {"from": requester})


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
    with market_reverts("UnknownJob", 7):
        market.claimUnit(7, 0, {"from": workers[0]})
    with market_reverts("UnknownJob", 7):
        market.job(7)
    with market_reverts("UnknownJob", 7):
        market.cancelJob(7, {"from": requester})


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
    }
    assert market.totalStaked() == 7 * MIN_STAKE + 5
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
    w = workers[0]
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
    # ... nor while its submitted result waits for verification
    market.submitResult(job, 0, honest(job, 0), {"from": w})
    with market_reverts("HasOpenClaims", w.address, 1):
        market.withdrawStake(MIN_STAKE, {"from": w})
    market.claimUnit(job, 0, {"from": workers[1]})
    market.submitResult(job, 0, honest(job, 0), {"from": workers[1]})
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
    assert info.status == UnitStatus.Open
    assert info.workers == [workers[0], workers[1], ZERO_ADDRESS]
    assert info.deadlines == [tx.timestamp + CLAIM_DURATION, tx2.timestamp + CLAIM_DURATION, 0]
    assert info.results == [ZERO_BYTES32] * 3 and info.accepted == ZERO_BYTES32
    assert worker_info(market, workers[0])["openClaims"] == 1
    assert job_info(market, job)["lastClaimDeadline"] == tx2.timestamp + CLAIM_DURATION


def test_double_claim(market, job, workers):
    market.claimUnit(job, 0, {"from": workers[0]})
    with market_reverts("AlreadyWorkedOn", job, 0, workers[0].address):
        market.claimUnit(job, 0, {"from": workers[0]})
    market.claimUnit(job, 0, {"from": workers[1]})
    with market_reverts("NoFreeSlot", job, 0):
        market.claimUnit(job, 0, {"from": workers[2]})
    # a worker may hold claims on several units
    market.claimUnit(job, 1, {"from": workers[0]})
    assert worker_info(market, workers[0])["openClaims"] == 2


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
    tx = market.claimUnit(job, 0, {"from": first})
    deadline = tx.timestamp + CLAIM_DURATION
    # not free before the deadline
    set_next_block_timestamp(tx.timestamp + 100)
    market.claimUnit(job, 0, {"from": second})
    with market_reverts("NoFreeSlot", job, 0):
        market.claimUnit(job, 0, {"from": workers[2]})
    set_next_block_timestamp(deadline + 1)
    with market_reverts("DeadlinePassed", job, 0, first.address, deadline):
        market.submitResult(job, 0, honest(job, 0), {"from": first})
    # the second replica's claim is still valid; the first one's slot goes to another worker
    set_next_block_timestamp(deadline + 2)
    tx = market.claimUnit(job, 0, {"from": workers[2]})
    assert list(tx.events.keys()) == ["ClaimExpired", "UnitClaimed"]
    expired = tx.events["ClaimExpired"]
    assert (expired["worker"], expired["slot"], expired["unitIndex"]) == (first, 0, 0)
    assert tx.events["UnitClaimed"]["slot"] == 0
    assert worker_info(market, first)["openClaims"] == 0
    assert worker_info(market, workers[2])["openClaims"] == 1
    assert unit_info(market, job, 0).workers[:2] == [workers[2], second]
    with market_reverts("NotClaimant", job, 0, first.address):
        market.submitResult(job, 0, honest(job, 0), {"from": first})
    # the expired worker is not barred from the unit (it never submitted for it): only the slots are full
    with market_reverts("NoFreeSlot", job, 0):
        market.claimUnit(job, 0, {"from": first})
    market.submitResult(job, 0, honest(job, 0), {"from": workers[2]})
    market.submitResult(job, 0, honest(job, 0), {"from": second})
    assert unit_info(market, job, 0).status == UnitStatus.Accepted


def test_submit_at_deadline_is_in_time(market, job, workers):
    tx = market.claimUnit(job, 0, {"from": workers[0]})
    set_next_block_timestamp(tx.timestamp + CLAIM_DURATION)
    assert "ResultSubmitted" in market.submitResult(job, 0, BAD, {"from": workers[0]}).events


def test_expire_claim(market, job, workers, outsider, chain):
    w = workers[0]
    tx = market.claimUnit(job, 0, {"from": w})
    deadline = tx.timestamp + CLAIM_DURATION
    with market_reverts("InvalidSlot", 3):
        market.expireClaim(job, 0, 3, {"from": outsider})
    with market_reverts("NoClaim", job, 0, 1):
        market.expireClaim(job, 0, 1, {"from": outsider})
    with market_reverts("ClaimNotExpired", job, 0, 0, deadline):
        market.expireClaim(job, 0, 0, {"from": outsider})
    set_next_block_timestamp(deadline + 1)
    tx = market.expireClaim(job, 0, 0, {"from": outsider})
    assert tx.events["ClaimExpired"]["worker"] == w
    assert unit_info(market, job, 0).workers[0] == ZERO_ADDRESS
    assert worker_info(market, w)["openClaims"] == 0
    with market_reverts("NoClaim", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
    market.withdrawStake(MIN_STAKE, {"from": w})
    # a submitted result is not expired by its deadline
    market.claimUnit(job, 1, {"from": workers[1]})
    market.submitResult(job, 1, honest(job, 1), {"from": workers[1]})
    chain.sleep(CLAIM_DURATION + 10)
    chain.mine()
    with market_reverts("ClaimNotReleasable", job, 1, 0):
        market.expireClaim(job, 1, 0, {"from": outsider})


# ---------------------------------------------------------------- results


def test_submit_errors(market, job, workers, outsider):
    with market_reverts("NotClaimant", job, 0, outsider.address):
        market.submitResult(job, 0, BAD, {"from": outsider})
    market.claimUnit(job, 0, {"from": workers[0]})
    with market_reverts("EmptyDigest"):
        market.submitResult(job, 0, ZERO_BYTES32, {"from": workers[0]})
    tx = market.submitResult(job, 0, BAD, {"from": workers[0]})
    assert list(tx.events.keys()) == ["ResultSubmitted"]
    assert (tx.events["ResultSubmitted"]["slot"], bytes(tx.events["ResultSubmitted"]["resultDigest"])) == (0, BAD)
    with market_reverts("AlreadySubmitted", job, 0, workers[0].address):
        market.submitResult(job, 0, BAD, {"from": workers[0]})
    with market_reverts("UnknownJob", 9):
        market.submitResult(9, 0, BAD, {"from": workers[0]})


def test_matching_results_accept_and_pay(market, job, workers, everyone):
    a, b = workers[0], workers[1]
    result = honest(job, 0)
    txs = run_unit(market, job, 0, a, b, result)
    tx = txs[-1]
    assert list(tx.events.keys()) == ["ResultSubmitted", "UnitAccepted"]
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
    with market_reverts("AlreadySubmitted", job, 0, a.address):
        market.submitResult(job, 0, result, {"from": a})
    assert_conserved(market, everyone)


def test_mismatch_arbitration_slashes_and_redistributes(market, disputed, workers, everyone):
    job = disputed
    liar, right, arbiter = workers[0], workers[1], workers[2]
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Disputed
    assert info.results[:2] == [BAD, honest(job, 0)]
    assert market.balanceOf(liar) == market.balanceOf(right) == 0
    # the replicas cannot arbitrate their own dispute
    for w in (liar, right):
        with market_reverts("AlreadyWorkedOn", job, 0, w.address):
            market.claimUnit(job, 0, {"from": w})
    tx = market.claimUnit(job, 0, {"from": arbiter})
    assert tx.events["UnitClaimed"]["slot"] == ARBITER_SLOT
    with market_reverts("NoFreeSlot", job, 0):
        market.claimUnit(job, 0, {"from": workers[3]})
    staked = market.totalStaked()
    tx = market.submitResult(job, 0, honest(job, 0), {"from": arbiter})
    assert list(tx.events.keys()) == ["ResultSubmitted", "UnitAccepted", "WorkerSlashed"]
    accepted = tx.events["UnitAccepted"]
    assert (accepted["paidA"], accepted["paidB"]) == (right, arbiter)
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
    }
    assert worker_info(market, right)["completedUnits"] == worker_info(market, arbiter)["completedUnits"] == 1
    assert market.totalStaked() == staked - SLASH_AMOUNT
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Accepted and info.accepted == honest(job, 0)
    assert info.results == [BAD, honest(job, 0), honest(job, 0)]
    assert job_info(market, job)["escrowRemaining"] == ESCROW - 2 * PRICE
    # slashed below minStake: the liar cannot claim until it tops up
    with market_reverts("StakeTooLow", liar.address, MIN_STAKE - SLASH_AMOUNT, MIN_STAKE):
        market.claimUnit(job, 1, {"from": liar})
    assert_conserved(market, everyone)


def test_arbiter_agreeing_with_first_replica(market, job, workers):
    run_unit(market, job, 0, workers[0], workers[1], honest(job, 0), BAD)
    market.claimUnit(job, 0, {"from": workers[2]})
    tx = market.submitResult(job, 0, honest(job, 0), {"from": workers[2]})
    assert (tx.events["UnitAccepted"]["paidA"], tx.events["UnitAccepted"]["paidB"]) == (workers[0], workers[2])
    assert tx.events["WorkerSlashed"]["worker"] == workers[1]


def test_slash_is_capped_by_stake(requester, coordinator, accounts, everyone):
    """slashAmount above the stake takes the whole stake (here 2 * MIN_STAKE + 1 against MIN_STAKE)."""
    market = deploy_market(requester, slash_amount=2 * MIN_STAKE + 1)
    liar, right, arbiter = accounts[2], accounts[3], accounts[4]
    register_workers(market, [liar, right, arbiter])
    job, _ = post_job(market, requester, coordinator)
    run_unit(market, job, 0, liar, right, BAD, honest(job, 0))
    market.claimUnit(job, 0, {"from": arbiter})
    tx = market.submitResult(job, 0, honest(job, 0), {"from": arbiter})
    assert tx.events["WorkerSlashed"]["amount"] == MIN_STAKE
    assert worker_info(market, liar)["stake"] == 0
    assert market.balanceOf(right) == market.balanceOf(arbiter) == PRICE + MIN_STAKE // 2
    assert_conserved(market, everyone)


def test_third_result_matching_neither_resets(market, disputed, workers, everyone):
    job = disputed
    first, second, arbiter = workers[0], workers[1], workers[2]
    market.claimUnit(job, 0, {"from": arbiter})
    owed, staked = market.totalOwed(), market.totalStaked()
    tx = market.submitResult(job, 0, WORSE, {"from": arbiter})
    assert list(tx.events.keys()) == ["ResultSubmitted", "UnitReset"]
    reset = tx.events["UnitReset"]
    assert (reset["resets"], reset["replica0"], reset["replica1"], reset["arbiter"]) == (1, first, second, arbiter)
    # nobody paid, nobody slashed
    assert market.totalOwed() == owed and market.totalStaked() == staked
    assert job_info(market, job)["escrowRemaining"] == ESCROW
    info = unit_info(market, job, 0)
    assert info.status == UnitStatus.Open and info.resets == 1
    assert info.workers == [ZERO_ADDRESS] * 3 and info.results == [ZERO_BYTES32] * 3
    for w in (first, second, arbiter):
        assert worker_info(market, w)["openClaims"] == 0
        assert worker_info(market, w)["faults"] == 0
        assert market.isExcluded(job, 0, w)
        with market_reverts("AlreadyWorkedOn", job, 0, w.address):
            market.claimUnit(job, 0, {"from": w})
    assert not market.isExcluded(job, 0, workers[3])
    # fresh replication by other workers
    txs = run_unit(market, job, 0, workers[3], workers[4], honest(job, 0))
    assert "UnitAccepted" in txs[-1].events
    assert market.balanceOf(workers[3]) == market.balanceOf(workers[4]) == PRICE
    # the excluded workers are still free to work on other units
    market.claimUnit(job, 1, {"from": first})
    assert_conserved(market, everyone)


def test_second_reset_then_arbitration(market, disputed, workers, accounts):
    """After a reset the unit may be disputed and arbitrated again; exclusions accumulate."""
    job = disputed
    market.claimUnit(job, 0, {"from": workers[2]})
    market.submitResult(job, 0, WORSE, {"from": workers[2]})
    run_unit(market, job, 0, workers[3], workers[4], honest(job, 0), BAD)
    market.claimUnit(job, 0, {"from": workers[5]})
    tx = market.submitResult(job, 0, digest("third"), {"from": workers[5]})
    assert tx.events["UnitReset"]["resets"] == 2
    assert all(market.isExcluded(job, 0, w) for w in workers)
    newcomer = accounts[8]
    register_workers(market, [newcomer])
    market.claimUnit(job, 0, {"from": newcomer})


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
    run_unit(market, job, 1, workers[0], workers[1], honest(job, 1), BAD)
    with market_reverts("StageIncomplete", job, 0, 1, UNITS_PER_STAGE):
        market.commitCheckpoint(job, 0, ckpt, {"from": coordinator})
    market.claimUnit(job, 1, {"from": workers[2]})
    market.submitResult(job, 1, honest(job, 1), {"from": workers[2]})
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
    # unit 1: one replica submitted, the other still computing when the job is cancelled
    market.claimUnit(job, 1, {"from": w[2]})
    market.submitResult(job, 1, honest(job, 1), {"from": w[2]})
    last = market.claimUnit(job, 1, {"from": w[3]}).timestamp + CLAIM_DURATION
    market.cancelJob(job, {"from": requester})
    with market_reverts("JobNotOpen", job, JobStatus.Cancelled):
        market.claimUnit(job, 0, {"from": w[4]})
    with market_reverts("RefundNotYet", job, JobStatus.Cancelled, last):
        market.refund(job, {"from": requester})
    # the claim made before the cancellation is still honoured: its agreeing result is paid
    tx = market.submitResult(job, 1, honest(job, 1), {"from": w[3]})
    assert "UnitAccepted" in tx.events
    set_next_block_timestamp(last)
    with market_reverts("RefundNotYet", job, JobStatus.Cancelled, last):
        market.refund(job, {"from": requester})
    set_next_block_timestamp(last + 1)
    tx = market.refund(job, {"from": requester})
    assert tx.events["Refunded"]["amount"] == ESCROW - 2 * 2 * PRICE
    assert_conserved(market, everyone)


def test_cancelled_job_releases_unverified_claims(market, job, requester, workers, outsider, chain, everyone):
    """A submitted result that can no longer be verified locks its worker's stake until the job is over."""
    w = workers
    run_unit(market, job, 0, w[0], w[1], BAD, honest(job, 0))  # disputed, arbitration never comes
    tx = market.claimUnit(job, 1, {"from": w[2]})
    market.submitResult(job, 1, honest(job, 1), {"from": w[2]})  # waits for a second replica
    market.cancelJob(job, {"from": requester})
    last = job_info(market, job)["lastClaimDeadline"]
    assert last == tx.timestamp + CLAIM_DURATION
    with market_reverts("ClaimNotReleasable", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
    with market_reverts("HasOpenClaims", w[2].address, 1):
        market.withdrawStake(MIN_STAKE, {"from": w[2]})
    set_next_block_timestamp(last + 1)
    market.refund(job, {"from": requester})
    released = []
    for unit_index, slot in ((0, 0), (0, 1), (1, 0)):
        tx = market.expireClaim(job, unit_index, slot, {"from": outsider})
        released.append(tx.events["ClaimReleased"]["worker"])
    assert released == [w[0], w[1], w[2]]
    for account in w[:3]:
        assert worker_info(market, account)["openClaims"] == 0
        market.withdrawStake(MIN_STAKE, {"from": account})
        assert worker_info(market, account)["faults"] == 0
    with market_reverts("NoClaim", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
    # nothing was paid: the refund took the whole escrow
    assert market.balanceOf(requester) == ESCROW
    assert_conserved(market, everyone)


def test_accepted_claims_are_not_releasable(market, job, requester, workers, outsider, chain):
    run_unit(market, job, 0, workers[0], workers[1], honest(job, 0))
    market.cancelJob(job, {"from": requester})
    chain.sleep(CLAIM_DURATION + 1)
    chain.mine()
    with market_reverts("ClaimNotReleasable", job, 0, 0):
        market.expireClaim(job, 0, 0, {"from": outsider})
