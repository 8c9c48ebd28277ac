"""ComputeMarket gas: every state-changing function measured and printed at the end of the module, with ceilings
about 15% above the measured values, and the promise of the design checked: the gas of a unit (two claims, two
commitments, one reveal and the publication that reveals, accepts and pays) does not depend on the job's shape
(numStages, unitsPerStage) nor on where the unit lies in it, because no function loops over units or workers."""

from collections import defaultdict

import pytest
from market_helpers import (
    CLAIM_DURATION,
    MIN_STAKE,
    commit,
    deploy_market,
    digest,
    honest,
    post_job,
    register_workers,
    reveal,
    run_disputed,
    run_stage,
    run_unit,
    worker_info,
)

PRICE = 10**9
# (numStages, unitsPerStage); the measured unit is the last one of the job's current stage, after a first unit of
# the job has warmed up the job's storage (and the workers' balances). (5, 1) is measured in its last stage.
SHAPES = [(1, 2), (100, 2), (1, 1000), (40, 250), (5, 1)]
PER_FUNCTION_SPREAD = 64  # gas: only calldata differs (the unit index has one or two non-zero bytes)
UNIT_STEPS = (
    "claimUnit",
    "claimUnit",
    "commitResult (first)",
    "commitResult (second)",
    "revealResult",
    "publishResult",
)
# Ceilings about 15% above the gas measured here (brownie 1.22, Anvil, solc 0.8.37, optimizer 200 runs, shanghai);
# the measured maximum of each is in the comment, and printed by `pytest -s` (the table at the end of the module).
UNIT_GAS_LIMIT = 515_000  # 448_250: 2 claims + 2 commitments + reveal + publish, warm job and balances
GAS_LIMITS = {
    "claimUnit": 105_000,  # 91_700 (the first claim of a job)
    "claimUnit (arbiter)": 87_000,  # 75_956
    "claimUnit (taking an expired slot)": 77_000,  # 67_039
    "commitResult (first)": 62_000,  # 54_120
    "commitResult (second)": 101_000,  # 87_697 (opens the reveal window)
    "revealResult": 51_500,  # 44_828
    "revealResult (disputing)": 54_000,  # 46_920
    "publishResult": 190_000,  # 165_419 (reveal, accept, pay both; the workers' first payments)
    "publishResult (both revealed)": 120_500,  # 104_777
    "submitArbitration (accept+slash)": 163_000,  # 141_755
    "submitArbitration (reset)": 141_500,  # 123_094
    "expireReveal": 85_000,  # 73_788
    "expireClaim": 40_000,  # 34_833
    "expireClaim (release, cancelled job)": 46_000,  # 39_811
    "one unit, first of its job, first payments": 587_000,  # 510_410
    "postJob": 318_000,  # 276_888
    "cancelJob": 36_000,  # 31_017
    "commitCheckpoint (next stage)": 69_000,  # 59_795
    "commitCheckpoint (final)": 96_000,  # 83_224
    "refund": 62_000,  # 53_941
    "withdraw": 43_500,  # 37_659
    "registerWorker": 58_000,  # 50_540
    "addStake": 39_000,  # 33_662
    "withdrawStake (partial)": 50_000,  # 43_541
    "withdrawStake (exit)": 50_000,  # 43_554
}


@pytest.fixture(scope="module")
def gas_log(request):
    """gas_used per function over the module; the table is printed when the module is done."""
    log: dict[str, list[int]] = defaultdict(list)
    yield log
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if not log or reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # printed even when the tests pass
        reporter.write_line("")
        reporter.write_line("ComputeMarket gas")
        reporter.write_line(f"{'function':<48}{'avg':>10}{'min':>10}{'max':>10}{'calls':>7}")
        for name, values in sorted(log.items()):
            avg = round(sum(values) / len(values))
            reporter.write_line(f"{name:<48}{avg:>10}{min(values):>10}{max(values):>10}{len(values):>7}")


def record(log, name, tx):
    assert tx.status == 1, f"{name} reverted"
    log[name].append(tx.gas_used)
    return tx


@pytest.fixture(scope="module")
def setup(accounts):
    requester, coordinator = accounts[0], accounts[1]
    workers = list(accounts[2:7])
    market = deploy_market(requester)
    register_workers(market, workers)
    return market, requester, coordinator, workers


