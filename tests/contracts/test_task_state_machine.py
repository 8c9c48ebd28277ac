"""FederatedTask as a hypothesis state machine, run against brownie's chain: the task is deployed and started once,
and the chain is reverted to that snapshot before every example. (brownie's own `state_machine` helper cannot be
used: its compiled build in brownie 1.22.2 rejects the machine class it generates itself, "TypeError:
brownie.test.stateful._BrownieStateMachine object expected"; this is the same loop, written with hypothesis.)

Every rule predicts, from a small model of the task (`TaskModel`), whether its transaction succeeds and with which
effect, or which check refuses it. Valid and hostile actions are mixed: submitting twice, to the wrong round, from
an unapproved or removed device, empty, zero-sample or over-the-cap (maxSamplesPerUpdate) updates; batches from a
non-relayer, empty or with a sample total out of range; commitments out of phase, twice or by a suspended
aggregator; reveals that do not open their commitment, with a wrong inputs hash, too many accepted updates or an
epsilon outside the ledger's bounds (EpsilonTooLow, EpsilonTooHigh), by a suspended aggregator; closing a round or
a window early; cancelling without the role; a fourth aggregator (n >= 2k: ThresholdOutOfRange); time travel
(chain.sleep). Dissenting and withheld reveals are faults (at a final result, when a reveal window closes, at the
withholder's next commitment); at MAX_FAULTS an aggregator is suspended and the next round's n shrinks: the model
predicts every AggregatorFault and AggregatorSuspended event, in order. After every step the invariants compare
the chain with the model (also the round's n in aggregationState) and check what the contract promises:

- at most one final result per round (one AggregateCommitted per round, finalResultKey never changes);
- the round's inputs hash is the fold (initialInputsHash, then every accepted submission in chain order)
  recomputed here in Python, and a final result's inputs hash is the fold of its round;
- no device counted twice in a round (UpdateSubmitted events, and the chain's update count);
- the DP ledger: spent never exceeds the budget and never decreases, an open round fits the budget, the task
  finishes for the budget exactly when the next round could exceed it;
- phases only move forward: (round, phase) never goes back, Finished and Cancelled are final;
- a reverted step changes nothing the invariants read.

The model is deliberately small: the contract's rules it mirrors are the checks' order (`*_error` methods), the
round lifecycle, faults and suspensions, and the bounds a reveal's epsilon must lie in (read from the ledger's
view); the ledger's own arithmetic is not mirrored, its outcome is checked against its view.
"""

from dataclasses import dataclass, field

import brownie
from conftest import (
    Phase,
    Result,
    deploy_task,
    digest,
    fold_inputs_hash,
    initial_inputs_hash,
    round_state,
)
from eth_utils import keccak, to_canonical_address
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from stateful_helpers import StepStats, clear_of, revert_to_snapshot, reverts_named

NUM_ROUNDS = 4
MIN_UPDATES = 2
MAX_UPDATES = 4
ROUND_DURATION = 600
AGGREGATION_DURATION = 300
THRESHOLD = 2  # k of the three aggregators
BUDGET = 3_000_000  # epsilon 3.0, in millionths
FIRST_EPSILON = 1_000_000
RELAYER_ROLE = keccak(text="RELAYER_ROLE")
AGGREGATOR_ROLE = keccak(text="AGGREGATOR_ROLE")
MAX_SAMPLES = 5_000  # maxSamplesPerUpdate: valid updates carry 1..MAX_SAMPLES samples, hostile ones one more
# maxAggregatorFaults: low, so that examples reach suspensions (a withheld or dissenting reveal is a fault); with
# k = 2 of 3, one suspension leaves n = 2 = k (rounds still finalise), two leave n = 1 < k (rounds fail)
MAX_FAULTS = 2
ZERO32 = b"\x00" * 32

