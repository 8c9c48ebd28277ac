"""BufferedTask as a hypothesis state machine against brownie's chain (the same loop as test_task_state_machine.py):
the task is deployed and started once and the chain reverted to that snapshot before every example.

Rules mix valid and hostile actions: submissions from any device, from the current, an older, a too old or a future
version, empty or with a sample count of zero or over the cap, twice into one buffer, into a full pipeline;
honest, dissenting and wrong-inputs commitments; reveals in and out of their window; closing windows early or late
(failed attempts, re-aggregation, discarded buffers); early closes of partly filled buffers (closeBuffer, after
bufferDuration); devices joining and leaving; time travel. Each rule predicts
from a small model which check refuses it (the contract's order) or what it changes. Invariants after every step:

- the filling buffer (number, count, inputs hash recomputed here) and the current version are the model's;
- at most one buffer pending and one filling: the pending buffer is the one before the filling one;
- versions are published in order, each exactly once, each by one buffer, and versionDigest holds them;
- no device twice in one buffer, and no accepted update from the future or over the staleness bound;
- a refused step changes nothing.
"""

from dataclasses import dataclass, field

import brownie
from buffered_helpers import (
    AggPhase,
    BufferStatus,
    Status,
    deploy_buffered,
    digest,
    fold,
    initial_inputs_hash,
    result_key,
)
from buffered_helpers import Result as BufResult
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from stateful_helpers import StepStats, clear_of, now, revert_to_snapshot, reverts_named

