"""Virtual devices of an asynchronous buffered task: many devices in one process, sharing one chain connection,
one event subscription and one IPFS client (`BufferedContext`), each with its own key, nonce, data partition, model,
training seeds and timing.

Each device does what `BufferedDeviceRunner.run` does (train from the latest version, upload, submit tagged with
that version, act on a refusal per `after_refusal`), with the runner's own `train_update` and `submit`. What the
pool changes is time: instead of sleeping, a device that "trains" for its speed's duration (or naps, holding its
update) is put in a ready queue and the pool serves whichever device is due next, so a hundred devices of different
speeds fit in one process on two cores. The devices due at the same moment send their submissions together (signed
here and sent while the rest are signed, receipts read in one batch), as the synchronous pool does; each submission
is still the device's own transaction, and a reverted one is explained and handled as `BufferedDeviceRunner.submit`
would.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from fedchain.chain import ContractRevert
from fedchain.chain.buffered import GAS_LIMITS, Status
from fedchain.chain.task import encode_submit_update
from fedchain.chain.tx import sign_and_send, wait_receipts
from fedchain.device.buffered import (
    WAKE_EVENTS,
    AcceptedUpdate,
    BufferedContext,
    BufferedDeviceRunner,
    BufferedDeviceSettings,
    HeldUpdate,
    Next,
    after_refusal,
)
from fedchain.device.schedule import DeviceTiming, ReadyQueue
from fedchain.storage import cid_to_digest

log = logging.getLogger("fedchain.device.buffered_pool")

UPDATE_BUFFERED_TOPIC = "0x" + keccak(text="UpdateBuffered(uint32,address,bytes32,uint32,uint32,uint32,uint32)").hex()


def wake_count(waiting: int, buffer_size: int, filled: int) -> int:
    """How many waiting devices to wake: the filling buffer's free places (none while it is full), at most all."""
    return min(waiting, max(0, buffer_size - filled))


def accepted_from_receipt(receipt: dict[str, Any], held: HeldUpdate) -> AcceptedUpdate:
    """The chain's record of an accepted update, from its transaction's raw receipt (the UpdateBuffered log:
    topics buffer and device; data digest, samples, base version, staleness, position)."""
    gas = int(receipt["gasUsed"], 16)
    for entry in receipt["logs"]:
        if entry["topics"] and entry["topics"][0].lower() == UPDATE_BUFFERED_TOPIC:
            data = bytes.fromhex(entry["data"][2:])
            return AcceptedUpdate(
                held.base_version, int(entry["topics"][1], 16), int.from_bytes(data[96:128]), held.cid, gas
            )
    return AcceptedUpdate(held.base_version, 0, -1, held.cid, gas)


@dataclass
class _Slot:
    """One virtual device and what it holds."""

    runner: BufferedDeviceRunner
    held: HeldUpdate | None = None
    waiting: bool = False  # for a buffer to open (BuffersFull, AlreadyBuffered); see BufferedDevicePool._waiting
    removed: bool = False  # no longer approved on the task


