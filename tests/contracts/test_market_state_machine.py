"""ComputeMarket as a hypothesis state machine, run against brownie's chain: the market is deployed with six staked
workers and two open jobs once, and the chain is reverted to that snapshot before every example (hypothesis directly:
brownie 1.22.2's compiled `state_machine` helper rejects its own generated class, see test_task_state_machine).

The valid actions are those of the seeded conservation scenario (test_market_conservation.Scenario: stakes, jobs,
claims, honest and wrong commitments, reveals, publications, draws, arbitration, expiries, releases, checkpoints,
cancellations, refunds, withdrawals, time travel), each of which predicts its own outcome from the contract's
views; here hypothesis chooses the action and every choice inside it (`DrawnChoices`), so a failure shrinks to a
short step sequence. A hostile rule sends actions the contract must refuse (unknown job, unit out of range,
claiming a unit twice, committing without a claim, a reveal that does not open its commitment, expiring a reveal
window early, arbitrating without being drawn, withdrawing stake with open claims or a zero balance, refunding an
open job, a checkpoint of an incomplete stage or from a non-coordinator, a cancel by a non-requester, a post with
the wrong escrow), each with its expected error, and checks that the views it touches did not change.

Invariants after every step:
- value: balance == totalStaked + totalEscrow + totalOwed, each total equal to the sum of its parts (stakes,
  withdrawable balances, jobs' escrow; from views refreshed whenever an event names them, and re-read in full
  every few steps), and to what the events say flowed in and out (market_helpers.Ledger);
- phases only move forward: a job leaves Open only for Finished or Cancelled, never comes back, its stage never
  decreases; a unit's attempt (resets) never decreases and, within an attempt, its status only advances (the one
  documented exception: a cancelled job's release of an unverifiable unit);
- a unit is resolved once: at most one UnitAccepted per unit, and its accepted digest never changes;
- every open claim is backed: stake >= minStake * openClaims, and openClaims equals the slots a worker holds.
"""

from typing import ClassVar

import brownie
from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from market_helpers import (
    MIN_STAKE,
    ZERO_ADDRESS,
    JobStatus,
    UnitStatus,
    assert_conserved,
    deploy_market,
    digest,
    escrow_for,
    job_info,
    job_params,
    unit_info,
    worker_info,
)
from stateful_helpers import StepStats, revert_to_snapshot, reverts_named
from test_market_conservation import Scenario

