"""ComputeMarket conservation of value: a seeded random scenario of many actions (stakes, jobs, claims, honest and
wrong results, expiries, arbitration, resets, checkpoints, cancellations, refunds, withdrawals), with the money
invariant and the ledger identity asserted after every step, then everything drained back out of the contract."""

import random
from typing import ClassVar

import pytest
from market_helpers import (
    MIN_STAKE,
    ZERO_ADDRESS,
    ZERO_BYTES32,
    JobStatus,
    Ledger,
    UnitInfo,
    UnitStatus,
    assert_conserved,
    deploy_market,
    digest,
    escrow_for,
    gas_cost,
    job_info,
    job_params,
    unit_info,
    worker_info,
)

STEPS = 200
PARTS_EVERY = 5
MARGIN = 5  # seconds: deadlines closer than this to chain.time() are left alone (the next block's time may vary)


class Scenario:
    """Picks random actions that the rules allow (decided from the contract's views) and asserts they succeed.

    Views are read once per step and cached (`refresh`); only jobs that can still change and units that were ever
    claimed are read at all, so a step costs tens of calls, not hundreds.
    """

    WEIGHTS: ClassVar[dict[str, int]] = {
        "claim": 30,
        "submit": 30,
        "checkpoint": 6,
        "withdraw": 5,
        "post": 3,
        "sleep": 5,
        "expire": 8,
        "release": 3,
        "refund": 3,
        "withdraw_stake": 3,
        "register": 2,
        "add_stake": 2,
        "cancel": 1,
    }

    def __init__(self, market, accounts, chain, seed):
        self.market = market
        self.chain = chain
        self.rng = random.Random(seed)
        self.accounts = list(accounts)
        self.requesters = [accounts[0], accounts[8]]
        self.coordinator = accounts[1]
        self.workers = [*accounts[2:8], accounts[9]]
        self.flaky = str(accounts[9])  # claims but never submits: its claims expire
        self.by_address = {str(a): a for a in accounts}
        self.ledger = Ledger()
        self.gas = 0
        self.attempt = 0
        self.counts: dict[str, int] = {}
        self.live: set[int] = set()  # jobs that can still change
        self.touched: dict[int, set[int]] = {}  # units ever claimed and not settled, per live job
        self.accepted: set[tuple[int, int]] = set()
        self._jobs: dict[int, dict] = {}
        self._units: dict[tuple[int, int], UnitInfo] = {}
        self._workers: dict[str, dict] = {}
        self._balances: dict[str, int] = {}
        self.refresh()

    # ------------------------------------------------------------ bookkeeping

    def refresh(self):
        """Start of a step: the chain's time. Cached views stay valid until a transaction touches them."""
        self.now = self.chain.time()

    @property
    def jobs(self) -> dict[int, dict]:
        for j in self.live:
            if j not in self._jobs:
                self._jobs[j] = job_info(self.market, j)
        return {j: self._jobs[j] for j in sorted(self.live)}

    @property
    def winfo(self) -> dict[str, dict]:
        for w in self.workers:
            if str(w) not in self._workers:
                self._workers[str(w)] = worker_info(self.market, w)
        return self._workers

    def balance_of(self, account) -> int:
        if str(account) not in self._balances:
            self._balances[str(account)] = int(self.market.balanceOf(account))
        return self._balances[str(account)]

    def unit(self, job_id, u) -> UnitInfo:
        key = (job_id, u)
        if key not in self._units:
            if u in self.touched[job_id] or key in self.accepted:
                self._units[key] = unit_info(self.market, job_id, u)
            else:
                self._units[key] = UnitInfo(UnitStatus.Open, 0, [ZERO_ADDRESS] * 3, [0] * 3, [ZERO_BYTES32] * 3, b"")
        return self._units[key]

    def invalidate(self, tx):
        """Forget the cached views a transaction may have changed: the jobs and units its events name, and the
        accounts that sent it or appear in its events."""
        addresses = {str(tx.sender)}
        for event in tx.events:
            values = dict(event)
            if "jobId" in values:
                self._jobs.pop(int(values["jobId"]), None)
                if "unitIndex" in values:
                    self._units.pop((int(values["jobId"]), int(values["unitIndex"])), None)
            addresses.update(str(v) for v in values.values() if str(v) in self.by_address)
        for a in addresses:
            self._workers.pop(a, None)
            self._balances.pop(a, None)

    def claimed_units(self):
        """(job, unit, info) of every unit with a claim, in live jobs."""
        return [(j, u, self.unit(j, u)) for j in sorted(self.live) for u in sorted(self.touched[j])]

    def done(self, name, tx):
        assert tx.status == 1
        self.gas += gas_cost(tx)
        self.ledger.record(tx)
        self.counts[name] = self.counts.get(name, 0) + 1
        self.invalidate(tx)
        if "JobPosted" in tx.events:
            job_id = int(tx.events["JobPosted"]["jobId"])
            self.live.add(job_id)
            self.touched[job_id] = set()
        if "UnitClaimed" in tx.events:
            event = tx.events["UnitClaimed"]
            self.touched[int(event["jobId"])].add(int(event["unitIndex"]))
        if "UnitAccepted" in tx.events:
            event = tx.events["UnitAccepted"]
            self.accepted.add((int(event["jobId"]), int(event["unitIndex"])))
        return tx

    def prune(self):
        """Forget settled units and jobs that can no longer change."""
        for job_id in list(self.live):
            info = self.jobs[job_id]
            for u in list(self.touched[job_id]):
                unit = self.unit(job_id, u)
                if unit.status == UnitStatus.Accepted or (
                    info["status"] != JobStatus.Open and set(unit.workers) == {ZERO_ADDRESS}
                ):
                    self.touched[job_id].discard(u)
            if info["status"] != JobStatus.Open and info["escrowRemaining"] == 0 and not self.touched[job_id]:
                self.live.discard(job_id)

    def open_jobs(self):
        return [j for j, info in self.jobs.items() if info["status"] == JobStatus.Open]

    # ------------------------------------------------------------ actions (None: nothing to do)

    def post(self):
        if len(self.open_jobs()) >= 3:
            return None
        stages, units = self.rng.randint(1, 3), self.rng.randint(1, 4)
        price = self.rng.randint(10**12, 10**15)
        params = job_params(
            self.coordinator,
            label=f"job-{self.attempt}",
            numStages=stages,
            unitsPerStage=units,
            pricePerUnit=price,
            claimDuration=self.rng.randint(300, 900),
        )
        value = escrow_for(stages, units, price)
        return self.market.postJob(params, {"from": self.rng.choice(self.requesters), "value": value})

    def register(self):
        candidates = [w for w in self.workers if not self.winfo[str(w)]["registered"]]
        if not candidates:
            return None
        stake = self.rng.randint(MIN_STAKE, 2 * MIN_STAKE)
        return self.market.registerWorker({"from": self.rng.choice(candidates), "value": stake})

    def add_stake(self):
        candidates = [w for w in self.workers if self.winfo[str(w)]["registered"]]
        if not candidates:
            return None
        amount = self.rng.randint(1, MIN_STAKE)
        return self.market.addStake({"from": self.rng.choice(candidates), "value": amount})

    def withdraw_stake(self):
        candidates = []
        for w in self.workers:
            info = self.winfo[str(w)]
            if info["registered"] and info["openClaims"] == 0 and info["stake"] > 0:
                candidates.append((w, info["stake"]))
        if not candidates:
            return None
        w, stake = self.rng.choice(candidates)
        amount = stake if stake <= MIN_STAKE or self.rng.random() < 0.4 else self.rng.randint(1, stake - MIN_STAKE)
        before = w.balance()
        tx = self.market.withdrawStake(amount, {"from": w})
        assert w.balance() == before + amount - gas_cost(tx)
        return tx

    def claim(self):
        options = []
        eligible = [
            w for w in self.workers if self.winfo[str(w)]["registered"] and self.winfo[str(w)]["stake"] >= MIN_STAKE
        ]
        for job_id in self.open_jobs():
            info = self.jobs[job_id]
            first = info["currentStage"] * info["unitsPerStage"]
            for u in range(first, first + info["unitsPerStage"]):
                if (job_id, u) in self.accepted:
                    continue
                unit = self.unit(job_id, u)
                assert unit.status != UnitStatus.Accepted
                slots = [0, 1] if unit.status == UnitStatus.Open else [2]
                states = [self._slot_state(unit, s) for s in slots]
                if "ambiguous" in states or "free" not in states:
                    continue
                expected = slots[states.index("free")]
                for w in eligible:
                    if str(w) in unit.workers:
                        continue
                    if unit.resets and self.market.isExcluded(job_id, u, w):
                        continue
                    options.append((job_id, u, w, expected))
        if not options:
            return None
        job_id, u, w, expected = self.rng.choice(options)
        tx = self.market.claimUnit(job_id, u, {"from": w})
        assert tx.events["UnitClaimed"]["slot"] == expected
        return tx

    def _slot_state(self, unit, slot):
        if unit.workers[slot] == ZERO_ADDRESS:
            return "free"
        if unit.results[slot] != ZERO_BYTES32:
            return "taken"
        if unit.deadlines[slot] < self.now - MARGIN:
            return "free"
        if unit.deadlines[slot] > self.now + MARGIN:
            return "taken"
        return "ambiguous"

    def submit(self):
        options = [
            (job_id, u, slot, unit)
            for job_id, u, unit in self.claimed_units()
            for slot in range(3)
            if unit.workers[slot] not in (ZERO_ADDRESS, self.flaky)
            and unit.results[slot] == ZERO_BYTES32
            and unit.deadlines[slot] > self.now + MARGIN
        ]
        if not options:
            return None
        job_id, u, slot, unit = self.rng.choice(options)
        good = digest(f"good-{job_id}-{u}-{unit.resets}")
        wrong = 0.45 if slot == 2 else 0.25  # arbiters err more often, so that resets happen too
        result = digest(f"bad-{job_id}-{u}-{self.attempt}") if self.rng.random() < wrong else good
        tx = self.market.submitResult(job_id, u, result, {"from": self.by_address[unit.workers[slot]]})
        # the outcome the rules predict
        events = {e.name for e in tx.events} - {"ResultSubmitted"}
        if slot == 2:
            assert events == ({"UnitAccepted", "WorkerSlashed"} if result in unit.results[:2] else {"UnitReset"})
        else:
            other = unit.results[1 - slot]
            if other == ZERO_BYTES32:
                assert events == set()
            else:
                assert events == ({"UnitAccepted"} if other == result else {"UnitDisputed"})
        return tx

    def expire(self):
        options = [
            (job_id, u, slot)
            for job_id, u, unit in self.claimed_units()
            for slot in range(3)
            if unit.workers[slot] != ZERO_ADDRESS
            and unit.results[slot] == ZERO_BYTES32
            and unit.deadlines[slot] < self.now - MARGIN
        ]
        if not options:
            return None
        job_id, u, slot = self.rng.choice(options)
        tx = self.market.expireClaim(job_id, u, slot, {"from": self.rng.choice(self.accounts)})
        assert "ClaimExpired" in tx.events
        return tx

    def release(self):
        options = []
        for job_id, u, unit in self.claimed_units():
            info = self.jobs[job_id]
            if (
                info["status"] == JobStatus.Cancelled
                and info["lastClaimDeadline"] < self.now - MARGIN
                and unit.status != UnitStatus.Accepted
            ):
                options += [(job_id, u, s) for s in range(3) if unit.results[s] != ZERO_BYTES32]
        if not options:
            return None
        job_id, u, slot = self.rng.choice(options)
        tx = self.market.expireClaim(job_id, u, slot, {"from": self.rng.choice(self.accounts)})
        assert "ClaimReleased" in tx.events
        return tx

    def checkpoint(self):
        ready = [
            (job_id, self.jobs[job_id]["currentStage"])
            for job_id in self.open_jobs()
            if self.jobs[job_id]["acceptedInStage"] == self.jobs[job_id]["unitsPerStage"]
        ]
        if not ready:
            return None
        job_id, stage = self.rng.choice(ready)
        return self.market.commitCheckpoint(job_id, stage, digest(f"ckpt-{job_id}-{stage}"), {"from": self.coordinator})

    def cancel(self):
        jobs = self.open_jobs()
        if not jobs:
            return None
        job_id = self.rng.choice(jobs)
        return self.market.cancelJob(job_id, {"from": self.jobs[job_id]["requester"]})

    def refund(self):
        options = [
            (job_id, info["requester"])
            for job_id, info in self.jobs.items()
            if info["escrowRemaining"]
            and (
                info["status"] == JobStatus.Finished
                or (info["status"] == JobStatus.Cancelled and info["lastClaimDeadline"] < self.now - MARGIN)
            )
        ]
        if not options:
            return None
        job_id, requester = self.rng.choice(options)
        return self.market.refund(job_id, {"from": requester})

    def withdraw(self):
        candidates = [a for a in self.accounts if self.balance_of(a) > 0]
        if not candidates:
            return None
        account = self.rng.choice(candidates)
        amount, before = self.balance_of(account), account.balance()
        tx = self.market.withdraw({"from": account})
        assert account.balance() == before + amount - gas_cost(tx)
        assert self.market.balanceOf(account) == 0
        return tx

    def sleep(self):
        self.chain.sleep(self.rng.choice([30, 200, 400, 950]))
        self.chain.mine()
        return "slept"

    # ------------------------------------------------------------ driving

    def step(self):
        names = list(self.WEIGHTS)
        weights = [self.WEIGHTS[n] for n in names]
        self.refresh()
        while True:
            self.attempt += 1
            name = self.rng.choices(names, weights)[0]
            tx = getattr(self, name)()
            if tx is None:
                continue
            if tx == "slept":
                self.counts["sleep"] = self.counts.get("sleep", 0) + 1
            else:
                self.done(name, tx)
            if self.attempt % 10 == 0:
                self.prune()
            return name

    def drain(self):
        """Cancel what is open, let every claim lapse, release, refund and withdraw everything."""
        self.refresh()
        for job_id in self.open_jobs():
            self.done("cancel", self.market.cancelJob(job_id, {"from": self.jobs[job_id]["requester"]}))
        self.chain.sleep(1000)
        self.chain.mine()
        self.refresh()
        for job_id, u, unit in self.claimed_units():
            for slot in range(3):
                if unit.workers[slot] != ZERO_ADDRESS and (
                    unit.results[slot] == ZERO_BYTES32 or unit.status != UnitStatus.Accepted
                ):
                    self.done("expire", self.market.expireClaim(job_id, u, slot, {"from": self.coordinator}))
        for job_id in range(1, int(self.market.jobCount()) + 1):
            info = job_info(self.market, job_id)
            if info["escrowRemaining"]:
                self.done("refund", self.market.refund(job_id, {"from": info["requester"]}))
        for w in self.workers:
            info = worker_info(self.market, w)
            assert info["openClaims"] == 0
            if info["stake"]:
                self.done("withdraw_stake", self.market.withdrawStake(info["stake"], {"from": w}))
        for account in self.accounts:
            if self.market.balanceOf(account):
                self.done("withdraw", self.market.withdraw({"from": account}))


