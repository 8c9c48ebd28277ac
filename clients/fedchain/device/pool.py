"""Virtual devices: many devices in one process, sharing one chain connection, one event subscription and one IPFS
client, each still with its own key, nonce, data partition, RNG seeds and model, and its own transaction and IPFS
content every round.

The per-device work is `DeviceRunner`'s own (`train_update`, `upload`), so a device trains the same bits in a pool
as in a process of its own, and the aggregate (which sorts updates by device) is bit-identical too. What the pool
changes is the I/O around it: the round's global model is fetched once, uploads run on a few threads, and every
device's transaction is signed locally and sent without waiting, so a round costs one receipt wait, not one per
device. Secure aggregation is not pooled: its setup, masking and unmasking steps wait on the other devices.

A pool that dies is simply started again: each device's last submitted round is read back from the chain, and
devices that already submitted to the open round wait for the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eth_account.signers.local import LocalAccount

from fedchain.chain import ContractRevert, EventFollower, Phase, RoundInfo, TaskClient
from fedchain.chain.batch import SignedUpdate, UpdateBatch, make_batch
from fedchain.chain.signing import sign_update
from fedchain.chain.task import GAS_LIMITS, encode_submit_update
from fedchain.chain.tx import read_nonces, sign_and_send, wait_receipts
from fedchain.device.runner import (
    ROUND_MOVED_ON,
    WAKE_EVENTS,
    DeviceContext,
    DeviceRunner,
    DeviceSettings,
    RoundOutcome,
    TrainedUpdate,
)
from fedchain.storage import StorageError, cid_to_digest, digest_to_cid

log = logging.getLogger("fedchain.device.pool")

# Updates per multi-file IPFS add.
UPLOAD_BATCH = 256


@dataclass(frozen=True)
class PoolRound:
    """What one round did in a pool: how many of its devices trained and how many updates landed on chain."""

    round: int
    trained: int
    submitted: int
    moved_on: int
    train_seconds: float
    upload_seconds: float
    submit_seconds: float
    gas_used: int

    @classmethod
    def of(
        cls, round_index: int, trained: int, results: Sequence[RoundOutcome | None], times: Sequence[float]
    ) -> PoolRound:
        """A round's record from each device's outcome (None: it moved on) and the times (perf_counter) at which
        training started, uploading started, submitting started and the round ended."""
        landed = [r for r in results if r is not None]
        t0, t1, t2, t3 = times
        return cls(
            round=round_index,
            trained=trained,
            submitted=len(landed),
            moved_on=len(results) - len(landed),
            train_seconds=t1 - t0,
            upload_seconds=t2 - t1,
            submit_seconds=t3 - t2,
            gas_used=sum(r.gas_used for r in landed),
        )


def due_devices(
    addresses: Sequence[str], last_round: Mapping[str, int], removed: Collection[str], round_index: int
) -> list[str]:
    """The devices (in pool order) still to submit to round `round_index`: not removed, and whose last submitted
    round is another one."""
    return [a for a in addresses if a not in removed and last_round.get(a, 0) != round_index]


def recorded_entries(task_address: str, batches: Iterable[tuple[UpdateBatch, bytes]]) -> set[tuple[str, bytes, int]]:
    """(device, digest, samples) of every entry of the batches the chain recorded, given as (batch file, the
    Merkle root in its event): a file for another task, or that does not hash to its recorded root, counts for
    nothing (a relayer cannot claim entries its transaction did not commit to)."""
    found: set[tuple[str, bytes, int]] = set()
    for batch, root in batches:
        if batch.task.lower() != task_address.lower() or batch.root() != root:
            continue
        found.update((e.device, e.update_digest, e.num_samples) for e in batch.entries)
    return found


class DevicePool:
    """Runs `members` (account, partition index) as virtual devices of one task until it finishes."""

    def __init__(
        self,
        settings: DeviceSettings,
        members: Sequence[tuple[LocalAccount, int]],
        context: DeviceContext | None = None,
        relayer: LocalAccount | None = None,
        omit_from_batch: int = 0,
    ) -> None:
        if not members:
            raise ValueError("a device pool needs at least one device")
        self.settings = settings
        self._owns_context = context is None
        self.context = context if context is not None else DeviceContext.open(settings)
        if self.context.spec.privacy.secure_aggregation:
            raise ValueError(
                "secure aggregation is not pooled (each round waits on every device's setup and unmask shares): "
                "run `fedchain device` per device for this task"
            )
        self.devices = [
            DeviceRunner(replace(settings, partition_index=partition), account, self.context)
            for account, partition in members
        ]
        # With a relayer account (RELAYER_ROLE) the pool's devices sign their updates (EIP-712) and the round's
        # signed updates go on chain as one batch: one transaction per pool per round, whatever its size.
        self.relayer = TaskClient.for_account(self.context.w3, settings.task_address, relayer) if relayer else None
        # Evaluation only: a dishonest relayer that leaves this many signed updates out of each batch.
        self.omit_from_batch = omit_from_batch
        self._last_round: dict[str, int] = {}
        self._removed: set[str] = set()
        self.follower = EventFollower(self.context.w3, self.context.task.address, self.context.task.abi, from_block=0)

    def __len__(self) -> int:
        return len(self.devices)

    def ensure_registered(self) -> None:
        """Ask to join for every device not yet approved, then wait for the admin's approval of all of them."""
        waiting = []
        infos = self.context.task.device_infos([d.address for d in self.devices])
        for device, info in zip(self.devices, infos, strict=True):
            self._last_round[device.address] = info.last_round
            if not info.approved:
                device.task.request_join()
                waiting.append(device)
        deadline = time.monotonic() + self.settings.join_timeout
        while waiting:
            approved = self.context.task.device_infos([d.address for d in waiting])
            waiting = [d for d, info in zip(waiting, approved, strict=True) if not info.approved]
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting)} devices were not approved within {self.settings.join_timeout}s")
            if waiting:
                time.sleep(self.settings.poll_interval)
        # Every device's nonce in one request; from here on each sender counts its own.
        nonces = read_nonces(self.context.w3, [d.address for d in self.devices])
        for device, nonce in zip(self.devices, nonces, strict=True):
            assert device.task.sender is not None
            device.task.sender.set_nonce(nonce)
        log.info("pool of %d devices registered", len(self.devices))

    def run(
        self,
        max_rounds: int | None = None,
        on_round: Callable[[PoolRound], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        """React to round events until the task ends; returns the number of rounds this pool trained in.
        `on_ready` is called once every device is registered and the pool listens for rounds."""
        self.ensure_registered()
        self.follower.next_block = self.context.w3.eth.block_number
        if on_ready is not None:
            on_ready()
        task = self.context.task
        rounds = 0
        state = task.current_round()
        while state.phase not in (Phase.FINISHED, Phase.CANCELLED):
            if state.phase == Phase.OPEN:
                outcome = self.run_round(state)
                if outcome is not None and outcome.trained:
                    rounds += 1
                    if on_round is not None:
                        on_round(outcome)
                    if max_rounds is not None and rounds >= max_rounds:
                        break
            self._wait_for_events()
            state = task.current_round()
        log.info("task %s is %s; this pool trained in %d rounds", task.address, state.phase.name.lower(), rounds)
        if self._owns_context:
            self.context.close()
        return rounds

    def due(self, state: RoundInfo) -> list[DeviceRunner]:
        """The pool's devices that have not yet submitted to the open round."""
        due = set(due_devices([d.address for d in self.devices], self._last_round, self._removed, state.round))
        return [d for d in self.devices if d.address in due]

    def run_round(self, state: RoundInfo) -> PoolRound | None:
        """Train every due device, upload their updates and send their transactions; wait for the receipts."""
        due = self.due(state)
        if not due:
            return None
        t0 = time.perf_counter()
        trained: list[TrainedUpdate] = [device.train_update(state) for device in due]
        t1 = time.perf_counter()
        cids = self._upload(due, trained)
        t2 = time.perf_counter()
        if self.relayer is not None:
            results = self._relay(state, due, trained, cids)
        else:
            results = self._submit(state.round, due, trained, cids)
        outcome = PoolRound.of(state.round, len(trained), results, (t0, t1, t2, time.perf_counter()))
        log.info(
            "round %d: %d devices trained, %d updates landed (%d moved on); seconds: train %.3f upload %.3f "
            "submit %.3f",
            state.round,
            outcome.trained,
            outcome.submitted,
            outcome.moved_on,
            outcome.train_seconds,
            outcome.upload_seconds,
            outcome.submit_seconds,
        )
        return outcome

    def _upload(self, devices: list[DeviceRunner], updates: list[TrainedUpdate]) -> list[str]:
        """The round's updates in a few multi-file adds (each update still its own IPFS file and CID); sealed
        updates are encrypted per device first."""
        blobs = [device.encode(update) for device, update in zip(devices, updates, strict=True)]
        cids: list[str] = []
        for start in range(0, len(blobs), UPLOAD_BATCH):
            cids.extend(self.context.ipfs.add_many(blobs[start : start + UPLOAD_BATCH]))
        return cids

    def _submit(
        self, round_index: int, devices: list[DeviceRunner], updates: list[TrainedUpdate], cids: list[str]
    ) -> list[RoundOutcome | None]:
        """Every device's own `submitUpdate`, signed here and sent in JSON-RPC batches; then the receipts."""
        fees = devices[0].task.sender.fees()  # type: ignore[union-attr]

        def sign(i: int) -> tuple[dict[str, Any], bytes]:
            device, update, cid = devices[i], updates[i], cids[i]
            data = encode_submit_update(round_index, cid_to_digest(cid), update.num_samples)
            assert device.task.sender is not None
            return device.task.sender.sign_data(device.task.address, data, GAS_LIMITS["submitUpdate"], fees)

        # Sent while the rest are signed (see sign_and_send): ~0.96 of the node's ceiling against ~0.83 when all
        # were signed first (bench throughput, 1,000 devices).
        txs, sent = sign_and_send(self.context.w3, len(devices), sign)
        hashes = [h for h in sent if isinstance(h, bytes)]
        receipts = dict(zip(hashes, wait_receipts(self.context.w3, hashes), strict=True))
        results: list[RoundOutcome | None] = []
        for device, update, cid, tx, answer in zip(devices, updates, cids, txs, sent, strict=True):
            sender = device.task.sender
            assert sender is not None
            if not isinstance(answer, bytes):  # refused by the node (e.g. a nonce that moved): retried next wake
                log.warning("round %d: %s's transaction was refused: %s", round_index, device.address, answer)
                sender.forget_nonce()
                results.append(None)
                continue
            receipt = receipts[answer]
            if int(receipt["status"], 16) != 1:
                # Replayed from the device's address: the signed transaction dict does not name its sender, and from
                # another address the contract would answer NotApprovedDevice (and the device would leave the pool).
                replay, block = {**tx, "from": device.address}, int(receipt["blockNumber"], 16)
                self._moved_on(round_index, device, sender.explain_failure(replay, block, None))
                results.append(None)
                continue
            self._last_round[device.address] = round_index
            gas = int(receipt["gasUsed"], 16)
            results.append(RoundOutcome(round_index, cid, update.num_samples, update.loss, update.train_seconds, gas))
        return results

    def _relay(
        self, state: RoundInfo, devices: list[DeviceRunner], updates: list[TrainedUpdate], cids: list[str]
    ) -> list[RoundOutcome | None]:
        """Each device signs its update; the relayer publishes the signed batch on IPFS and records its Merkle root
        on chain. Then each device checks, from the chain and IPFS alone, that its update is in a recorded batch,
        and submits directly if the relayer left it out."""
        assert self.relayer is not None
        task = self.context.task
        chain_id = self.context.chain_id
        entries = [
            SignedUpdate(
                d.address,
                cid_to_digest(cid),
                u.num_samples,
                sign_update(d.account, chain_id, task.address, state.round, cid_to_digest(cid), u.num_samples),
            )
            for d, u, cid in zip(devices, updates, cids, strict=True)
        ]
        relayed = entries[self.omit_from_batch :]
        if self.omit_from_batch:
            log.warning("relayer leaves %d signed updates out of its batch (evaluation mode)", self.omit_from_batch)
        gas = 0
        if relayed:
            batch = make_batch(task.address, chain_id, state.round, relayed)
            batch_cid = self.context.ipfs.add(batch.to_json())
            try:
                tx = self.relayer.submit_update_batch(
                    state.round, cid_to_digest(batch_cid), batch.root(), len(batch.entries), batch.total_samples
                )
                gas = tx.gas_used
                log.info(
                    "round %d: relayed %d signed updates in batch %s, gas %d", state.round, len(relayed), batch_cid, gas
                )
            except ContractRevert as exc:
                if exc.error not in ROUND_MOVED_ON:
                    raise
                log.info("round %d closed before the batch landed (%s)", state.round, exc.error)
        included = self._recorded_entries(state.round)
        results: list[RoundOutcome | None] = [None] * len(devices)
        missing = []
        for i, (device, update, cid, entry) in enumerate(zip(devices, updates, cids, entries, strict=True)):
            if (entry.device, entry.update_digest, entry.num_samples) in included:
                self._last_round[device.address] = state.round
                results[i] = RoundOutcome(state.round, cid, update.num_samples, update.loss, update.train_seconds, 0)
            else:
                missing.append(i)
        if missing:
            log.warning(
                "round %d: %d signed updates are in no batch recorded on chain: their devices submit directly",
                state.round,
                len(missing),
            )
            direct = self._submit(
                state.round, [devices[i] for i in missing], [updates[i] for i in missing], [cids[i] for i in missing]
            )
            for i, outcome in zip(missing, direct, strict=True):
                results[i] = outcome
        if gas and any(results):
            first = next(r for r in results if r is not None)
            results[results.index(first)] = replace(first, gas_used=first.gas_used + gas)
        return results

    def _recorded_entries(self, round_index: int) -> set[tuple[str, bytes, int]]:
        """(device, digest, samples) of every entry of the round's batches as the chain recorded them: each batch
        file is fetched by the digest in its event and must hash to the recorded Merkle root."""
        recorded: list[tuple[UpdateBatch, bytes]] = []
        opened = next(self.follower.history("RoundOpened", round=round_index), None)
        start = opened.block_number if opened is not None else 0
        for event in self.follower.history("UpdateBatchSubmitted", from_block=start, round=round_index):
            try:
                batch = UpdateBatch.from_json(self.context.ipfs.cat(digest_to_cid(bytes(event.args["batchDigest"]))))
            except (StorageError, ValueError) as exc:
                log.warning("round %d: batch %s unreadable: %s", round_index, event.tx_hash, exc)
                continue
            recorded.append((batch, bytes(event.args["entriesRoot"])))
        return recorded_entries(self.context.task.address, recorded)

    def _moved_on(self, round_index: int, device: DeviceRunner, exc: ContractRevert) -> None:
        """A reverted submission: the round moved on, the device was removed, or something unexpected (raised)."""
        if exc.error == "NotApprovedDevice":
            log.warning("device %s is no longer approved: it leaves the pool", device.address)
            self._removed.add(device.address)
        elif exc.error in ROUND_MOVED_ON:
            log.info("round %d closed before %s's update landed (%s)", round_index, device.address, exc.error)
            if exc.error == "AlreadySubmitted":
                self._last_round[device.address] = round_index
        else:
            raise exc

    def _wait_for_events(self) -> None:
        deadline = time.monotonic() + self.settings.state_recheck
        while time.monotonic() < deadline:
            events = self.follower.poll()
            for event in events:
                if event.name == "DeviceRemoved":
                    self._removed.add(event.args["device"])
            if any(e.name in WAKE_EVENTS for e in events):
                return
            self.context.notifier.wait(deadline - time.monotonic())