def test_gas_per_unit_does_not_depend_on_job_shape(setup, gas_log, chain):
    market, requester, coordinator, workers = setup
    a, b = workers[0], workers[1]
    measured = {}
    for stages, per_stage in SHAPES:
        job, tx = post_job(
            market, requester, coordinator, numStages=stages, unitsPerStage=per_stage, pricePerUnit=PRICE
        )
        record(gas_log, "postJob", tx)
        if per_stage == 1:
            # walk to the last stage: its single unit is the measured one
            for stage in range(stages - 1):
                run_stage(market, job, stage, 1, a, b)
                market.commitCheckpoint(job, stage, digest(f"ckpt-{job}-{stage}"), {"from": coordinator})
            unit = stages - 1
        else:
            run_unit(market, job, 0, a, b, honest(job, 0))
            unit = per_stage - 1
        result = honest(job, unit)
        txs = []
        for name, call in zip(
            UNIT_STEPS,
            (
                lambda job=job, unit=unit: market.claimUnit(job, unit, {"from": a}),
                lambda job=job, unit=unit: market.claimUnit(job, unit, {"from": b}),
                lambda job=job, unit=unit, result=result: commit(market, job, unit, a, result),
                lambda job=job, unit=unit, result=result: commit(market, job, unit, b, result),
                lambda job=job, unit=unit, result=result: reveal(market, job, unit, a, result),
                lambda job=job, unit=unit, result=result: market.publishResult(job, unit, result, {"from": b}),
            ),
            strict=True,
        ):
            # every claim (and the second commitment) writes the job's lastClaimDeadline: make it a new value, as it
            # is in real use
            chain.sleep(2)
            txs.append(record(gas_log, name, call()))
        assert "RevealOpened" in txs[3].events and "UnitAccepted" in txs[-1].events
        measured[(stages, per_stage)] = [tx.gas_used for tx in txs]
        gas_log[f"one unit, {stages}x{per_stage} job"].append(sum(tx.gas_used for tx in txs))

    print()
    for shape, gas in measured.items():
        print(f"gas per unit {shape}: {sum(gas)} = {dict(zip(UNIT_STEPS[1:], gas[1:], strict=True))} + {gas[0]}")
    for position in range(len(UNIT_STEPS)):
        values = [gas[position] for gas in measured.values()]
        assert max(values) - min(values) <= PER_FUNCTION_SPREAD, (UNIT_STEPS[position], measured)
    totals = [sum(gas) for gas in measured.values()]
    assert max(totals) - min(totals) <= 2 * PER_FUNCTION_SPREAD, measured
    assert max(totals) < UNIT_GAS_LIMIT, measured


