"""Synchronous rounds with client sampling and heterogeneous device speeds, on a pool of virtual devices: the
synchronous baseline of `fedchain bench online`.

Each round samples `per_round` devices of the whole fleet (`schedule.sample_round`: every pool computes the same
sample); a sampled device trains (really) and its update is submitted when its simulated duration has passed since
the round opened (or since it woke, if it was still asleep from an earlier round). The round closes as the contract
says: once all sampled devices submitted (maxUpdates = per_round), or at its deadline with at least minUpdates.
A device still "training" when its round moves on loses that update, as a straggler in synchronous FL does, and
stays busy until its duration is over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from eth_account.signers.local import LocalAccount

from fedchain.chain import Phase, RoundInfo
from fedchain.device.pool import DevicePool, PoolRound
from fedchain.device.runner import DeviceContext, DeviceRunner, DeviceSettings, RoundOutcome, TrainedUpdate
from fedchain.device.schedule import DeviceTiming, round_ready_times, sample_round

log = logging.getLogger("fedchain.device.sampled_pool")

# How often a device waiting to submit checks whether its round moved on.
ROUND_CHECK_SECONDS = 0.25


class SampledDevicePool(DevicePool):
    """A `DevicePool` whose devices take part only when sampled, each taking its timing's duration per round.
    `members` are (account, fleet index, timing); device i holds data partition i % `settings.num_partitions` (so
    several devices may share a partition's recordings)."""

    def __init__(
        self,
        settings: DeviceSettings,
        members: Sequence[tuple[LocalAccount, int, DeviceTiming]],
        num_devices: int,
        per_round: int,
        sample_seed: int = 0,
        context: DeviceContext | None = None,
    ) -> None:
        shares = settings.num_partitions
        super().__init__(settings, [(account, index % shares) for account, index, _ in members], context)
        self.num_devices = num_devices
        self.per_round = per_round
        self.sample_seed = sample_seed
        self._fleet_index = {d.address: index for d, (_, index, _) in zip(self.devices, members, strict=True)}
        self._timing = {d.address: timing for d, (_, _, timing) in zip(self.devices, members, strict=True)}
        self._trained = dict.fromkeys(self._timing, 0)
        self._busy_until: dict[str, float] = {}

    def due(self, state: RoundInfo) -> list[DeviceRunner]:
        sampled = sample_round(self.num_devices, self.per_round, state.round, self.sample_seed)
        return [d for d in super().due(state) if self._fleet_index[d.address] in sampled]

    def run_round(self, state: RoundInfo) -> PoolRound | None:
        """Train the round's sampled devices, then submit each update when its device would have finished."""
        due = self.due(state)
        if not due:
            return None
        opened = time.monotonic()
        t0 = time.perf_counter()
        trained = [device.train_update(state) for device in due]
        t1 = time.perf_counter()
        cids = self._upload(due, trained)
        t2 = time.perf_counter()
        durations = {}
        for i, (device, update) in enumerate(zip(due, trained, strict=True)):
            self._trained[device.address] += 1
            durations[i] = self._timing[device.address].duration(update.train_seconds, self._trained[device.address])
        busy = {i: self._busy_until.get(d.address, opened) for i, d in enumerate(due)}
        ready = round_ready_times(opened, durations, busy)
        for i, device in enumerate(due):
            self._busy_until[device.address] = ready[i]
        results = self._submit_when_ready(state.round, due, trained, cids, ready)
        outcome = PoolRound.of(state.round, len(trained), results, (t0, t1, t2, time.perf_counter()))
        log.info(
            "round %d: %d sampled devices trained, %d updates landed, %d too late",
            state.round,
            outcome.trained,
            outcome.submitted,
            outcome.moved_on,
        )
        return outcome

    def _submit_when_ready(
        self,
        round_index: int,
        devices: list[DeviceRunner],
        updates: list[TrainedUpdate],
        cids: list[str],
        ready: dict[int, float],
    ) -> list[RoundOutcome | None]:
        """Submit each update at its ready time (those due together in one batch of transactions), until the round
        moves on: the updates not yet submitted then are lost."""
        results: list[RoundOutcome | None] = [None] * len(devices)
        pending = sorted(ready, key=lambda i: ready[i])
        while pending:
            now = time.monotonic()
            if ready[pending[0]] > now:
                if not self._round_still_open(round_index):
                    log.info("round %d moved on with %d sampled devices still training", round_index, len(pending))
                    break
                time.sleep(min(ROUND_CHECK_SECONDS, ready[pending[0]] - now))
                continue
            batch = [i for i in pending if ready[i] <= now]
            pending = pending[len(batch) :]
            sent = self._submit(
                round_index, [devices[i] for i in batch], [updates[i] for i in batch], [cids[i] for i in batch]
            )
            for i, outcome in zip(batch, sent, strict=True):
                results[i] = outcome
        return results

    def _round_still_open(self, round_index: int) -> bool:
        state = self.context.task.current_round()
        return state.round == round_index and state.phase == Phase.OPEN
