"""ComputeMarket gas: every state-changing function measured and printed at the end of the module, and the promise
of the design checked: the gas of a unit (claim + submit by two replicas) does not depend on the job's shape
(numStages, unitsPerStage) nor on where the unit lies in it, because no function loops over units or workers."""

from collections import defaultdict

import pytest
from market_helpers import (
    CLAIM_DURATION,
    MIN_STAKE,
    deploy_market,
    digest,
    honest,
    post_job,
    register_workers,
    run_stage,
    run_unit,
    worker_info,
)

PRICE = 10**9
# (numStages, unitsPerStage); the measured unit is the last one of the job's current stage, after a first unit of
# the job has warmed up the job's storage (and the workers' balances). (5, 1) is measured in its last stage.
SHAPES = [(1, 2), (100, 2), (1, 1000), (40, 250), (5, 1)]
PER_FUNCTION_SPREAD = 64  # gas: only calldata differs (the unit index has one or two non-zero bytes)
UNIT_GAS_LIMIT = 320_000  # two claims and two submissions, the second one accepting and paying


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
        reporter.write_line(f"{'function':<44}{'avg':>10}{'min':>10}{'max':>10}{'calls':>7}")
        for name, values in sorted(log.items()):
            avg = round(sum(values) / len(values))
            reporter.write_line(f"{name:<44}{avg:>10}{min(values):>10}{max(values):>10}{len(values):>7}")


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
        txs = []
        for name, call in (
            ("claimUnit", lambda job=job, unit=unit: market.claimUnit(job, unit, {"from": a})),
            ("claimUnit", lambda job=job, unit=unit: market.claimUnit(job, unit, {"from": b})),
            (
                "submitResult (first replica)",
                lambda job=job, unit=unit: market.submitResult(job, unit, honest(job, unit), {"from": a}),
            ),
            (
                "submitResult (accepting)",
                lambda job=job, unit=unit: market.submitResult(job, unit, honest(job, unit), {"from": b}),
            ),
        ):
            # every claim writes the job's lastClaimDeadline: make it a new value, as it is in real use
            chain.sleep(2)
            txs.append(record(gas_log, name, call()))
        assert "UnitAccepted" in txs[-1].events
        measured[(stages, per_stage)] = [tx.gas_used for tx in txs]
        gas_log[f"one unit (2 claims + 2 submits), {stages}x{per_stage}"].append(sum(tx.gas_used for tx in txs))

    for position in range(4):
        values = [gas[position] for gas in measured.values()]
        assert max(values) - min(values) <= PER_FUNCTION_SPREAD, (position, measured)
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

    job, tx = post_job(market, requester, coordinator, numStages=2, unitsPerStage=3, pricePerUnit=PRICE)
    record(gas_log, "postJob", tx)
    # unit 0: agreement
    for who in (w[0], w[1]):
        record(gas_log, "claimUnit", market.claimUnit(job, 0, {"from": who}))
    record(gas_log, "submitResult (first replica)", market.submitResult(job, 0, honest(job, 0), {"from": w[0]}))
    record(gas_log, "submitResult (accepting)", market.submitResult(job, 0, honest(job, 0), {"from": w[1]}))
    # unit 1: dispute, arbitration agrees with the second replica, the first is slashed
    market.claimUnit(job, 1, {"from": w[0]})
    market.claimUnit(job, 1, {"from": w[1]})
    market.submitResult(job, 1, digest("wrong"), {"from": w[0]})
    record(gas_log, "submitResult (disputing)", market.submitResult(job, 1, honest(job, 1), {"from": w[1]}))
    record(gas_log, "claimUnit (arbiter)", market.claimUnit(job, 1, {"from": w[2]}))
    tx = record(
        gas_log, "submitResult (arbiter: accept+slash)", market.submitResult(job, 1, honest(job, 1), {"from": w[2]})
    )
    assert "WorkerSlashed" in tx.events
    record(gas_log, "addStake", market.addStake({"from": w[0], "value": MIN_STAKE}))  # back above minStake
    # unit 2: three different results reset the unit; then a claim expires, is taken over, and the unit is accepted
    market.claimUnit(job, 2, {"from": w[0]})
    market.claimUnit(job, 2, {"from": w[1]})
    market.submitResult(job, 2, digest("one"), {"from": w[0]})
    market.submitResult(job, 2, digest("two"), {"from": w[1]})
    market.claimUnit(job, 2, {"from": w[2]})
    tx = record(gas_log, "submitResult (arbiter: reset)", market.submitResult(job, 2, digest("three"), {"from": w[2]}))
    assert "UnitReset" in tx.events
    market.claimUnit(job, 2, {"from": w[3]})
    market.claimUnit(job, 2, {"from": w[4]})
    chain.sleep(CLAIM_DURATION + 1)
    record(gas_log, "expireClaim", market.expireClaim(job, 2, 0, {"from": requester}))  # clears w[3]'s slot 0
    record(gas_log, "claimUnit", market.claimUnit(job, 2, {"from": newcomer}))
    tx = record(gas_log, "claimUnit (taking an expired slot)", market.claimUnit(job, 2, {"from": w[3]}))
    assert tx.events["ClaimExpired"]["worker"] == w[4]
    market.submitResult(job, 2, honest(job, 2), {"from": newcomer})
    market.submitResult(job, 2, honest(job, 2), {"from": w[3]})
    record(
        gas_log, "commitCheckpoint (next stage)", market.commitCheckpoint(job, 0, digest("c0"), {"from": coordinator})
    )
    run_stage(market, job, 1, 3, w[0], w[1])
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
    market.submitResult(job, 0, honest(job, 0), {"from": w[0]})
    record(gas_log, "cancelJob", market.cancelJob(job, {"from": requester}))
    chain.sleep(CLAIM_DURATION + 1)
    tx = record(gas_log, "expireClaim (release, cancelled job)", market.expireClaim(job, 0, 0, {"from": requester}))
    assert "ClaimReleased" in tx.events
    stake = worker_info(market, w[0])["stake"]
    record(gas_log, "withdrawStake (exit)", market.withdrawStake(stake, {"from": w[0]}))

    limits = {
        "postJob": 300_000,
        "claimUnit": 100_000,
        "submitResult (first replica)": 60_000,
        "submitResult (accepting)": 160_000,
        "submitResult (arbiter: accept+slash)": 180_000,
        "commitCheckpoint (next stage)": 80_000,
        "withdraw": 60_000,
    }
    for name, limit in limits.items():
        assert max(gas_log[name]) < limit, (name, gas_log[name])