def test_gas_every_function(setup, gas_log, accounts, chain):
    market, requester, coordinator, workers = setup
    w = workers
    newcomer = accounts[8]
    record(gas_log, "registerWorker", market.registerWorker({"from": newcomer, "value": MIN_STAKE}))
    record(gas_log, "addStake", market.addStake({"from": newcomer, "value": MIN_STAKE}))
    record(gas_log, "withdrawStake (partial)", market.withdrawStake(MIN_STAKE, {"from": newcomer}))

    job, tx = post_job(market, requester, coordinator, numStages=2, unitsPerStage=4, pricePerUnit=PRICE)
    record(gas_log, "postJob", tx)
    # unit 0: agreement, the second replica publishing (and revealing in the same call); the job's first unit and
    # the workers' first payments (balances from zero), the most expensive unit
    txs = [record(gas_log, "claimUnit", market.claimUnit(job, 0, {"from": who})) for who in (w[0], w[1])]
    txs.append(record(gas_log, "commitResult (first)", commit(market, job, 0, w[0], honest(job, 0))))
    txs.append(record(gas_log, "commitResult (second)", commit(market, job, 0, w[1], honest(job, 0))))
    txs.append(record(gas_log, "revealResult", reveal(market, job, 0, w[0], honest(job, 0))))
    txs.append(record(gas_log, "publishResult", market.publishResult(job, 0, honest(job, 0), {"from": w[1]})))
    assert "ResultRevealed" in txs[-1].events and "UnitAccepted" in txs[-1].events
    gas_log["one unit, first of its job, first payments"].append(sum(tx.gas_used for tx in txs))
    # unit 1: both reveal, then one publishes (accept and pay only)
    market.claimUnit(job, 1, {"from": w[0]})
    market.claimUnit(job, 1, {"from": w[1]})
    commit(market, job, 1, w[0], honest(job, 1))
    commit(market, job, 1, w[1], honest(job, 1))
    reveal(market, job, 1, w[0], honest(job, 1))
    record(gas_log, "revealResult", reveal(market, job, 1, w[1], honest(job, 1)))
    tx = record(gas_log, "publishResult (both revealed)", market.publishResult(job, 1, honest(job, 1), {"from": w[0]}))
    assert list(tx.events.keys()) == ["UnitAccepted"]
    # unit 2: dispute, arbitration agrees with the second replica, the first is slashed
    txs = run_disputed(market, job, 2, w[0], w[1], digest("wrong"), honest(job, 2))
    record(gas_log, "revealResult (disputing)", txs[-1])
    record(gas_log, "claimUnit (arbiter)", market.claimUnit(job, 2, {"from": w[2]}))
    tx = record(
        gas_log,
        "submitArbitration (accept+slash)",
        market.submitArbitration(job, 2, honest(job, 2), {"from": w[2]}),
    )
    assert "WorkerSlashed" in tx.events
    record(gas_log, "addStake", market.addStake({"from": w[0], "value": MIN_STAKE}))  # back above minStake
    # unit 3: three different results reset the unit; a reveal window passes (reset again); then a claim expires,
    # is taken over, and the unit is accepted
    run_disputed(market, job, 3, w[0], w[1], digest("one"), digest("two"))
    market.claimUnit(job, 3, {"from": w[2]})
    tx = record(gas_log, "submitArbitration (reset)", market.submitArbitration(job, 3, digest("three"), {"from": w[2]}))
    assert "UnitReset" in tx.events
    market.claimUnit(job, 3, {"from": w[3]})
    market.claimUnit(job, 3, {"from": w[4]})
    commit(market, job, 3, w[3], honest(job, 3))
    commit(market, job, 3, w[4], honest(job, 3))
    reveal(market, job, 3, w[3], honest(job, 3))
    chain.sleep(CLAIM_DURATION + 1)
    tx = record(gas_log, "expireReveal", market.expireReveal(job, 3, {"from": requester}))
    assert (tx.events["RevealExpired"]["excluded0"], tx.events["RevealExpired"]["excluded1"]) == (False, True)
    market.claimUnit(job, 3, {"from": w[3]})
    market.claimUnit(job, 3, {"from": newcomer})
    chain.sleep(CLAIM_DURATION + 1)
    record(gas_log, "expireClaim", market.expireClaim(job, 3, 0, {"from": requester}))  # clears w[3]'s slot 0
    w5 = accounts[9]
    register_workers(market, [w5])
    record(gas_log, "claimUnit", market.claimUnit(job, 3, {"from": w5}))
    tx = record(gas_log, "claimUnit (taking an expired slot)", market.claimUnit(job, 3, {"from": w[3]}))
    assert tx.events["ClaimExpired"]["worker"] == newcomer
    commit(market, job, 3, w5, honest(job, 3))
    commit(market, job, 3, w[3], honest(job, 3))
    reveal(market, job, 3, w5, honest(job, 3))
    market.publishResult(job, 3, honest(job, 3), {"from": w[3]})
    record(
        gas_log, "commitCheckpoint (next stage)", market.commitCheckpoint(job, 0, digest("c0"), {"from": coordinator})
    )
    run_stage(market, job, 1, 4, w[0], w[1])
    tx = record(
        gas_log, "commitCheckpoint (final)", market.commitCheckpoint(job, 1, digest("c1"), {"from": coordinator})
    )
    assert "JobFinished" in tx.events
    record(gas_log, "refund", market.refund(job, {"from": requester}))
    record(gas_log, "withdraw", market.withdraw({"from": requester}))
    record(gas_log, "withdraw", market.withdraw({"from": w[1]}))

    # cancellation, and the release of a claim its cancelled job can no longer verify
    job, _ = post_job(market, requester, coordinator, numStages=1, unitsPerStage=1, pricePerUnit=PRICE)
    market.claimUnit(job, 0, {"from": w[0]})
    commit(market, job, 0, w[0], honest(job, 0))
    record(gas_log, "cancelJob", market.cancelJob(job, {"from": requester}))
    chain.sleep(CLAIM_DURATION + 1)
    tx = record(gas_log, "expireClaim (release, cancelled job)", market.expireClaim(job, 0, 0, {"from": requester}))
    assert "ClaimReleased" in tx.events
    stake = worker_info(market, w[0])["stake"]
    record(gas_log, "withdrawStake (exit)", market.withdrawStake(stake, {"from": w[0]}))

    print()
    for name in sorted(GAS_LIMITS):
        print(f"{name:<44} max {max(gas_log[name]):>7}  limit {GAS_LIMITS[name]:>7}")
    for name, limit in GAS_LIMITS.items():
        assert max(gas_log[name]) < limit, (name, gas_log[name])