K = 2
MAX_STALENESS = 1
MAX_SAMPLES = 1_000
NUM_VERSIONS = 4
THRESHOLD = 2  # of three aggregators
DURATION = 300
MAX_ATTEMPTS = 2
BUFFER_DURATION = 600  # a buffer with at least MIN_BUFFER updates may be closed early after this
MIN_BUFFER = 1
ZERO32 = b"\x00" * 32
TARGET_STEPS = 700
SETTINGS = {
    "max_examples": 60,
    "stateful_step_count": 80,
    "deadline": None,
    "verbosity": Verbosity.normal,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@dataclass
class Commitment:
    buffer: int
    attempt: int
    result: BufResult
    revealed: bool = False


@dataclass
class Model:
    address: str
    approved: set[str]
    status: Status = Status.Running
    version: int = 0
    filling: int = 1
    count: int = 0
    inputs_hash: bytes = b""
    last_buffer: dict[str, int] = field(default_factory=dict)
    buffers: dict[int, dict] = field(default_factory=dict)  # closed buffers: hash, count, status
    pending: int = 0
    phase: AggPhase = AggPhase.Idle
    attempt: int = 0
    commits: int = 0
    commitments: dict[str, Commitment] = field(default_factory=dict)
    votes: dict[bytes, int] = field(default_factory=dict)
    published: dict[int, int] = field(default_factory=dict)  # buffer -> the attempt that published it

    def __post_init__(self):
        self.inputs_hash = initial_inputs_hash(self.address, 1)

    def open_attempt(self, buffer: int, attempt: int) -> None:
        self.pending, self.phase, self.attempt, self.commits, self.votes = buffer, AggPhase.Committing, attempt, 0, {}
        self.buffers[buffer]["status"] = BufferStatus.Aggregating

    def next_buffer(self) -> None:
        """No buffer pending: the full filling buffer, if any, goes to aggregation and the next one opens."""
        if self.count < K:
            self.pending, self.phase = 0, AggPhase.Idle
            return
        self.aggregate_filling()

    def aggregate_filling(self) -> None:
        self.open_attempt(self.filling, 1)
        self.filling += 1
        self.count, self.inputs_hash = 0, initial_inputs_hash(self.address, self.filling)


PICK = st.integers(0, 2**16 - 1)


class BufferedMachine(RuleBasedStateMachine):
    @classmethod
    def configure(cls, accounts, stats: StepStats):
        cls.admin = accounts[0]
        cls.aggregators = [accounts[1], accounts[6], accounts[7]]
        cls.devices = [accounts[2], accounts[3], accounts[4], accounts[5], accounts[8], accounts[9]]
        cls.task = deploy_buffered(
            cls.admin,
            cls.aggregators,
            cls.devices[:4],
            bufferSize=K,
            maxStaleness=MAX_STALENESS,
            maxSamplesPerUpdate=MAX_SAMPLES,
            numVersions=NUM_VERSIONS,
            aggregatorThreshold=THRESHOLD,
            aggregationDuration=DURATION,
            maxAggregationAttempts=MAX_ATTEMPTS,
            bufferDuration=BUFFER_DURATION,
            minBufferSize=MIN_BUFFER,
        )
        cls.stats = stats

    def __init__(self):
        super().__init__()
        self.idle = self.stats.steps >= TARGET_STEPS
        if self.idle:
            return
        revert_to_snapshot()
        self.stats.examples += 1
        self.model = Model(str(self.task.address), {str(d) for d in self.devices[:4]})
        self.nonce = 0
        self.reverted = False
        self.buffer_devices: dict[int, list[str]] = {}
        self.published_versions: list[int] = []
        self.view = self.observe()

    # ------------------------------------------------------------ bookkeeping

    def observe(self) -> tuple:
        status, version, buffer, count, inputs_hash = self.task.fillingBuffer()
        agg = tuple(int(v) for v in self.task.aggregationState())
        opened = int(self.task.fillingOpenedAt())
        return (int(status), int(version), int(buffer), int(count), bytes(inputs_hash), agg, opened)

    def fresh(self) -> str:
        self.nonce += 1
        return f"{self.stats.examples}-{self.nonce}"

    def done(self, tx, outcome: str):
        assert tx.status == 1
        self.stats.steps += 1
        self.stats.count(outcome)
        for event in tx.events:
            if event.name == "UpdateBuffered":
                self.buffer_devices.setdefault(int(event["buffer"]), []).append(str(event["device"]))
                assert int(event["staleness"]) <= MAX_STALENESS
            elif event.name == "VersionPublished":
                self.published_versions.append(int(event["version"]))
        return tx

    def refused(self, error: str, call, *args):
        with reverts_named(error):
            call(*args)
        self.reverted = True
        self.stats.steps += 1
        self.stats.reverted += 1
        self.stats.count(f"x{error}")

    def deadline(self) -> int:
        return self.view[5][3]

    # ------------------------------------------------------------ rules

    @rule(pick=PICK, base_back=st.sampled_from([-1, 0, 0, 0, 1, 1, 2]), kind=st.sampled_from(["ok"] * 6 + ["bad"]))
    def submit(self, pick, base_back, kind):
        if self.idle:
            return
        m = self.model
        device = self.devices[pick % len(self.devices)]
        base = max(0, m.version - base_back) if base_back >= 0 else m.version + 1
        update = digest(self.fresh())
        samples = 1 + pick % MAX_SAMPLES
        if kind == "bad":
            update, samples = [(ZERO32, samples), (update, 0), (update, MAX_SAMPLES + 1)][pick % 3]
        if m.status != Status.Running:
            error = "TaskNotRunning"
        elif update == ZERO32:
            error = "EmptyDigest"
        elif samples == 0:
            error = "ZeroSamples"
        elif samples > MAX_SAMPLES:
            error = "TooManySamples"
        elif str(device) not in m.approved:
            error = "NotApprovedDevice"
        elif base > m.version:
            error = "UnknownVersion"
        elif m.version - base > MAX_STALENESS:
            error = "TooStale"
        elif m.count >= K:
            error = "BuffersFull"
        elif m.last_buffer.get(str(device)) == m.filling:
            error = "AlreadyBuffered"
        else:
            error = None
        args = (base, update, samples, {"from": device})
        if error:
            return self.refused(error, self.task.submitUpdate, *args)
        tx = self.done(self.task.submitUpdate(*args), "submit")
        m.last_buffer[str(device)] = m.filling
        m.inputs_hash = fold(m.inputs_hash, device, update, samples, base, m.version - base)
        m.count += 1
        if m.count == K:
            assert bytes(tx.events["BufferFull"]["inputsHash"]) == m.inputs_hash
            m.buffers[m.filling] = {"hash": m.inputs_hash, "count": K, "status": BufferStatus.Full}
            if m.phase == AggPhase.Idle:
                m.next_buffer()
                self.stats.count("aggregation_opened")

    @rule(who=PICK, kind=st.sampled_from(["honest"] * 5 + ["dissent", "bad_inputs", "wrong_buffer"]))
    def commit(self, who, kind):
        if self.idle:
            return
        m = self.model
        aggregator = self.aggregators[who % 3]
        buffer = m.pending if kind != "wrong_buffer" else m.pending + 1
        info = m.buffers.get(m.pending, {"hash": b"\x01" * 20, "count": 0})
        result = BufResult(
            buffer=buffer,
            attempt=m.attempt,
            inputs_hash=info["hash"] if kind != "bad_inputs" else b"\x02" * 20,
            model=digest(f"model-{m.pending}") if kind != "dissent" else digest(self.fresh()),
            report=digest("report"),
            accepted=info["count"],
            salt=digest(self.fresh()),
        )
        previous = m.commitments.get(str(aggregator))
        if m.status != Status.Running:
            error = "TaskNotRunning"
        elif m.phase != AggPhase.Committing:
            error = "WrongPhase"
        elif buffer != m.pending:
            error = "WrongBuffer"
        elif previous and (previous.buffer, previous.attempt) == (buffer, m.attempt):
            error = "AlreadyCommitted"
        else:
            error = None
        args = (buffer, result.commitment(self.task, aggregator), {"from": aggregator})
        if error:
            return self.refused(error, self.task.commitResult, *args)
        self.done(self.task.commitResult(*args), "commit")
        m.commitments[str(aggregator)] = Commitment(buffer, m.attempt, result)
        m.commits += 1
        if m.commits == 3:
            m.phase = AggPhase.Revealing
            self.stats.count("reveal_opened")

    @rule(who=PICK)
    def reveal(self, who):
        if self.idle:
            return
        m = self.model
        aggregator = self.aggregators[who % 3]
        c = m.commitments.get(str(aggregator))
        if c is None:
            return
        t = clear_of(self.deadline())
        r = c.result
        current = m.status == Status.Running and (c.buffer, c.attempt) == (m.pending, m.attempt)
        in_window = current and m.phase == AggPhase.Revealing
        if c.revealed:
            error = "AlreadyRevealed"
        elif in_window and t + 1 >= self.deadline():
            error = "RevealWindowClosed"
        elif in_window and r.inputs_hash != m.buffers[c.buffer]["hash"]:
            error = "InputsMismatch"
        elif in_window or m.published.get(c.buffer) == c.attempt:
            error = None
        elif current:
            error = "WrongPhase"
        else:
            error = "RevealWindowClosed"
        args = (r.buffer, r.inputs_hash, r.model, r.report, r.accepted, r.salt, {"from": aggregator})
        if error:
            return self.refused(error, self.task.revealResult, *args)
        tx = self.done(self.task.revealResult(*args), "reveal" if in_window else "late_reveal")
        c.revealed = True
        if not in_window:
            return
        key = result_key(r.inputs_hash, r.model, r.accepted)
        m.votes[key] = m.votes.get(key, 0) + 1
        if m.votes[key] < THRESHOLD:
            assert "VersionPublished" not in tx.events
            return
        assert tx.events["VersionPublished"]["version"] == m.version + 1
        self.stats.count("published")
        m.published[c.buffer] = c.attempt
        m.buffers[c.buffer]["status"] = BufferStatus.Published
        m.version += 1
        if m.version >= NUM_VERSIONS:
            m.status, m.phase = Status.Finished, AggPhase.Idle
            self.stats.count("finished")
        else:
            m.next_buffer()

    @rule(wrong=st.booleans())
    def close_window(self, wrong):
        if self.idle:
            return
        m = self.model
        t = clear_of(self.deadline())
        buffer = m.pending + (1 if wrong else 0)
        if m.status != Status.Running:
            error = "TaskNotRunning"
        elif m.phase == AggPhase.Idle:
            error = "WrongPhase"
        elif buffer != m.pending:
            error = "WrongBuffer"
        elif t + 1 < self.deadline():
            error = "DeadlineNotReached"
        else:
            error = None
        if error:
            return self.refused(error, self.task.closeAggregationWindow, buffer, {"from": self.admin})
        tx = self.done(self.task.closeAggregationWindow(buffer, {"from": self.admin}), "close_window")
        if m.phase == AggPhase.Committing and m.commits >= THRESHOLD:
            m.phase = AggPhase.Revealing
            return
        assert "AggregationFailed" in tx.events
        if m.attempt < MAX_ATTEMPTS:
            m.open_attempt(m.pending, m.attempt + 1)
            self.stats.count("reaggregated")
            return
        m.buffers[m.pending]["status"] = BufferStatus.Discarded
        self.stats.count("discarded")
        m.next_buffer()

    def progress(self, pick):
        """The next useful step (valid and honest), so that examples reach publications, full pipelines, stale
        updates and finished tasks: a submission from an approved device not yet in the filling buffer, trained
        from the current version or one or two behind; else an honest commitment; else a reveal."""
        m = self.model
        if m.phase == AggPhase.Committing and pick % 2:
            idle = [i for i, a in enumerate(self.aggregators) if self.committed_now(a) is False]
            if idle:
                return self.commit(idle[pick % len(idle)], "honest")
        if m.phase == AggPhase.Revealing and pick % 2:
            waiting = [i for i, a in enumerate(self.aggregators) if self.committed_now(a) is True]
            if waiting:
                return self.reveal(waiting[pick % len(waiting)])
        if m.phase == AggPhase.Idle and m.count >= MIN_BUFFER and pick % 4 == 0:
            # the awake devices have submitted; the rest sleep past bufferDuration: close the buffer early
            brownie.chain.sleep(BUFFER_DURATION + 20)
            return self.close_buffer(False)
        fresh = [
            i for i, d in enumerate(self.devices) if str(d) in m.approved and m.last_buffer.get(str(d)) != m.filling
        ]
        if fresh:
            return self.submit(fresh[pick % len(fresh)], [0, 0, 1, 2][pick % 4], "ok")
        return self.sleep(20)

    def committed_now(self, aggregator) -> bool | None:
        """None: no commitment to the current attempt; False/True: committed and not revealed / revealed."""
        m = self.model
        c = m.commitments.get(str(aggregator))
        if c is None or (c.buffer, c.attempt) != (m.pending, m.attempt):
            return False if m.phase == AggPhase.Committing else None
        return None if c.revealed else True

    @rule(pick=PICK)
    def step(self, pick):
        if not self.idle:
            self.progress(pick)

    @rule(pick=PICK)
    def step_again(self, pick):
        if not self.idle:
            self.progress(pick)

    @rule(pick=PICK)
    def step_once_more(self, pick):
        if not self.idle:
            self.progress(pick)

    @rule(wrong=st.sampled_from([False, False, False, True]))
    def close_buffer(self, wrong):
        """Early close of the filling buffer (sleeping devices)."""
        if self.idle:
            return
        m = self.model
        deadline = self.view[6] + BUFFER_DURATION
        t = clear_of(deadline)
        buffer = m.filling + (1 if wrong else 0)
        if m.status != Status.Running:
            error = "TaskNotRunning"
        elif buffer != m.filling:
            error = "WrongBuffer"
        elif m.phase != AggPhase.Idle:
            error = "BufferPending"
        elif m.count < MIN_BUFFER:
            error = "TooFewUpdates"
        elif t + 1 < deadline:
            error = "DeadlineNotReached"
        else:
            error = None
        if error:
            return self.refused(error, self.task.closeBuffer, buffer, {"from": self.admin})
        tx = self.done(self.task.closeBuffer(buffer, {"from": self.admin}), "close_buffer")
        assert bytes(tx.events["BufferFull"]["inputsHash"]) == m.inputs_hash
        m.buffers[m.filling] = {"hash": m.inputs_hash, "count": m.count, "status": BufferStatus.Full}
        m.aggregate_filling()

    @rule(pick=PICK, leave=st.sampled_from([False, False, True]))
    def churn(self, pick, leave):
        if self.idle:
            return
        m = self.model
        device = self.devices[pick % len(self.devices)]
        if leave:
            if str(device) not in m.approved:
                return self.refused("NotApprovedDevice", self.task.removeDevice, device, {"from": device})
            self.done(self.task.removeDevice(device, {"from": device}), "leave")
            m.approved.discard(str(device))
        else:
            if m.status != Status.Running:
                return self.refused("TaskNotRunning", self.task.approveDevices, [device], {"from": self.admin})
            self.done(self.task.approveDevices([device], {"from": self.admin}), "join")
            m.approved.add(str(device))

    @rule(seconds=st.sampled_from([20, 20, 120, 320, 650]))
    def sleep(self, seconds):
        if self.idle:
            return
        brownie.chain.sleep(seconds)

    # ------------------------------------------------------------ invariants

    @invariant()
    def matches_model(self):
        if self.idle:
            return
        previous, self.view = self.view, self.observe()
        if self.reverted:
            assert self.view == previous
            self.reverted = False
        m = self.model
        status, version, buffer, count, inputs_hash, agg, _ = self.view
        assert (status, version, buffer, count, inputs_hash) == (m.status, m.version, m.filling, m.count, m.inputs_hash)
        if m.status == Status.Running:
            assert (agg[0], agg[1]) == (m.pending, m.phase)
            if m.phase != AggPhase.Idle:
                assert (agg[2], agg[4]) == (m.attempt, m.commits)
                assert m.pending == m.filling - 1  # one pending, one filling
        assert self.published_versions == list(range(1, len(self.published_versions) + 1))
        assert len(m.published) == m.version
        for devices in self.buffer_devices.values():
            assert len(devices) == len(set(devices))
        if m.version:
            assert bytes(self.task.versionDigest(m.version)) != ZERO32
        assert now() > 0


def test_buffered_state_machine(accounts):
    stats = StepStats("BufferedTask")
    BufferedMachine.configure(accounts, stats)
    brownie.chain.snapshot()
    for _ in range(4):
        run_state_machine_as_test(BufferedMachine, settings=settings(**SETTINGS))
        if stats.steps >= TARGET_STEPS:
            break
    print("\n" + stats.report())
    # the frequent outcomes must occur (rarer ones, such as discarded buffers, early closes and TooStale, show in
    # the report and are pinned by the example-based tests)
    for outcome in ("submit", "commit", "reveal", "published", "xBuffersFull"):
        assert stats.outcomes.get(outcome, 0) > 0, (outcome, stats.report())
    assert stats.steps >= TARGET_STEPS, stats.report()