# Steps of the whole test (about 110 ms a step on the shared 2-core machine); examples run in batches of
# max_examples until this many steps ran, since hypothesis ends some examples after a few steps.
TARGET_STEPS = 2_000
SETTINGS = {
    "max_examples": 50,
    "stateful_step_count": 60,
    "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    "deadline": None,
    "verbosity": Verbosity.normal,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
FULL_READ_EVERY = 5  # steps between full re-reads of every part (one call per account and job)

# the scenario's actions, repeated by weight (hypothesis samples uniformly from the list)
ACTIONS = st.sampled_from([name for name, weight in Scenario.WEIGHTS.items() for _ in range(max(1, weight // 5))])
# what an action with nothing to do falls back to: the furthest step of a unit first, then new work, then time
PROGRESS = [
    "publish",
    "reveal",
    "arbitrate_honest",
    "arbitrate_wrong",
    "draw",
    "commit_honest",
    "commit_wrong",
    "checkpoint",
    "claim",
    "expire_reveal",
    "expire_dispute",
    "expire",
    "release",
    "refund",
    "withdraw",
    "sleep",
]
HOSTILE = st.sampled_from(
    [
        "unknown_job",
        "unit_out_of_range",
        "claim_twice",
        "commit_not_claimant",
        "reveal_wrong_tag",
        "expire_reveal_early",
        "arbitrate_not_drawn",
        "withdraw_stake_with_claims",
        "withdraw_nothing",
        "refund_open_job",
        "checkpoint_early",
        "cancel_not_requester",
        "post_wrong_escrow",
    ]
)
STATUS_RANK = {UnitStatus.Open: 0, UnitStatus.Revealing: 1, UnitStatus.Disputed: 2, UnitStatus.Accepted: 3}


class DrawnChoices:
    """The few methods of random.Random the scenario uses, each choice drawn by hypothesis."""

    def __init__(self, data):
        self.data = data

    def choice(self, options):
        return self.data.draw(st.sampled_from(list(options)))

    def randint(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def random(self) -> float:
        return self.data.draw(st.integers(0, 999)) / 1000


class MarketMachine(RuleBasedStateMachine):
    """One example: the chain reverted to the deployed market, then rules; `configure` sets the class context."""

    accounts: ClassVar[list]

    @classmethod
    def configure(cls, accounts, stats: StepStats):
        """Deploy the market with six staked workers and two open jobs: every example starts from there."""
        cls.accounts = list(accounts)
        cls.market = deploy_market(accounts[0])
        cls.stats = stats
        cls.setup_txs = [cls.market.registerWorker({"from": w, "value": 3 * MIN_STAKE}) for w in accounts[2:8]]
        for requester, label in ((accounts[0], "a"), (accounts[8], "b")):
            params = job_params(accounts[1], label=label, numStages=2, unitsPerStage=2)
            value = escrow_for(2, 2, params[7])
            cls.setup_txs.append(cls.market.postJob(params, {"from": requester, "value": value}))

    def __init__(self):
        super().__init__()
        revert_to_snapshot()
        self.stats.examples += 1
        self.scenario = Scenario(self.market, self.accounts, brownie.chain, seed=0)
        for tx in self.setup_txs:  # the snapshot's workers and jobs, as if the scenario had made them
            self.scenario.done("setup", tx)
        self.steps = 0
        self.accepted_events: dict[tuple[int, int], int] = {}
        self.touched_views: tuple | None = None  # views a hostile step read before it: must be unchanged after
        self.jobs_seen: dict[int, dict] = {}  # job -> (status, stage) last seen
        self.units_seen: dict[tuple[int, int], tuple] = {}  # unit -> (resets, status, accepted digest) last seen

    # ------------------------------------------------------------ valid actions (the scenario's)

    @rule(name=ACTIONS, data=st.data())
    def rule_act(self, name, data):
        """One of the scenario's actions; it predicts its outcome and asserts it. With nothing to do for it (no unit
        in that state, say) the first action of PROGRESS that has something to do runs instead (sleep always has):
        hypothesis disables random rules and draws small values often, and this keeps units moving."""
        s = self.scenario
        s.rng = DrawnChoices(data)
        s.refresh()
        for action in [name, *(n for n in PROGRESS if n != name)]:
            s.attempt += 1
            tx = getattr(s, action)()
            if tx is not None:
                break
        name = action
        self.steps += 1
        self.stats.steps += 1
        self.stats.count(name)
        if tx == "slept":
            return
        s.done(name, tx)
        if "UnitAccepted" in tx.events:
            for event in tx.events["UnitAccepted"]:
                key = (int(event["jobId"]), int(event["unitIndex"]))
                self.accepted_events[key] = self.accepted_events.get(key, 0) + 1
        if self.steps % 10 == 0:
            s.prune()

    # ------------------------------------------------------------ hostile actions

    def views(self, job_id=None, unit=None, accounts=()):
        """What a refused transaction must leave unchanged: the contract's balance and the views it targets (the
        totals are held to the event ledger by the invariant, which a refused transaction does not move)."""
        m = self.market
        out = [int(m.balance())]
        if job_id and job_id <= int(m.jobCount()):
            out.append(job_info(m, job_id))
            if unit is not None:
                out.append(unit_info(m, job_id, unit))
        out += [(worker_info(m, a), int(m.balanceOf(a))) for a in accounts]
        return tuple(out)

    def refused(self, error: str, call, *args, job_id=None, unit=None, accounts=()):
        before = self.views(job_id, unit, accounts)
        with reverts_named(error):
            call(*args)
        assert self.views(job_id, unit, accounts) == before, f"a refused {error} changed the market"
        self.steps += 1
        self.stats.steps += 1
        self.stats.reverted += 1
        self.stats.count(f"x{error}")

    @rule(kind=HOSTILE, data=st.data())
    def rule_hostile(self, kind, data):
        s, m = self.scenario, self.market
        s.refresh()
        pick = DrawnChoices(data)
        requester, coordinator, outsider = s.requesters[0], s.coordinator, s.requesters[1]
        open_jobs = s.open_jobs()
        claimed = [(j, u, unit) for j, u, unit in s.claimed_units() if unit.status != UnitStatus.Accepted]
        if kind == "unit_out_of_range" and open_jobs:
            j = pick.choice(open_jobs)
            info = s.jobs[j]
            last = info["numStages"] * info["unitsPerStage"]
            worker = pick.choice(s.workers)
            return self.refused("UnitOutOfRange", m.claimUnit, j, last, {"from": worker}, job_id=j)
        if kind == "claim_twice":
            options = [
                (j, u, w)
                for j, u, unit in claimed
                if s.jobs[j]["status"] == JobStatus.Open and unit.status == UnitStatus.Open
                for w in unit.workers[:2]
                if w != ZERO_ADDRESS
                and s.winfo[w]["stake"] >= MIN_STAKE * (s.winfo[w]["openClaims"] + 1)
                and s.jobs[j]["currentStage"] == u // s.jobs[j]["unitsPerStage"]
            ]
            if options:
                j, u, w = pick.choice(options)
                return self.refused(
                    "AlreadyWorkedOn", m.claimUnit, j, u, {"from": s.by_address[w]}, job_id=j, unit=u, accounts=[w]
                )
        if kind == "commit_not_claimant" and claimed:
            j, u, _ = pick.choice(claimed)
            return self.refused(
                "NotClaimant", m.commitResult, j, u, digest("sealed"), {"from": outsider}, job_id=j, unit=u
            )
        if kind == "reveal_wrong_tag":
            options = [
                (j, u, unit.workers[slot])
                for j, u, unit in s._revealing()
                for slot in (0, 1)
                if not unit.revealed[slot]
            ]
            if options:
                j, u, w = pick.choice(options)
                return self.refused(
                    "WrongReveal",
                    m.revealResult,
                    j,
                    u,
                    digest("not my tag"),
                    {"from": s.by_address[w]},
                    job_id=j,
                    unit=u,
                )
        if kind == "expire_reveal_early":
            options = [(j, u) for j, u, _ in s._revealing()]
            if options:
                j, u = pick.choice(options)
                return self.refused("RevealNotExpired", m.expireReveal, j, u, {"from": outsider}, job_id=j, unit=u)
            options = [(j, u) for j, u, unit in claimed if unit.status == UnitStatus.Open]
            if options:
                j, u = pick.choice(options)
                return self.refused("NotRevealing", m.expireReveal, j, u, {"from": outsider}, job_id=j, unit=u)
        if kind == "arbitrate_not_drawn":
            options = [(j, u, unit) for j, u, unit in claimed if unit.status == UnitStatus.Disputed]
            if options:
                j, u, unit = pick.choice(options)
                replica = s.by_address[pick.choice(unit.workers[:2])]
                return self.refused(
                    "NotClaimant", m.submitArbitration, j, u, digest("verdict"), {"from": replica}, job_id=j, unit=u
                )
        if kind == "withdraw_stake_with_claims":
            busy = [w for w in s.workers if s.winfo[str(w)]["openClaims"] > 0]
            if busy:
                w = pick.choice(busy)
                return self.refused("HasOpenClaims", m.withdrawStake, 1, {"from": w}, accounts=[w])
        if kind == "withdraw_nothing":
            broke = [a for a in s.accounts if s.balance_of(a) == 0]
            if broke:
                a = pick.choice(broke)
                return self.refused("NothingToWithdraw", m.withdraw, {"from": a}, accounts=[a])
        if kind == "refund_open_job" and open_jobs:
            j = pick.choice(open_jobs)
            owner = s.by_address[s.jobs[j]["requester"]]
            if pick.random() < 0.5:
                return self.refused("RefundNotYet", m.refund, j, {"from": owner}, job_id=j)
            return self.refused("NotRequester", m.refund, j, {"from": coordinator}, job_id=j)
        if kind == "checkpoint_early" and open_jobs:
            j = pick.choice(open_jobs)
            info = s.jobs[j]
            if pick.random() < 0.5:
                return self.refused(
                    "NotCoordinator",
                    m.commitCheckpoint,
                    j,
                    info["currentStage"],
                    digest("c"),
                    {"from": outsider},
                    job_id=j,
                )
            if info["acceptedInStage"] < info["unitsPerStage"]:
                return self.refused(
                    "StageIncomplete",
                    m.commitCheckpoint,
                    j,
                    info["currentStage"],
                    digest("c"),
                    {"from": coordinator},
                    job_id=j,
                )
        if kind == "cancel_not_requester" and open_jobs:
            j = pick.choice(open_jobs)
            return self.refused("NotRequester", m.cancelJob, j, {"from": coordinator}, job_id=j)
        if kind == "post_wrong_escrow":
            params = job_params(coordinator, numStages=1, unitsPerStage=2)
            value = escrow_for(1, 2, params[7]) + pick.choice([-1, 1])
            return self.refused("WrongEscrow", m.postJob, params, {"from": requester, "value": value})
        # unknown_job, or the chosen kind has no target in this state
        j = int(m.jobCount()) + 1
        return self.refused("UnknownJob", m.claimUnit, j, 0, {"from": pick.choice(s.workers)})

    # ------------------------------------------------------------ invariants

    @invariant()
    def value_is_conserved(self):
        s, m = self.scenario, self.market
        full = self.steps % FULL_READ_EVERY == 0 and self.steps > 0  # step 0: the snapshot's state
        totals = assert_conserved(m, self.accounts, s.ledger, parts=full)
        # the parts as the scenario's views hold them (refreshed whenever an event names them): every step
        assert totals["staked"] == sum(s.winfo[str(w)]["stake"] for w in s.workers)
        assert totals["owed"] == sum(s.balance_of(a) for a in self.accounts)
        assert totals["escrow"] == sum(info["escrowRemaining"] for info in s.jobs.values())
        if full or self.steps == 0:
            s.check_claims()

    @invariant()
    def claims_are_backed(self):
        for w in self.scenario.workers:
            info = self.scenario.winfo[str(w)]
            assert info["stake"] >= MIN_STAKE * info["openClaims"], (str(w), info)

    @invariant()
    def phases_move_forward(self):
        s = self.scenario
        for j, info in s.jobs.items():
            now = (info["status"], info["currentStage"])
            before = self.jobs_seen.get(j)
            if before:
                assert before[0] == JobStatus.Open or now[0] == before[0], (j, before, now)
                assert now[1] >= before[1], (j, before, now)
            self.jobs_seen[j] = now
        for j, u, unit in s.claimed_units():
            now = (unit.resets, STATUS_RANK[unit.status], unit.accepted)
            before = self.units_seen.get((j, u))
            if before:
                if before[1] == STATUS_RANK[UnitStatus.Accepted]:
                    assert now == before, ("an accepted unit changed", j, u, before, now)
                released = s.jobs[j]["status"] == JobStatus.Cancelled
                assert now[:2] >= before[:2] or (released and now[0] == before[0]), (j, u, before, now)
            self.units_seen[(j, u)] = now

    @invariant()
    def units_resolve_once(self):
        assert all(n == 1 for n in self.accepted_events.values()), self.accepted_events


def test_market_state_machine(accounts):
    stats = StepStats("ComputeMarket")
    MarketMachine.configure(accounts, stats)
    brownie.chain.snapshot()
    # hypothesis decides how long each example runs (some end after a few steps), so the step budget is ours:
    # batches of examples until TARGET_STEPS steps ran
    for _ in range(4):
        run_state_machine_as_test(MarketMachine, settings=settings(**SETTINGS))
        if stats.steps >= TARGET_STEPS:
            break
    print("\n" + stats.report())
    for outcome in ("claim", "commit_honest", "commit_wrong", "reveal", "publish", "checkpoint", "withdraw"):
        assert stats.outcomes.get(outcome, 0) > 0, (outcome, stats.report())
    assert stats.reverted > stats.steps // 10, stats.report()
    assert stats.steps >= TARGET_STEPS, stats.report()