# Steps of the whole test (at about 60 ms a step on the shared 2-core machine). Hypothesis decides how many
# examples run and how long each is, so the step budget is ours: examples that start once TARGET_STEPS steps ran
# do nothing (they cost hypothesis's own overhead only), and batches repeat while fewer steps ran.
TARGET_STEPS = 2_000
SETTINGS = {
    "max_examples": 150,
    # long examples: a round takes some 30 steps (valid steps are a quarter of them), and faults, suspensions and
    # finished tasks need several rounds of one example
    "stateful_step_count": 150,
    "deadline": None,
    "verbosity": Verbosity.normal,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

RANK = {Phase.Open: 1, Phase.Aggregating: 2, Phase.Revealing: 3}
OVER = (Phase.Finished, Phase.Cancelled)


def fold_batch(previous: bytes, relayer, root: bytes, batch: bytes, entries: int, samples: int) -> bytes:
    """bytes20(keccak256(abi.encodePacked(bytes20 prev, address relayer, bytes32 root, bytes32 batchDigest,
    uint32 entries, uint64 totalSamples))): submitUpdateBatch's fold."""
    packed = previous + to_canonical_address(str(relayer)) + root + batch + entries.to_bytes(4, "big")
    return keccak(packed + samples.to_bytes(8, "big"))[:20]


@dataclass
class Commitment:
    """An aggregator's latest commitment (the contract keeps only that one)."""

    round: int
    result: Result
    revealed: bool = False


@dataclass
class TaskModel:
    """What the task should hold. Adapting the machine to a contract change mostly means changing this class and
    the `*_error` predictions of the rules."""

    address: str
    approved: set[str]
    round: int = 1
    phase: Phase = Phase.Open
    failed_rounds: int = 0
    inputs_hash: bytes = b""
    count: int = 0
    samples: int = 0
    last_round: dict[str, int] = field(default_factory=dict)  # device -> last round it submitted to
    commits: int = 0
    commitments: dict[str, Commitment] = field(default_factory=dict)
    votes: dict[bytes, int] = field(default_factory=dict)  # result key -> reveals in this round's window
    revealers: list[tuple[str, bytes]] = field(default_factory=list)  # earlier reveals of the window
    finals: dict[int, bytes] = field(default_factory=dict)  # round -> final result key
    final_inputs: dict[int, bytes] = field(default_factory=dict)  # round -> the model's fold when finalised
    faults: dict[str, int] = field(default_factory=dict)
    suspended: set[str] = field(default_factory=set)  # aggregators at MAX_FAULTS faults: not counted in n
    aggregator_count: int = 3  # AGGREGATOR_ROLE holders (suspended ones included)
    round_n: int = 3  # the round's n: aggregators not suspended when it opened
    committers: list[str] = field(default_factory=list)  # this round's committers, in commit order

    def __post_init__(self):
        self.open_round(1)

    @property
    def active(self) -> int:
        """aggregatorCount: role holders not suspended."""
        return self.aggregator_count - len(self.suspended)

    @property
    def over(self) -> bool:
        return self.phase in OVER

    def open_round(self, r: int) -> None:
        self.round, self.phase = r, Phase.Open
        self.inputs_hash, self.count, self.samples = initial_inputs_hash(self.address, r), 0, 0
        self.commits, self.votes, self.revealers, self.committers = 0, {}, [], []
        self.round_n = self.active  # n is fixed when the round opens

    def fold_update(self, device: str, update: bytes, samples: int) -> None:
        assert self.last_round.get(device) != self.round, "the model would count a device twice"
        self.last_round[device] = self.round
        self.inputs_hash = fold_inputs_hash(self.inputs_hash, device, update, samples)
        self.count, self.samples = self.count + 1, self.samples + samples

    def fold_batch(self, relayer, root: bytes, batch: bytes, entries: int, samples: int) -> None:
        self.inputs_hash = fold_batch(self.inputs_hash, relayer, root, batch, entries, samples)
        self.count, self.samples = self.count + entries, self.samples + samples


PICK = st.integers(0, 2**16 - 1)  # chooses among the options a rule computes from the model
SAMPLES = st.integers(1, MAX_SAMPLES)
COMMIT_KIND = st.sampled_from(
    ["honest"] * 7 + ["dissent", "collude", "bad_inputs", "too_many_accepted", "low_epsilon", "high_epsilon"]
)
CHURN_KINDS = ["approve", "approve", "remove", "leave", "outsider_removes", "remove_unknown"]
# mostly short: a long sleep closes the open window (the round then fails), which must happen, but not every time
SLEEP_FOR = st.sampled_from([15, 15, 15, 45, 45, 120, 320, 660])
HOSTILE_KIND = st.sampled_from(
    [
        "submit_twice",
        "submit_wrong_round",
        "submit_unapproved",
        "submit_bad_values",
        "batch_invalid",
        "commit_invalid",
        "reveal_invalid",
        "close_early_or_wrong_round",
        "admin_misuse",
        "churn",
        "churn",
    ]
)


class TaskMachine(RuleBasedStateMachine):
    """One example: the chain reverted to the started task, then rules; `configure` sets the class context."""

    @classmethod
    def configure(cls, accounts, federated_task, stats: StepStats):
        """Deploy the task once; every example starts from the snapshot taken after this."""
        cls.admin = accounts[0]
        cls.aggregators = [accounts[1], accounts[6], accounts[7]]
        cls.devices = [*accounts[2:6], accounts[8]]  # accounts[8] is approved only by a churn step
        cls.relayer = accounts[9]
        cls.outsider = accounts[9]  # no device, no aggregator, no admin
        cls.by_address = {str(a): a for a in accounts}
        cls.task = deploy_task(
            federated_task,
            cls.admin,
            cls.aggregators,
            cls.devices[:4],
            numRounds=NUM_ROUNDS,
            minUpdates=MIN_UPDATES,
            maxUpdates=MAX_UPDATES,
            roundDuration=ROUND_DURATION,
            aggregatorThreshold=THRESHOLD,
            aggregationDuration=AGGREGATION_DURATION,
            epsilonBudgetMicro=BUDGET,
            firstRoundEpsilonMicro=FIRST_EPSILON,
            maxSamplesPerUpdate=MAX_SAMPLES,
            maxAggregatorFaults=MAX_FAULTS,
        )
        cls.task.grantRole(RELAYER_ROLE, cls.relayer, {"from": cls.admin})
        cls.stats = stats

    def __init__(self):
        super().__init__()
        self.model = TaskModel(str(self.task.address), {str(d) for d in self.devices[:4]})
        self.idle = self.stats.steps >= TARGET_STEPS  # the test has its steps: this example does nothing
        if self.idle:
            return
        revert_to_snapshot()
        self.stats.examples += 1
        self.reverted = False  # the step's transaction reverted (as predicted)
        self.nonce = 0  # makes digests and salts unique within an example
        self.final_events: dict[int, int] = {}  # round -> AggregateCommitted events seen
        self.round_devices: dict[int, list[str]] = {}  # round -> devices of its UpdateSubmitted events
        self.view, self.ledger, self.agg = self.observe()
        self.previous = (self.view, self.ledger, self.agg)

    # ------------------------------------------------------------ chain views and bookkeeping

    def observe(self):
        view = round_state(self.task)
        spent, increment, agreed, budget = (int(v) for v in self.task.privacyLedger())
        ledger = {"spent": spent, "increment": increment, "agreed": agreed, "budget": budget}
        # commits and reveals of the aggregation (zero while a round is open: not read then, one call less)
        agg = tuple(int(v) for v in self.task.aggregationState()) if view["phase"] != Phase.Open else None
        return view, ledger, agg

    def fresh(self) -> str:
        self.nonce += 1
        return f"{self.stats.examples}-{self.nonce}"

    def done(self, tx, outcome: str):
        """A transaction the model predicted to succeed: count it and record its events."""
        assert tx.status == 1
        self.stats.steps += 1
        self.stats.count(outcome)
        for event in tx.events:
            if event.name == "UpdateSubmitted":
                self.round_devices.setdefault(int(event["round"]), []).append(str(event["device"]))
            elif event.name == "AggregateCommitted":
                r = int(event["round"])
                self.final_events[r] = self.final_events.get(r, 0) + 1
        return tx

    def refused(self, error: str, call, *args):
        """A transaction the model predicted to revert with `error`: it must, and change nothing (invariant)."""
        with reverts_named(error):
            call(*args)
        self.reverted = True
        self.stats.steps += 1
        self.stats.reverted += 1
        self.stats.count(f"x{error}")

    def deadline(self) -> int:
        return self.view["deadline"]

    # ------------------------------------------------------------ actions: predict, send, update the model
    # Each action works for valid and hostile arguments alike: it predicts the first failing check (the contract's
    # order) and expects that revert, or sends the transaction and applies the predicted effect.

    def submit_error(self, device, round_: int, update: bytes, samples: int) -> str | None:
        """submitUpdate's checks, in the contract's order (see _revertSubmit)."""
        m = self.model
        if m.phase != Phase.Open:
            return "WrongPhase"
        if round_ != m.round:
            return "WrongRound"
        if update == ZERO32:
            return "EmptyDigest"
        if samples == 0:
            return "ZeroSamples"
        if samples > MAX_SAMPLES:
            return "TooManySamples"
        if str(device) not in m.approved:
            return "NotApprovedDevice"
        if m.last_round.get(str(device)) == round_:
            return "AlreadySubmitted"
        return None

    def submit(self, device, round_: int, update: bytes, samples: int):
        m = self.model
        error = self.submit_error(device, round_, update, samples)
        if error:
            return self.refused(error, self.task.submitUpdate, round_, update, samples, {"from": device})
        tx = self.done(self.task.submitUpdate(round_, update, samples, {"from": device}), "submit")
        m.fold_update(str(device), update, samples)
        self.maybe_close(tx)

    def batch(self, sender, round_: int, entries: int, total: int):
        """A relayer records a batch of signed updates (the chain folds the batch, not its entries)."""
        m = self.model
        root, batch = digest(self.fresh()), digest(self.fresh())
        if sender != self.relayer:
            error = "AccessControlUnauthorizedAccount"
        elif m.phase != Phase.Open:
            error = "WrongPhase"
        elif round_ != m.round:
            error = "WrongRound"
        elif entries == 0:
            error = "EmptyBatch"
        elif not entries <= total <= entries * MAX_SAMPLES:
            error = "BatchSamplesOutOfRange"
        else:
            error = None
        args = (round_, batch, root, entries, total, {"from": sender})
        if error:
            return self.refused(error, self.task.submitUpdateBatch, *args)
        tx = self.done(self.task.submitUpdateBatch(*args), "batch")
        m.fold_batch(self.relayer, root, batch, entries, total)
        self.maybe_close(tx)

    def maybe_close(self, tx):
        """maxUpdates reached closes the round at once, with the model's inputs hash."""
        m = self.model
        if m.count >= MAX_UPDATES:
            ready = tx.events["RoundReadyForAggregation"]
            assert bytes(ready["inputsHash"]) == m.inputs_hash and int(ready["updates"]) == m.count
            m.phase = Phase.Aggregating
        else:
            assert "RoundReadyForAggregation" not in tx.events

    def close_round(self, round_: int, sender):
        m = self.model
        t = clear_of(self.deadline())
        if m.phase != Phase.Open:
            error = "WrongPhase"
        elif round_ != m.round:
            error = "WrongRound"
        elif t < self.deadline():
            error = "DeadlineNotReached"  # closing early
        else:
            error = None
        if error:
            return self.refused(error, self.task.closeRound, round_, {"from": sender})
        tx = self.done(self.task.closeRound(round_, {"from": sender}), "close_round")
        if m.count >= MIN_UPDATES:
            assert bytes(tx.events["RoundReadyForAggregation"]["inputsHash"]) == m.inputs_hash
            m.phase = Phase.Aggregating
        else:
            assert int(tx.events["RoundExtended"]["newDeadline"]) == tx.timestamp + ROUND_DURATION

    def honest_epsilon(self) -> int:
        """The cumulative epsilon every honest aggregator reports for the round (deterministic, so that they agree):
        what the ledger has charged plus an increment within the ledger's bound, shrinking from round to round
        (RDP composition is concave), and at least the first round's epsilon."""
        spent, bound = self.ledger["spent"], self.ledger["increment"]
        increment = max(1, bound - (self.model.round % 3) * bound // 4)
        return max(FIRST_EPSILON, self.ledger["agreed"], spent + increment)

    def epsilon_bounds(self) -> tuple[int, int]:
        """The epsilon a result of the running round may carry: above the last agreed one (and at least the first
        round's), at most the spent one plus the increment bound, one millionth of rounding per round since the
        last agreed one, and never above the budget."""
        spent, increment, agreed = self.ledger["spent"], self.ledger["increment"], self.ledger["agreed"]
        low = max(FIRST_EPSILON, agreed + 1)
        return low, min(BUDGET, spent + increment + 1 + (spent - agreed) // increment)

    def result_for(self, aggregator, kind: str) -> Result:
        m = self.model
        result = Result(
            round=m.round,
            inputs_hash=m.inputs_hash,
            model=digest(f"model-{m.round}"),
            report=digest(f"report-{m.round}-{aggregator}"),
            accepted=m.count,
            salt=digest(f"salt-{self.fresh()}"),
            epsilon=self.honest_epsilon(),
        )
        if kind == "dissent":  # its own wrong model: no other reveal agrees with it
            return result.but(model=digest(f"dissent-{self.fresh()}"))
        if kind == "collude":  # the same wrong model as any other colluder: two of them make a final result
            return result.but(model=digest(f"collude-{m.round}"))
        if kind == "bad_inputs":
            return result.but(inputs_hash=keccak(text=self.fresh())[:20])
        if kind == "too_many_accepted":
            return result.but(accepted=m.count + 1)
        if kind == "low_epsilon":
            return result.but(epsilon=self.epsilon_bounds()[0] - 1)
        if kind == "high_epsilon":
            return result.but(epsilon=self.epsilon_bounds()[1] + 1)
        return result

    def commit(self, aggregator, round_: int, result: Result, value: bytes):
        m = self.model
        previous = m.commitments.get(str(aggregator))
        if aggregator not in self.aggregators:
            error = "AccessControlUnauthorizedAccount"
        elif m.phase != Phase.Aggregating:
            error = "WrongPhase"
        elif round_ != m.round:
            error = "WrongRound"
        elif value == ZERO32:
            error = "EmptyDigest"
        elif str(aggregator) in m.suspended:
            error = "AggregatorIsSuspended"
        elif previous and previous.round == round_:
            error = "AlreadyCommitted"
        else:
            error = None
        if error:
            return self.refused(error, self.task.commitResult, round_, value, {"from": aggregator})
        tx = self.done(self.task.commitResult(round_, value, {"from": aggregator}), "commit")
        # its previous commitment, to a finalised round, never revealed: a withheld reveal, a fault now; a fault
        # that suspends it leaves the commitment unmade
        withheld = previous is not None and not previous.revealed and previous.round in m.finals
        if self.expect_faults(tx, [str(aggregator)] if withheld else []):
            assert "ResultCommitted" not in tx.events
            self.stats.count("commit_suspended")
            return
        assert "ResultCommitted" in tx.events
        m.commitments[str(aggregator)] = Commitment(round_, result)
        m.commits += 1
        m.committers.append(str(aggregator))
        if m.commits >= m.round_n:  # the round's n committed: the reveal window opens
            assert int(tx.events["RevealOpened"]["commits"]) == m.commits
            m.phase = Phase.Revealing
        else:
            assert "RevealOpened" not in tx.events

    def reveal_outcome(self, aggregator, round_: int, result: Result, t: int) -> str:
        """revealResult's path: an error name, "window" (a vote) or "late" (a finalised round's late reveal)."""
        m = self.model
        c = m.commitments.get(str(aggregator))
        if aggregator not in self.aggregators:
            return "AccessControlUnauthorizedAccount"
        if str(aggregator) in m.suspended:
            return "AggregatorIsSuspended"
        if c is None or c.round != round_:
            return "NoCommitment"
        if c.revealed:
            return "AlreadyRevealed"
        if result != c.result:
            return "CommitmentMismatch"
        if round_ == m.round and m.phase == Phase.Revealing:
            if t >= self.deadline():
                return "RevealWindowClosed"
            if result.inputs_hash != m.inputs_hash:
                return "InputsMismatch"
            if result.accepted > m.count:
                return "TooManyAccepted"
            low, high = self.epsilon_bounds()
            if result.epsilon < low:
                return "EpsilonTooLow"
            if result.epsilon > high:
                return "EpsilonTooHigh"
            return "window"
        if round_ in m.finals:
            return "late"
        return "WrongPhase" if round_ == m.round else "RevealWindowClosed"

    def commitment_of(self, aggregator) -> Commitment:
        """The aggregator's latest commitment, or a stand-in for the current round (no commitment)."""
        m = self.model
        return m.commitments.get(str(aggregator)) or Commitment(m.round, self.result_for(aggregator, "honest"))

    def reveal(self, aggregator, round_: int, result: Result):
        m = self.model
        t = clear_of(self.deadline())
        outcome = self.reveal_outcome(aggregator, round_, result, t)
        args = (round_, result.inputs_hash, result.model, result.report, result.accepted, result.epsilon, result.salt)
        if outcome not in ("window", "late"):
            return self.refused(outcome, self.task.revealResult, *args, {"from": aggregator})
        tx = self.done(self.task.revealResult(*args, {"from": aggregator}), f"reveal_{outcome}")
        m.commitments[str(aggregator)].revealed = True
        key = result.key()
        if outcome == "late":
            self.expect_faults(tx, [str(aggregator)] if key != m.finals[round_] else [])
            return
        m.votes[key] = m.votes.get(key, 0) + 1
        if m.votes[key] < THRESHOLD:
            assert "AggregateCommitted" not in tx.events
            m.revealers.append((str(aggregator), key))
            return
        # final: earlier revealers of another key are at fault; the next round opens or the task finishes
        event = tx.events["AggregateCommitted"]
        assert bytes(event["inputsHash"]) == m.inputs_hash and bytes(event["modelDigest"]) == result.model
        self.expect_faults(tx, [a for a, k in m.revealers if k != key])
        m.finals[m.round], m.final_inputs[m.round] = key, m.inputs_hash
        self.end_round(tx)

    def expect_faults(self, tx, aggregators: list[str]) -> bool:
        """The transaction faulted exactly these aggregators, in this order, and suspended those that reached
        MAX_FAULTS (n shrinks from the next round). Returns whether it suspended any."""
        m = self.model
        faulted = [str(e["aggregator"]) for e in tx.events["AggregatorFault"]] if "AggregatorFault" in tx.events else []
        assert faulted == aggregators, (faulted, aggregators)
        suspended = []
        for a in aggregators:
            m.faults[a] = m.faults.get(a, 0) + 1
            if m.faults[a] >= MAX_FAULTS and a not in m.suspended:
                m.suspended.add(a)
                suspended.append(a)
            info = self.task.aggregatorInfo(a)
            assert (int(info[2]), bool(info[4])) == (m.faults[a], a in m.suspended)
        # brownie's EventDict has no .get()
        events = tx.events["AggregatorSuspended"] if "AggregatorSuspended" in tx.events else []  # noqa: SIM401
        assert [str(e["aggregator"]) for e in events] == suspended, (events, suspended)
        if suspended:
            self.stats.count("suspended")
        return bool(suspended)

    def end_round(self, tx):
        """After a final result or a failed round: the task finishes (all rounds done, or the DP budget could be
        exceeded by one more round) or the next round opens."""
        m = self.model
        exhausted = "PrivacyBudgetExhausted" in tx.events
        spent, increment, _, budget = (int(v) for v in self.task.privacyLedger())
        assert exhausted == (spent + increment > budget), (exhausted, spent, increment, budget)
        if exhausted or (m.round in m.finals and m.round >= NUM_ROUNDS + m.failed_rounds):
            assert "TaskFinished" in tx.events
            self.stats.count("budget_exhausted" if exhausted else "finished")
            m.phase = Phase.Finished
        else:
            assert int(tx.events["RoundOpened"]["round"]) == m.round + 1
            m.open_round(m.round + 1)

    def close_window(self, round_: int, sender):
        m = self.model
        t = clear_of(self.deadline())
        if round_ != m.round:
            error = "WrongRound"
        elif m.phase not in (Phase.Aggregating, Phase.Revealing):
            error = "WrongPhase"
        elif t < self.deadline():
            error = "DeadlineNotReached"  # closing early
        else:
            error = None
        if error:
            return self.refused(error, self.task.closeAggregationWindow, round_, {"from": sender})
        if m.phase == Phase.Aggregating and m.commits >= THRESHOLD:
            tx = self.done(self.task.closeAggregationWindow(round_, {"from": sender}), "reveal_opened")
            assert int(tx.events["RevealOpened"]["commits"]) == m.commits
            m.phase = Phase.Revealing
            return
        tx = self.done(self.task.closeAggregationWindow(round_, {"from": sender}), "round_failed")
        assert "AggregationFailed" in tx.events
        # a closed reveal window faults every committer that did not reveal (refused reveals included)
        withheld = [a for a in m.committers if not m.commitments[a].revealed] if m.phase == Phase.Revealing else []
        self.expect_faults(tx, withheld)
        m.failed_rounds += 1
        self.end_round(tx)

    # ------------------------------------------------------------ rules: the valid steps of each phase

    def fresh_devices(self):
        m = self.model
        return [d for d in self.devices if str(d) in m.approved and m.last_round.get(str(d)) != m.round]

    def unrevealed(self):
        m = self.model
        return [a for a in self.aggregators if str(a) in m.commitments and not m.commitments[str(a)].revealed]

    @precondition(lambda self: not self.model.over)
    @rule(pick=PICK, samples=SAMPLES, kind=COMMIT_KIND)
    def rule_advance(self, pick, samples, kind):
        """The phase's next valid step: a device's update or a relayed batch (Open), a commitment of an aggregator
        that has not committed (Aggregating: honest, or dissenting, colluding, or one whose reveal will be refused),
        a reveal (Revealing). While a round is open, an aggregator sometimes reveals late for a finalised round.
        (Hypothesis disables random rules per example, so one rule that always advances keeps examples going.)"""
        if self.idle:
            return
        m = self.model
        if m.phase == Phase.Open:
            late = [
                a for a in self.unrevealed() if m.commitments[str(a)].round in m.finals and str(a) not in m.suspended
            ]
            fresh = self.fresh_devices()
            if late and pick % 4 == 3:
                aggregator = late[pick % len(late)]
                c = m.commitments[str(aggregator)]
                self.reveal(aggregator, c.round, c.result)
            elif fresh and pick % 3:
                self.submit(fresh[pick % len(fresh)], m.round, digest(self.fresh()), samples)
            else:
                entries = 1 + pick % 3
                self.batch(self.relayer, m.round, entries, entries * samples)
        elif m.phase == Phase.Aggregating:
            waiting = [
                a
                for a in self.aggregators
                if m.commitments.get(str(a), Commitment(0, None)).round != m.round and str(a) not in m.suspended
            ]
            aggregator = (waiting or self.aggregators)[pick % len(waiting or self.aggregators)]
            result = self.result_for(aggregator, kind)
            self.commit(aggregator, m.round, result, result.commitment(self.task, aggregator))
        else:
            candidates = self.unrevealed() or self.aggregators
            # mostly a reveal that votes (a refused one stays withheld and is tried again, by the hostile rule too)
            # (t = 0: the choice ignores the deadline; `reveal` predicts with the chain's time)
            votes = [
                a for a in candidates if self.reveal_outcome(a, m.round, self.commitment_of(a).result, 0) == "window"
            ]
            if votes and pick % 4:
                candidates = votes
            aggregator = candidates[pick % len(candidates)]
            c = self.commitment_of(aggregator)
            self.reveal(aggregator, c.round, c.result)

    @precondition(lambda self: not self.model.over)
    @rule(pick=PICK)
    def rule_close(self, pick):
        """Anyone closes the open round (deadline passed: aggregation or extension) or the aggregation window
        (reveal window opens, or the round fails); before the deadline it is refused (closing early)."""
        if self.idle:
            return
        sender = self.devices[pick % len(self.devices)]
        if self.model.phase == Phase.Open:
            self.close_round(self.model.round, sender)
        else:
            self.close_window(self.model.round, sender)

    def churn(self, pick, kind):
        """Devices join (approved by the admin) and leave (removed, or by themselves), also mid-round."""
        m = self.model
        device = self.devices[pick % len(self.devices)]
        if kind == "approve":
            if m.over:
                return self.refused("TaskOver", self.task.approveDevices, [device], {"from": self.admin})
            tx = self.done(self.task.approveDevices([device], {"from": self.admin}), "approve")
            assert ("DeviceApproved" in tx.events) == (str(device) not in m.approved)
            m.approved.add(str(device))
            return
        sender = {"remove": self.admin, "leave": device, "outsider_removes": self.outsider}.get(kind, self.admin)
        if kind == "remove_unknown":
            device = self.outsider
        if kind == "outsider_removes":
            error = "AccessControlUnauthorizedAccount"
        elif str(device) not in m.approved:
            error = "NotApprovedDevice"
        else:
            error = None
        if error:
            return self.refused(error, self.task.removeDevice, device, {"from": sender})
        self.done(self.task.removeDevice(device, {"from": sender}), "remove")
        m.approved.discard(str(device))

    @rule(seconds=SLEEP_FOR)
    def rule_sleep(self, seconds):
        """Time travel: deadlines pass, windows close (the next actions predict with the new time)."""
        if self.idle:
            return
        brownie.chain.sleep(seconds)
        self.stats.steps += 1
        self.stats.count("sleep")

    # ------------------------------------------------------------ rule: hostile steps, and device churn (any phase)

    @rule(pick=PICK, samples=SAMPLES, kind=HOSTILE_KIND)
    def rule_hostile(self, pick, samples, kind):
        """Invalid actions, each predicted to revert with its error (the actions above decide which check fails
        first, so a kind that happens to be valid in this state is simply performed); and devices joining and
        leaving (a removed device that rejoins must still not submit twice to a round)."""
        if self.idle:
            return
        m = self.model
        device = self.devices[pick % len(self.devices)]
        aggregator = self.aggregators[pick % len(self.aggregators)]
        off = 1 + pick % 2  # a later round, or with pick odd two rounds later
        if kind == "submit_twice":
            done = [d for d in self.devices if m.last_round.get(str(d)) == m.round] or [device]
            self.submit(done[pick % len(done)], m.round, digest(self.fresh()), samples)
        elif kind == "submit_wrong_round":
            self.submit(device, m.round + off if pick % 4 else m.round - 1, digest(self.fresh()), samples)
        elif kind == "submit_unapproved":
            outside = [d for d in self.devices if str(d) not in m.approved] + [self.outsider, self.admin]
            self.submit(outside[pick % len(outside)], m.round, digest(self.fresh()), samples)
        elif kind == "submit_bad_values":
            options = [(ZERO32, samples), (digest(self.fresh()), 0), (digest(self.fresh()), MAX_SAMPLES + 1)]
            update, n = options[pick % 3]
            self.submit(device, m.round, update, n)
        elif kind == "batch_invalid":
            sender, entries, total = [
                (device, 1, samples),
                (self.relayer, 0, 0),
                (self.relayer, 2, 1),
                (self.relayer, 2, 2 * MAX_SAMPLES + 1),  # over the sample cap of two entries
            ][pick % 4]
            self.batch(sender, m.round + (1 if pick % 5 == 4 else 0), entries, total)
        elif kind == "commit_invalid":
            result = self.result_for(aggregator, "honest")
            sender, round_, value = [
                (aggregator, m.round, result.commitment(self.task, aggregator)),  # out of phase or twice
                (aggregator, m.round + off, result.commitment(self.task, aggregator)),
                (aggregator, m.round, ZERO32),
                (self.outsider, m.round, result.commitment(self.task, self.outsider)),
            ][pick % 4]
            self.commit(sender, round_, result, value)
        elif kind == "reveal_invalid":
            c = m.commitments.get(str(aggregator))
            result = c.result if c else self.result_for(aggregator, "honest")
            round_ = c.round if c else m.round
            sender, round_, result = [
                (aggregator, round_, result.but(salt=digest(self.fresh()))),  # does not open the commitment
                (aggregator, round_ + off, result),
                (self.outsider, round_, result),
                (aggregator, round_, result),  # again, or early, or late
            ][pick % 4]
            self.reveal(sender, round_, result)
        elif kind == "close_early_or_wrong_round":
            round_ = m.round + (off if pick % 2 else 0)
            (self.close_round if pick % 4 < 2 else self.close_window)(round_, device)
        elif kind == "churn":
            self.churn(pick, CHURN_KINDS[(pick // 7) % len(CHURN_KINDS)])
        elif kind == "admin_misuse":
            self.admin_misuse(pick)

    def admin_misuse(self, pick):
        """Admin steps: a cancel (rarely, as it ends the example's progress; not on pick's boundary values, which
        hypothesis favours), a fourth aggregator (it would make k = 2 a minority of n: refused while the task runs,
        and after), a cancel by an outsider, a second start."""
        m = self.model
        if pick % 32 == 5:
            if m.over:
                return self.refused("TaskOver", self.task.cancel, {"from": self.admin})
            self.done(self.task.cancel({"from": self.admin}), "cancel")
            m.phase = Phase.Cancelled
        elif pick % 3 == 0 and m.active + 1 >= 2 * THRESHOLD:
            args = (AGGREGATOR_ROLE, self.outsider, {"from": self.admin})
            self.refused("ThresholdOutOfRange", self.task.grantRole, *args)
        elif pick % 2:
            self.refused("AccessControlUnauthorizedAccount", self.task.cancel, {"from": self.outsider})
        else:
            self.refused("WrongPhase", self.task.start, {"from": self.admin})

    # ------------------------------------------------------------ invariants (one method: one read of each view)

    @invariant()
    def chain_matches_model(self):
        if self.idle:
            return
        previous = (self.view, self.ledger, self.agg)
        self.view, self.ledger, self.agg = self.observe()
        if self.reverted:  # a refused transaction changed nothing
            assert (self.view, self.ledger, self.agg) == previous
            self.reverted = False
        self.check_model()
        self.check_forward(previous[0])
        self.check_single_final()
        self.check_no_double_count()
        self.check_budget(previous[1])

    def check_model(self):
        m, v = self.model, self.view
        assert (v["round"], v["phase"]) == (m.round, m.phase)
        # the inputs hash is the fold of the round's submissions, recomputed here
        assert (v["inputsHash"], v["updates"], v["totalSamples"]) == (m.inputs_hash, m.count, m.samples)
        if m.phase in (Phase.Aggregating, Phase.Revealing):
            # commits, and the round's n (fixed when it opened, whatever was suspended since)
            assert (self.agg[0], self.agg[3]) == (m.commits, m.round_n)

    def check_forward(self, before):
        after = self.view
        if before["phase"] in OVER:
            assert (after["round"], after["phase"]) == (before["round"], before["phase"])
        elif after["phase"] not in OVER:
            assert (after["round"], RANK[after["phase"]]) >= (before["round"], RANK[before["phase"]])
        else:
            assert after["round"] == before["round"]

    def check_single_final(self):
        m = self.model
        assert all(n == 1 for n in self.final_events.values()), self.final_events
        assert set(self.final_events) == set(m.finals)
        # one key per step, in turn: every finalised round's (never changes) and the current round's (zero until final)
        rounds = [*sorted(m.finals), m.round]
        r = rounds[self.stats.steps % len(rounds)]
        assert bytes(self.task.finalResultKey(r)) == m.finals.get(r, ZERO32)

    def check_no_double_count(self):
        for r, devices in self.round_devices.items():
            assert len(devices) == len(set(devices)), (r, devices)
        if self.model.phase not in OVER:
            direct = self.round_devices.get(self.model.round, [])
            assert len(direct) <= self.view["updates"]

    def check_budget(self, before):
        ledger = self.ledger
        assert ledger["spent"] <= ledger["budget"] == BUDGET
        assert ledger["spent"] >= before["spent"] and ledger["agreed"] >= before["agreed"]
        assert ledger["agreed"] <= ledger["spent"]
        if self.model.phase != Phase.Finished:  # a round runs only if it cannot take the ledger over the budget
            assert ledger["spent"] + ledger["increment"] <= BUDGET


def test_task_state_machine(accounts, federated_task):
    stats = StepStats("FederatedTask")
    TaskMachine.configure(accounts, federated_task, stats)
    brownie.chain.snapshot()
    # batches of examples until TARGET_STEPS steps ran (the examples after that do nothing)
    for _ in range(4):
        run_state_machine_as_test(TaskMachine, settings=settings(**SETTINGS))
        if stats.steps >= TARGET_STEPS:
            break
    print("\n" + stats.report())
    # the machine reached every part of the lifecycle (late reveals and finished tasks are rarer: in the report)
    for outcome in ("submit", "batch", "commit", "reveal_window", "close_round", "round_failed"):
        assert stats.outcomes.get(outcome, 0) > 0, (outcome, stats.report())
    assert stats.reverted > stats.steps // 10, stats.report()
    assert stats.steps >= TARGET_STEPS, stats.report()
