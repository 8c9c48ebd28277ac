"""Virtual devices of an asynchronous buffered task: many devices in one process, sharing one chain connection,
one event subscription and one IPFS client (`BufferedContext`), each with its own key, nonce, data partition, model,
training seeds and timing.

Each device does what `BufferedDeviceRunner.run` does (train from the latest version, upload, submit tagged with
that version, act on a refusal per `after_refusal`), with the runner's own `train_update` and `submit`. What the
pool changes is time: instead of sleeping, a device that "trains" for its speed's duration (or naps, holding its
update) is put in a ready queue and the pool serves whichever device is due next, so a hundred devices of different
speeds fit in one process on two cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from eth_account.signers.local import LocalAccount

from fedchain.chain.buffered import Status
from fedchain.device.buffered import (
    WAKE_EVENTS,
    AcceptedUpdate,
    BufferedContext,
    BufferedDeviceRunner,
    BufferedDeviceSettings,
    HeldUpdate,
    Next,
)
from fedchain.device.schedule import DeviceTiming, ReadyQueue

log = logging.getLogger("fedchain.device.buffered_pool")


@dataclass
class _Slot:
    """One virtual device and what it holds."""

    runner: BufferedDeviceRunner
    held: HeldUpdate | None = None
    waiting: bool = False  # for a buffer to open (BuffersFull, AlreadyBuffered)
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
                for index in queue.pop_due(time.monotonic()):
                    if not self._act(index, filling.version, queue, on_accepted):
                        return self.stats
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

    def _act(
        self,
        index: int,
        version: int,
        queue: ReadyQueue,
        on_accepted: Callable[[AcceptedUpdate], None] | None,
    ) -> bool:
        """Device `index` is due: train (its update is ready after its duration) or submit what it holds. False when
        the task no longer takes updates."""
        slot = self.slots[index]
        runner = slot.runner
        if slot.held is None:
            started = time.monotonic()
            slot.held, seconds = runner.train_update(version)
            self.stats.trained += 1
            queue.push(index, started + seconds + runner.timing.nap_seconds(runner.trained))
            return True
        try:
            outcome = runner.submit(slot.held)
        except PermissionError as exc:  # removed from the task: this device leaves, the others go on
            log.warning("%s", exc)
            slot.removed = True
            return True
        now = time.monotonic()
        if isinstance(outcome, AcceptedUpdate):
            slot.held = None
            self.stats.accepted += 1
            if on_accepted is not None:
                on_accepted(outcome)
            queue.push(index, now)
            return True
        self.stats.refused[outcome.name] = self.stats.refused.get(outcome.name, 0) + 1
        if outcome is Next.RETRAIN:
            slot.held = None
            queue.push(index, now)
        elif outcome is Next.WAIT_AND_RESUBMIT:
            slot.waiting = True
        else:
            return False
        return True

    def _wait(self, until: float | None, queue: ReadyQueue) -> None:
        """Until the next device is due (at most `state_recheck`), or an event wakes the waiting devices."""
        now = time.monotonic()
        deadline = now + self.settings.state_recheck
        if until is not None:
            deadline = min(deadline, until)
        while True:
            if any(e.name in WAKE_EVENTS for e in self.context.follower.poll()):
                waiting = [i for i, s in enumerate(self.slots) if s.waiting]
                for i in waiting:
                    self.slots[i].waiting = False
                queue.extend(waiting, time.monotonic())
                if waiting:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.context.notifier.wait(left)