@dataclass
class PoolStats:
    """What a buffered pool did: trainings, accepted updates and refusals by outcome."""

    trained: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class BufferedDevicePool:
    """Runs `members` (account, partition index, timing) as virtual devices of one buffered task until it ends."""

    def __init__(
        self,
        settings: BufferedDeviceSettings,
        members: Sequence[tuple[LocalAccount, int, DeviceTiming]],
        context: BufferedContext | None = None,
    ) -> None:
        if not members:
            raise ValueError("a device pool needs at least one device")
        self.settings = settings
        self._owns_context = context is None
        self.context = context if context is not None else BufferedContext.open(settings)
        self.slots = [
            _Slot(BufferedDeviceRunner(replace(settings, partition_index=partition), account, self.context, timing))
            for account, partition, timing in members
        ]
        self.stats = PoolStats()
        # Devices holding an update until a buffer has room, in the order they started waiting.
        self._waiting: deque[int] = deque()

    def __len__(self) -> int:
        return len(self.slots)

    def run(
        self,
        max_updates: int | None = None,
        on_accepted: Callable[[AcceptedUpdate], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> PoolStats:
        """Serve the devices until the task finishes or is cancelled (or the pool's devices had `max_updates`
        updates accepted in all)."""
        reader = self.context.reader
        unapproved = [s.runner.address for s in self.slots if not reader.device_approved(s.runner.address)]
        if unapproved:
            raise PermissionError(f"{len(unapproved)} devices are not approved on task {reader.address}")
        if on_ready is not None:
            on_ready()
        queue = ReadyQueue()
        started = False
        try:
            while True:
                filling = reader.filling_buffer()
                if filling.status == Status.REGISTERING:
                    self._wait(None, queue)
                    continue
                if filling.status != Status.RUNNING:
                    break
                if not started:  # the task is running: every device begins
                    queue.extend(range(len(self.slots)), time.monotonic())
                    started = True
                due = queue.pop_due(time.monotonic())
                submitting = [i for i in due if self.slots[i].held is not None]
                training = [i for i in due if self.slots[i].held is None]
                if submitting and filling.count >= self.context.config.buffer_size:
                    # The filling buffer is full and waits for the pending one: the chain would refuse every
                    # submission (BuffersFull), so these devices wait for room without sending one.
                    self._hold(submitting)
                    submitting = []
                if submitting and not self._submit(submitting, queue, on_accepted):
                    return self.stats
                for index in training:
                    self._train(index, filling.version, queue)
                if max_updates is not None and self.stats.accepted >= max_updates:
                    return self.stats
                self._wait(queue.next_at(), queue)
        finally:
            if self._owns_context:
                self.context.close()
            log.info(
                "pool of %d buffered devices: %d trainings, %d updates accepted, refusals %s",
                len(self.slots),
                self.stats.trained,
                self.stats.accepted,
                self.stats.refused,
            )
        return self.stats

    def _train(self, index: int, version: int, queue: ReadyQueue) -> None:
        """Device `index` trains from `version` and uploads; its update is ready after its duration (and nap)."""
        slot = self.slots[index]
        runner = slot.runner
        started = time.monotonic()
        slot.held, seconds = runner.train_update(version)
        self.stats.trained += 1
        queue.push(index, started + seconds + runner.timing.nap_seconds(runner.trained))

    def _submit(
        self, indices: list[int], queue: ReadyQueue, on_accepted: Callable[[AcceptedUpdate], None] | None
    ) -> bool:
        """The due devices' submissions, signed here and sent in one batch; each outcome handled as the runner
        would. False when the task no longer takes updates."""
        w3 = self.context.w3
        slots = [self.slots[i] for i in indices]
        fees = slots[0].runner.task.sender.fees()  # type: ignore[union-attr]

        def sign(i: int) -> tuple[dict[str, Any], bytes]:
            held, sender = slots[i].held, slots[i].runner.task.sender
            assert held is not None and sender is not None
            data = encode_submit_update(held.base_version, cid_to_digest(held.cid), held.num_samples)
            return sender.sign_data(slots[i].runner.task.address, data, GAS_LIMITS["submitUpdate"], fees)

        txs, sent = sign_and_send(w3, len(slots), sign)
        hashes = [h for h in sent if isinstance(h, bytes)]
        receipts = dict(zip(hashes, wait_receipts(w3, hashes), strict=True))
        going = True
        now = time.monotonic()
        for index, slot, tx, answer in zip(indices, slots, txs, sent, strict=True):
            runner, held = slot.runner, slot.held
            assert held is not None and runner.task.sender is not None
            if not isinstance(answer, bytes):  # refused by the node (a nonce that moved): submit again
                log.warning("%s's submission was refused by the node: %s", runner.address, answer)
                runner.task.sender.forget_nonce()
                queue.push(index, now)
                continue
            receipt = receipts[answer]
            if int(receipt["status"], 16) == 1:
                accepted = accepted_from_receipt(receipt, held)
                slot.held = None
                self.stats.accepted += 1
                if on_accepted is not None:
                    on_accepted(accepted)
                queue.push(index, now)
                continue
            # Replayed from the device's address (the signed transaction dict does not name its sender).
            block = int(receipt["blockNumber"], 16)
            exc: ContractRevert = runner.task.sender.explain_failure({**tx, "from": runner.address}, block, None)
            if exc.error == "NotApprovedDevice":
                log.warning("device %s was removed from the task: it leaves the pool", runner.address)
                slot.removed = True
                continue
            try:
                outcome = after_refusal(exc.error)
            except ValueError as error:  # this device's update itself is broken: drop it, train a new one
                log.error("%s: %s", runner.address, error)
                outcome = Next.RETRAIN
            log.info(
                "update of %s from version %d refused: %s; %s",
                runner.address,
                held.base_version,
                exc.error,
                outcome.value,
            )
            self.stats.refused[exc.error] = self.stats.refused.get(exc.error, 0) + 1
            if outcome is Next.RETRAIN:
                slot.held = None
                queue.push(index, now)
            elif outcome is Next.WAIT_AND_RESUBMIT:
                self._hold([index])
            else:
                going = False
        return going

    def _wait(self, until: float | None, queue: ReadyQueue) -> None:
        """Until the next device is due (at most `state_recheck`), or an event wakes the waiting devices."""
        now = time.monotonic()
        deadline = now + self.settings.state_recheck
        if until is not None:
            deadline = min(deadline, until)
        while True:
            if any(e.name in WAKE_EVENTS for e in self.context.follower.poll()) and self._wake(queue):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                self._wake(queue)
                return
            self.context.notifier.wait(left)

    def _hold(self, indices: list[int]) -> None:
        for index in indices:
            self.slots[index].waiting = True
            self._waiting.append(index)

    def _wake(self, queue: ReadyQueue) -> int:
        """Put as many waiting devices back in the queue (first come, first served) as the filling buffer has
        room for: waking them all at every event would have most of them refused again (BuffersFull), a
        transaction each, at the cost of the devices that are ready to submit."""
        if not self._waiting:
            return 0
        filling = self.context.reader.filling_buffer()
        room = wake_count(len(self._waiting), self.context.config.buffer_size, filling.count)
        if filling.status != Status.RUNNING:
            room = len(self._waiting)  # let them find out (TaskNotRunning) and stop
        woken = [self._waiting.popleft() for _ in range(room)]
        for index in woken:
            self.slots[index].waiting = False
        queue.extend(woken, time.monotonic())
        return len(woken)
