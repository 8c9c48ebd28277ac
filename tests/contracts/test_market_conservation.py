"""ComputeMarket conservation of value: a seeded random scenario of many actions (stakes, jobs, claims, honest and
wrong commitments, reveals, publications, arbiter draws, arbitration right and wrong, resets, claim and reveal
expiries with their forfeits, arbiters that never answer, dispute timeouts, lonely-commitment releases,
checkpoints, cancellations, releases, refunds, withdrawals), with the money invariant and the ledger identity
asserted after every step, then everything drained back out of the contract."""

import random
from typing import ClassVar

import pytest
from market_helpers import (
    ARBITER_SLOT,
    MIN_STAKE,
    ZERO_ADDRESS,
    ZERO_BYTES32,
    JobStatus,
    Ledger,
    UnitInfo,
    UnitStatus,
    assert_conserved,
    commitment,
    deploy_market,
    digest,
    escrow_for,
    expected_draw,
    gas_cost,
    job_info,
    job_params,
    tag,
    unit_info,
    worker_info,
)

STEPS = 400
PARTS_EVERY = 5
MARGIN = 5  # seconds: deadlines closer than this to chain.time() are left alone (the next block's time may vary)


class Scenario:
    """Picks random actions that the rules allow (decided from the contract's views) and asserts they succeed with
    the outcome the rules predict.

    Views are read once per step and cached (`refresh`); only jobs that can still change and units that were ever
    claimed are read at all, so a step costs tens of calls, not hundreds. The digest each replica committed to is
    remembered here (the chain only holds its commitment), so that it can reveal and publish it.
    """

    WEIGHTS: ClassVar[dict[str, int]] = {
        # the steps of a unit weigh more than new claims, so that units get through before their windows close
        "claim": 20,
        "commit_honest": 30,
        "commit_wrong": 15,
        "reveal": 50,
        "publish": 70,
        "draw": 12,
        "arbitrate_honest": 30,
        "arbitrate_wrong": 30,
        "expire_dispute": 6,
        "checkpoint": 10,
        "withdraw": 5,
        "post": 3,
        "sleep": 4,
        "expire": 8,
        "expire_reveal": 8,
        "release": 5,
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
        self.flaky = str(accounts[9])  # claims but never commits (nor arbitrates when drawn): its claims expire
        self.silent = str(accounts[7])  # commits but never reveals nor publishes: its reveal windows expire
        self.by_address = {str(a): a for a in accounts}
        self.ledger = Ledger()
        self.gas = 0
        self.attempt = 0
        self.counts: dict[str, int] = {}
        self.live: set[int] = set()  # jobs that can still change
        self.touched: dict[int, set[int]] = {}  # units ever claimed and not settled, per live job
        self.accepted: set[tuple[int, int]] = set()
        self.committed: dict[tuple[int, int, int, str], bytes] = {}  # (job, unit, resets, worker) -> digest
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
                self._units[key] = UnitInfo(
                    UnitStatus.Open, 0, [ZERO_ADDRESS] * 3, [0] * 3, [ZERO_BYTES32] * 2, [False, False], 0, b""
                )
        return self._units[key]

    def digest_of(self, job_id, u, unit: UnitInfo, slot) -> bytes:
        """The digest replica `slot` committed to (the scenario remembers it; the chain has only its seal)."""
        return self.committed[(job_id, u, unit.resets, unit.workers[slot])]

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

    def check_claims(self):
        """Each worker's openClaims is the number of slots it holds on units not yet Accepted (an expired claim
        counts until it is closed); settled and forgotten units hold none."""
        held = {str(w): 0 for w in self.workers}
        for _, _, unit in self.claimed_units():
            if unit.status != UnitStatus.Accepted:
                for w in unit.workers:
                    if w != ZERO_ADDRESS:
                        held[w] += 1
        assert {w: self.winfo[w]["openClaims"] for w in held} == held

    def open_jobs(self):
        return [j for j, info in self.jobs.items() if info["status"] == JobStatus.Open]

    # ------------------------------------------------------------ actions (None: nothing to do)

    def post(self):
        if len(self.open_jobs()) >= 2:
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
        stake = self.rng.randint(MIN_STAKE, 4 * MIN_STAKE)  # several open claims need minStake each
        return self.market.registerWorker({"from": self.rng.choice(candidates), "value": stake})

    def add_stake(self):
        candidates = [w for w in self.workers if self.winfo[str(w)]["registered"]]
        if not candidates:
            return None
        # mostly the workers that cannot claim (slashed or exited), so that enough of them keep working
        low = [w for w in candidates if self.winfo[str(w)]["stake"] < MIN_STAKE]
        w = self.rng.choice(low if low and self.rng.random() < 0.8 else candidates)
        amount = self.rng.randint(1, 2 * MIN_STAKE)
        return self.market.addStake({"from": w, "value": amount})

    def withdraw_stake(self):
        candidates = []
        for w in self.workers:
            info = self.winfo[str(w)]
            if info["registered"] and info["openClaims"] == 0 and info["stake"] > 0:
                candidates.append((w, info["stake"]))
        if not candidates:
            return None
        w, stake = self.rng.choice(candidates)
        # mostly what is above minStake; sometimes the whole stake (an exit)
        partial = stake > MIN_STAKE and self.rng.random() < 0.75
        amount = self.rng.randint(1, stake - MIN_STAKE) if partial else stake
        before = w.balance()
        tx = self.market.withdrawStake(amount, {"from": w})
        assert w.balance() == before + amount - gas_cost(tx)
        return tx

    def claim(self):
        options = []
        # stake for one more open claim (issue 13, M3)
        eligible = [
            w
            for w in self.workers
            if self.winfo[str(w)]["registered"]
            and self.winfo[str(w)]["stake"] >= MIN_STAKE * (self.winfo[str(w)]["openClaims"] + 1)
        ]
        for job_id in self.open_jobs():
            info = self.jobs[job_id]
            first = info["currentStage"] * info["unitsPerStage"]
            for u in range(first, first + info["unitsPerStage"]):
                if (job_id, u) in self.accepted:
                    continue
                unit = self.unit(job_id, u)
                assert unit.status != UnitStatus.Accepted
                if unit.status != UnitStatus.Open:
                    continue  # UnitNotClaimable: Revealing, or Disputed (its arbiter is drawn)
                slots = [0, 1]
                states = [self._slot_state(unit, s) for s in slots]
                if "ambiguous" in states or "free" not in states:
                    continue
                expected = slots[states.index("free")]
                for w in eligible:
                    if str(w) in unit.workers:
                        continue
                    if self.market.isExcluded(job_id, u, w):
                        continue
                    options.append((job_id, u, w, expected))
        if not options:
            return None
        job_id, u, w, expected = self.rng.choice(options)
        unit = self.unit(job_id, u)
        tx = self.market.claimUnit(job_id, u, {"from": w})
        assert tx.events["UnitClaimed"]["slot"] == expected
        events = [e.name for e in tx.events]
        if unit.workers[expected] != ZERO_ADDRESS:  # an expired claim taken over: it forfeits
            assert events == ["ClaimExpired", "StakeForfeited", "UnitClaimed"]
            other = 1 - expected
            beneficiary = unit.workers[other] if unit.committed(other) else ZERO_ADDRESS
            assert str(tx.events["StakeForfeited"]["beneficiary"]) == beneficiary
        else:
            assert events == ["UnitClaimed"]
        return tx

    def _slot_state(self, unit, slot):
        if unit.workers[slot] == ZERO_ADDRESS:
            return "free"
        if unit.committed(slot):
            return "taken"
        if unit.deadlines[slot] < self.now - MARGIN:
            return "free"
        if unit.deadlines[slot] > self.now + MARGIN:
            return "taken"
        return "ambiguous"

    def _commit(self, honest):
        options = [
            (job_id, u, slot, unit)
            for job_id, u, unit in self.claimed_units()
            for slot in (0, 1)
            if unit.workers[slot] not in (ZERO_ADDRESS, self.flaky)
            and not unit.committed(slot)
            and unit.deadlines[slot] > self.now + MARGIN
        ]
        if not options:
            return None
        job_id, u, slot, unit = self.rng.choice(options)
        worker = unit.workers[slot]
        result = digest(f"good-{job_id}-{u}") if honest else digest(f"bad-{job_id}-{u}-{self.attempt}")
        value = commitment(worker, tag(job_id, u, unit.resets, result))
        tx = self.market.commitResult(job_id, u, value, {"from": self.by_address[worker]})
        self.committed[(job_id, u, unit.resets, worker)] = result
        events = [e.name for e in tx.events]
        assert events == (["ResultCommitted", "RevealOpened"] if unit.committed(1 - slot) else ["ResultCommitted"])
        return tx

    def commit_honest(self):
        return self._commit(honest=True)

    def commit_wrong(self):
        return self._commit(honest=False)

    def _revealing(self):
        """(job, unit, info) of the units whose reveal window is surely still open."""
        return [
            (job_id, u, unit)
            for job_id, u, unit in self.claimed_units()
            if unit.status == UnitStatus.Revealing and unit.reveal_deadline > self.now + MARGIN
        ]

    def reveal(self):
        options = [
            (job_id, u, slot, unit)
            for job_id, u, unit in self._revealing()
            for slot in (0, 1)
            if not unit.revealed[slot] and unit.workers[slot] != self.silent
        ]
        if not options:
            return None
        job_id, u, slot, unit = self.rng.choice(options)
        result = self.digest_of(job_id, u, unit, slot)
        worker = self.by_address[unit.workers[slot]]
        tx = self.market.revealResult(job_id, u, tag(job_id, u, unit.resets, result), {"from": worker})
        events = [e.name for e in tx.events]
        if unit.revealed[1 - slot] and self.digest_of(job_id, u, unit, 1 - slot) != result:
            assert events == ["ResultRevealed", "UnitDisputed", "ArbiterDrawScheduled"]
        else:
            assert events == ["ResultRevealed"]
        return tx

    def publish(self):
        """A replica publishes the agreed digest once the other revealed it (revealing its own tag if needed)."""
        options = [
            (job_id, u, slot, unit)
            for job_id, u, unit in self._revealing()
            for slot in (0, 1)
            if unit.revealed[1 - slot]
            and unit.workers[slot] != self.silent
            and self.digest_of(job_id, u, unit, 0) == self.digest_of(job_id, u, unit, 1)
        ]
        if not options:
            return None
        job_id, u, slot, unit = self.rng.choice(options)
        result = self.digest_of(job_id, u, unit, slot)
        tx = self.market.publishResult(job_id, u, result, {"from": self.by_address[unit.workers[slot]]})
        events = [e.name for e in tx.events]
        assert events == (["UnitAccepted"] if unit.revealed[slot] else ["ResultRevealed", "UnitAccepted"])
        assert bytes(tx.events["UnitAccepted"]["resultDigest"]) == result
        return tx

    def _arbitrate(self, honest):
        options = [
            (job_id, u, unit)
            for job_id, u, unit in self.claimed_units()
            if unit.status == UnitStatus.Disputed
            and unit.workers[ARBITER_SLOT] not in (ZERO_ADDRESS, self.flaky)
            and unit.deadlines[ARBITER_SLOT] > self.now + MARGIN
        ]  # only the drawn arbiter submits
        if not options:
            return None
        job_id, u, unit = self.rng.choice(options)
        replicas = [self.digest_of(job_id, u, unit, s) for s in (0, 1)]
        good = digest(f"good-{job_id}-{u}")
        if honest:
            result = good
        elif self.rng.random() < 0.5 and any(r != good for r in replicas):
            result = next(r for r in replicas if r != good)  # siding with a wrong replica (collusion)
        else:
            result = digest(f"bad-{job_id}-{u}-{self.attempt}")
        arbiter = self.by_address[unit.workers[ARBITER_SLOT]]
        tx = self.market.submitArbitration(job_id, u, result, {"from": arbiter})
        events = [e.name for e in tx.events]
        if result in replicas:
            assert events == ["ArbitrationSubmitted", "UnitAccepted", "WorkerSlashed"]
            odd = unit.workers[1 - replicas.index(result)]
            assert str(tx.events["WorkerSlashed"]["worker"]) == odd
        else:
            assert events == ["ArbitrationSubmitted", "UnitReset"]
        return tx

    def arbitrate_honest(self):
        return self._arbitrate(honest=True)

    def arbitrate_wrong(self):
        return self._arbitrate(honest=False)

    def draw(self):
        """Draw the arbiter of a Disputed unit of an Open job (anyone may); the outcome is predicted by the mirror
        of the contract's rule (expected_draw): a drawn worker, or the draw scheduled again."""
        options = [
            (job_id, u, unit)
            for job_id, u, unit in self.claimed_units()
            if unit.status == UnitStatus.Disputed
            and unit.workers[ARBITER_SLOT] == ZERO_ADDRESS
            and self.jobs[job_id]["status"] == JobStatus.Open
            and unit.dispute_deadline > self.now + MARGIN
        ]
        if not options:
            return None
        job_id, u, unit = self.rng.choice(options)
        expected = expected_draw(self.market, job_id, u)
        tx = self.market.drawArbiter(job_id, u, {"from": self.rng.choice(self.accounts)})
        events = [e.name for e in tx.events]
        if expected is None:
            assert events == ["ArbiterDrawScheduled"]
        else:
            assert events == ["ArbiterDrawn"] and str(tx.events["ArbiterDrawn"]["arbiter"]) == expected
            assert expected not in unit.workers[:2]
        return tx

    def expire_dispute(self):
        """Close a dispute past its deadline (with no arbiter, or one whose deadline passed): both replicas are
        released and excluded, an expired arbiter forfeits."""
        options = [
            (job_id, u, unit)
            for job_id, u, unit in self.claimed_units()
            if unit.status == UnitStatus.Disputed
            and unit.dispute_deadline < self.now - MARGIN
            and (unit.workers[ARBITER_SLOT] == ZERO_ADDRESS or unit.deadlines[ARBITER_SLOT] < self.now - MARGIN)
        ]
        if not options:
            return None
        job_id, u, unit = self.rng.choice(options)
        tx = self.market.expireDispute(job_id, u, {"from": self.rng.choice(self.accounts)})
        events = [e.name for e in tx.events]
        if unit.workers[ARBITER_SLOT] == ZERO_ADDRESS:
            assert events == ["DisputeExpired"]
        elif self.jobs[job_id]["status"] == JobStatus.Open:
            assert events == ["ClaimExpired", "StakeForfeited", "DisputeExpired"]
        else:
            assert events == ["ClaimExpired", "DisputeExpired"]
        return tx

    def expire(self):
        """Close a claim that expired without a commitment (replica) or result (arbiter): it forfeits in an Open
        job, and an arbiter's expiry schedules a new draw. Not on an Accepted unit: its arbiter's claim is closed
        already (see test_arbiter_claim_of_accepted_unit_stays_closed)."""
        options = [
            (job_id, u, slot)
            for job_id, u, unit in self.claimed_units()
            if unit.status != UnitStatus.Accepted
            for slot in range(3)
            if unit.workers[slot] != ZERO_ADDRESS
            and not unit.committed(slot)
            and unit.deadlines[slot] < self.now - MARGIN
        ]
        if not options:
            return None
        job_id, u, slot = self.rng.choice(options)
        unit = self.unit(job_id, u)
        tx = self.market.expireClaim(job_id, u, slot, {"from": self.rng.choice(self.accounts)})
        expected = ["ClaimExpired"]
        if self.jobs[job_id]["status"] == JobStatus.Open:
            expected.append("StakeForfeited")
        if slot == ARBITER_SLOT and unit.status == UnitStatus.Disputed:
            expected.append("ArbiterDrawScheduled")
        assert [e.name for e in tx.events] == expected
        return tx

    def expire_reveal(self):
        options = [
            (job_id, u, unit)
            for job_id, u, unit in self.claimed_units()
            if unit.status == UnitStatus.Revealing and unit.reveal_deadline < self.now - MARGIN
        ]
        if not options:
            return None
        job_id, u, unit = self.rng.choice(options)
        tx = self.market.expireReveal(job_id, u, {"from": self.rng.choice(self.accounts)})
        event = tx.events["RevealExpired"]
        both = all(unit.revealed)  # revealed and equal (Revealing), yet nobody published
        excluded = tuple(both or not r for r in unit.revealed)
        assert (event["excluded0"], event["excluded1"]) == excluded
        assert int(event["resets"]) == unit.resets + 1
        # each excluded replica forfeits, to the other if that one is not excluded, else to the job
        forfeits = (
            [(str(e["worker"]), str(e["beneficiary"])) for e in tx.events["StakeForfeited"]] if any(excluded) else []
        )
        assert forfeits == [
            (unit.workers[i], ZERO_ADDRESS if excluded[1 - i] else unit.workers[1 - i]) for i in (0, 1) if excluded[i]
        ]
        return tx

    def release(self):
        """A committed replica's claim released: in a cancelled job past its last deadline, or (any job) on a unit
        still Open one claimDuration after the claim's deadline (the lonely commitment of issue 13, M1)."""
        options = []
        for job_id, u, unit in self.claimed_units():
            info = self.jobs[job_id]
            if (
                info["status"] == JobStatus.Cancelled
                and info["lastClaimDeadline"] < self.now - MARGIN
                and unit.status != UnitStatus.Accepted
            ):
                options += [(job_id, u, s) for s in (0, 1) if unit.committed(s)]
            elif unit.status == UnitStatus.Open:
                options += [
                    (job_id, u, s)
                    for s in (0, 1)
                    if unit.committed(s) and unit.deadlines[s] + info["claimDuration"] < self.now - MARGIN
                ]
        if not options:
            return None
        job_id, u, slot = self.rng.choice(options)
        tx = self.market.expireClaim(job_id, u, slot, {"from": self.rng.choice(self.accounts)})
        assert [e.name for e in tx.events] == ["ClaimReleased"]
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
        self.chain.sleep(self.rng.choice([20, 100, 250, 600]))
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
        """Cancel what is open, let every claim and reveal window lapse, expire, release, refund and withdraw
        everything."""
        self.refresh()
        for job_id in self.open_jobs():
            self.done("cancel", self.market.cancelJob(job_id, {"from": self.jobs[job_id]["requester"]}))
        self.chain.sleep(1000)  # claimDuration <= 900: past every claim deadline and reveal window
        self.chain.mine()
        self.refresh()
        for job_id, u, unit in self.claimed_units():
            if unit.status == UnitStatus.Accepted:
                continue  # its claims were closed by the acceptance
            if unit.status == UnitStatus.Revealing:
                self.done("expire_reveal", self.market.expireReveal(job_id, u, {"from": self.coordinator}))
                unit = self.unit(job_id, u)
            if unit.status == UnitStatus.Disputed and unit.dispute_deadline < self.chain.time() - MARGIN:
                self.done("expire_dispute", self.market.expireDispute(job_id, u, {"from": self.coordinator}))
                unit = self.unit(job_id, u)
            for slot in range(3):
                if unit.workers[slot] != ZERO_ADDRESS:
                    name = "release" if unit.committed(slot) else "expire"
                    self.done(name, self.market.expireClaim(job_id, u, slot, {"from": self.coordinator}))
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
        name = scenario.step()
        # the totals and the ledger after every step; the per-account and per-job sums, and the open claims, every
        # few steps (one call each)
        parts = step % PARTS_EVERY == 0
        try:
            assert_conserved(market, accounts, scenario.ledger, parts=parts)
        except AssertionError as exc:
            raise AssertionError(f"after step {step} ({name}): {exc}") from exc
        if parts:
            scenario.check_claims()

    print(f"seed {seed}: actions {sorted(scenario.counts.items())}; events {sorted(scenario.ledger.events.items())}")
    # the scenario exercised every path
    for name in (
        "claim",
        "commit_honest",
        "commit_wrong",
        "reveal",
        "publish",
        "arbitrate_honest",
        "arbitrate_wrong",
        "checkpoint",
        "withdraw",
        "refund",
        "expire",
        "expire_reveal",
        "withdraw_stake",
        "draw",
        "release",
    ):
        assert scenario.counts.get(name, 0) > 0, (name, sorted(scenario.counts.items()))
    for event in (
        "RevealOpened",
        "UnitAccepted",
        "UnitDisputed",
        "WorkerSlashed",
        "UnitReset",
        "RevealExpired",
        "ClaimExpired",
        "JobFinished",
        "Refunded",
        "ArbiterDrawScheduled",
        "ArbiterDrawn",
        "StakeForfeited",
    ):
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
