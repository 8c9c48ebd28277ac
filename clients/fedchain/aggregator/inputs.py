"""A round's inputs as the aggregator reads them: the submissions recorded in the chain's events (checked against
the running inputs hash), the accepted entries of relayed batches, the previous round's server state, and the update
files fetched ahead from IPFS."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fedchain.aggregator.batches import BatchRecord, screen_round_batches
from fedchain.aggregator.round import Submission
from fedchain.chain import BatchSubmission, EventFollower, RoundInfo, inputs_hash
from fedchain.learning.aggregation import ServerState
from fedchain.storage import IpfsClient, IpfsUnavailable, StorageError, digest_to_cid, read_metadata
from fedchain.storage.binding import DEVICE_KEY

log = logging.getLogger("fedchain.aggregator")


class InputsNotYetVisible(RuntimeError):
    """The node's logs do not yet add up to the chain's inputs hash (a lagging node); retry shortly."""


@dataclass(frozen=True)
class RoundSubmissions:
    """The round's submissions in chain order, and the report records of relayed-batch entries left out."""

    accepted: list[Submission]
    batch_rejected: list[dict[str, Any]]


class SubmissionReader:
    """Reads one task's round inputs from its events (`history`, a follower from block 0) and IPFS."""

    def __init__(
        self,
        history: EventFollower,
        task_address: str,
        chain_id: int,
        ipfs: IpfsClient,
        max_samples_per_update: int,
        max_update_bytes: int,
    ) -> None:
        self.history = history
        self.task_address = task_address
        self.chain_id = chain_id
        self.ipfs = ipfs
        self.max_samples_per_update = max_samples_per_update
        self.max_update_bytes = max_update_bytes

    def read(self, state: RoundInfo) -> RoundSubmissions:
        """The round's submissions, checked against the chain's running inputs hash: the direct ones in chain
        order, then the accepted entries of relayed batches (see `_batch_submissions`)."""
        opened = next(self.history.history("RoundOpened", round=state.round), None)
        from_block = opened.block_number if opened is not None else 0
        direct = list(self.history.history("UpdateSubmitted", from_block=from_block, round=state.round))
        batched = list(self.history.history("UpdateBatchSubmitted", from_block=from_block, round=state.round))
        items: list[tuple[str, bytes, int] | BatchSubmission] = []
        for e in sorted(direct + batched, key=lambda e: (e.block_number, e.log_index)):
            if e.name == "UpdateSubmitted":
                items.append((e.args["device"], bytes(e.args["updateDigest"]), e.args["numSamples"]))
            else:
                items.append(
                    BatchSubmission(
                        e.args["relayer"],
                        bytes(e.args["entriesRoot"]),
                        bytes(e.args["batchDigest"]),
                        e.args["entries"],
                        e.args["totalSamples"],
                    )
                )
        claimed = len(direct) + sum(e.args["entries"] for e in batched)
        expected = inputs_hash(self.task_address, state.round, items)
        if expected != state.inputs_hash or claimed != state.updates:
            raise InputsNotYetVisible(
                f"round {state.round}: {len(direct)} submission and {len(batched)} batch events do not match the "
                f"chain's inputs hash ({state.updates} updates); retrying"
            )
        subs = [
            Submission(
                e.args["device"],
                bytes(e.args["updateDigest"]),
                e.args["numSamples"],
                e.block_number,
                e.tx_hash,
                (e.block_number, e.log_index, 0),
            )
            for e in direct
        ]
        if not batched:
            return RoundSubmissions(subs, [])
        relayed, rejected = self._batch_submissions(state, batched, [s.device for s in subs])
        return RoundSubmissions(subs + relayed, rejected)

    def _batch_submissions(
        self, state: RoundInfo, events: list[Any], direct_devices: list[str]
    ) -> tuple[list[Submission], list[dict[str, Any]]]:
        """The accepted entries of the round's relayed batches. Device approval is read at the block that closed
        the round, so every aggregator screens the entries alike; what is left out goes to the report."""
        closed = next(self.history.history("RoundReadyForAggregation", round=state.round), None)
        if closed is None:
            raise InputsNotYetVisible(f"round {state.round}: the event that closed the round is not visible yet")
        records = [
            BatchRecord(
                relayer=e.args["relayer"],
                batch_digest=bytes(e.args["batchDigest"]),
                entries_root=bytes(e.args["entriesRoot"]),
                entries=e.args["entries"],
                total_samples=e.args["totalSamples"],
                block_number=e.block_number,
                tx_hash=e.tx_hash,
                batch_cid=digest_to_cid(bytes(e.args["batchDigest"])),
                log_index=e.log_index,
            )
            for e in events
        ]

        def read(record: BatchRecord) -> bytes | None:
            try:
                return self.ipfs.cat(record.batch_cid, max_size=self.max_update_bytes)
            except IpfsUnavailable:
                raise  # our IPFS node is down: not the relayer's fault, retry the whole round later
            except StorageError as exc:
                log.warning("round %d: batch %s unavailable: %s", state.round, record.batch_cid, exc)
                return None

        approved = self._approved_devices(closed.block_number)

        def is_approved(device: str) -> bool:
            return device.lower() in approved

        accepted, rejected = screen_round_batches(
            self.task_address,
            self.chain_id,
            state.round,
            records,
            read,
            is_approved,
            direct_devices,
            digest_to_cid,
            self.max_samples_per_update,
        )
        if rejected:
            log.warning("round %d: %d batch entries or batches left out", state.round, len(rejected))
        relayed = [
            Submission(
                a.entry.device,
                a.entry.update_digest,
                a.entry.num_samples,
                a.batch.block_number,
                a.batch.tx_hash,
                (a.batch.block_number, a.batch.log_index, 1 + a.position),
            )
            for a in accepted
        ]
        return relayed, rejected

    def _approved_devices(self, block: int) -> set[str]:
        """Devices approved at `block` (lower-cased), replayed from the approval and removal events up to it: two
        log queries for the whole round instead of one call per batch entry."""
        changes = [
            *self.history.history("DeviceApproved", to_block=block),
            *self.history.history("DeviceRemoved", to_block=block),
        ]
        approved: set[str] = set()
        for event in sorted(changes, key=lambda e: (e.block_number, e.log_index)):
            device = str(event.args["device"]).lower()
            if event.name == "DeviceApproved":
                approved.add(device)
            else:
                approved.discard(device)
        return approved

    def bound_device(
        self,
        round_index: int,
        digest: bytes,
        submitters: list[str],
        open_sealed: Callable[[bytes, int, str], bytes] | None = None,
    ) -> str | None:
        """The device named in the binding of the file behind `digest` (a digest submitted more than once this
        round), or None if the file cannot be read or names none. A sealed file (`open_sealed` given) opens only
        for the device it was sealed for, so each submitter is tried."""
        try:
            blob = self.ipfs.cat(digest_to_cid(digest), max_size=self.max_update_bytes)
        except IpfsUnavailable:
            raise
        except StorageError:
            return None
        plaintexts = [blob]
        if open_sealed is not None:
            plaintexts = []
            for device in submitters:
                try:
                    plaintexts.append(open_sealed(blob, round_index, device))
                except ValueError:  # SealedError: not sealed for this submitter
                    continue
        for plain in plaintexts:
            try:
                return read_metadata(plain, max_bytes=self.max_update_bytes).get(DEVICE_KEY)
            except StorageError:
                continue
        return None

    def previous_state_cid(self, round_index: int) -> str:
        """The server state the last finalised round's report points to ("" before the first)."""
        last = None
        for event in self.history.history("AggregateCommitted"):
            if event.args["round"] < round_index:
                last = event
        if last is None:
            return ""
        report = json.loads(self.ipfs.cat(digest_to_cid(bytes(last.args["reportDigest"])), max_size=16 << 20))
        return str(report.get("server_state_cid", ""))

    def server_state(self, cid: str) -> ServerState:
        """A stateful strategy's state as a report points to it (empty for "")."""
        if not cid:
            return ServerState()
        return ServerState.from_tensors(self.ipfs.get_weights(cid, max_size=self.max_update_bytes * 4))


class Prefetch:
    """Fetches the round's updates on a few threads, at most `threads` ahead of the one being aggregated, so
    memory stays bounded by a few updates however many there are. `result` raises what the fetch raised."""

    def __init__(self, ipfs: IpfsClient, subs: list[Submission], max_bytes: int, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="fedchain-fetch")
        self._ipfs = ipfs
        self._max = max_bytes
        self._queue = list(subs)
        self._window = max(1, threads) * 2
        self._futures: dict[int, Future[bytes]] = {}
        self._next = 0
        self._fill()

    def _fill(self) -> None:
        while self._next < len(self._queue) and len(self._futures) < self._window:
            sub = self._queue[self._next]
            self._futures[id(sub)] = self._pool.submit(self._ipfs.cat, sub.cid, self._max)
            self._next += 1

    def result(self, sub: Submission) -> bytes:
        future = self._futures.pop(id(sub))
        self._fill()
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