@pytest.mark.parametrize("seed", [6])
def test_random_scenario_conserves_value(accounts, chain, seed):
    market = deploy_market(accounts[0])
    scenario = Scenario(market, accounts, chain, seed)
    initial = {str(a): a.balance() for a in accounts}
    for step in range(STEPS):
        scenario.step()
        # the totals and the ledger after every step; the per-account and per-job sums every few steps (one call each)
        assert_conserved(market, accounts, scenario.ledger, parts=step % PARTS_EVERY == 0)

    print(f"seed {seed}: actions {sorted(scenario.counts.items())}; events {sorted(scenario.ledger.events.items())}")
    # the scenario exercised every path
    for name in ("claim", "submit", "checkpoint", "withdraw", "refund", "expire", "withdraw_stake"):
        assert scenario.counts.get(name, 0) > 0, (name, sorted(scenario.counts.items()))
    for event in ("UnitAccepted", "UnitDisputed", "WorkerSlashed", "UnitReset", "JobFinished", "Refunded"):
        assert scenario.ledger.events.get(event, 0) > 0, (event, sorted(scenario.ledger.events.items()))
    assert scenario.ledger.paid > 0 and scenario.ledger.slashed > 0

    scenario.drain()
    assert_conserved(market, accounts, scenario.ledger)
    # everything that came in went out: the contract is empty and every account got back all it put in, less gas
    assert market.balance() == 0
    assert market.totalStaked() == market.totalEscrow() == market.totalOwed() == 0
    ledger = scenario.ledger
    assert ledger.total_in == ledger.stake_out + ledger.withdrawn
    assert sum(a.balance() for a in accounts) == sum(initial.values()) - scenario.gas
