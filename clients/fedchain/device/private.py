"""A device's side of private rounds: its encryption key on chain, sealed updates, and secure aggregation.

Secure aggregation, one round (SecAgg, see `fedchain.privacy.secagg`; the chain orders and records every step):
1. setup, as soon as the round opens and before training: the device publishes its round mask key and its Shamir
   shares, encrypted to every participant's registered key (`submitSetup`). The chain accepts setups only in the
   round's setup window, its first half; the window's end freezes the setup set (no device can freeze it early);
2. masked update, once the setup window has closed (the device waits for the setup deadline, or for the chain's
   SetupSetFrozen if another device's masked update shows the chain's time past it): it masks its delta (clipped,
   plus its share of the differential-privacy noise when the task asks for it) against exactly the frozen set and
   submits it with the set's size (`submitMaskedUpdate`);
3. unmasking shares: when the round has closed, it reveals to the aggregators, for each peer, the share of the
   peer's self mask if the peer submitted an update, or of its mask key if it dropped out (`submitUnmaskShares`).
Survivors and dropouts are read from the chain, never from an aggregator. A device masks once per round: a second
masked version of the same delta against another set would give the aggregators two views of it, so when the chain
refuses the masked update for another set (SetupCountMismatch) the device drops out of the round instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from eth_account.signers.local import LocalAccount

from fedchain.chain import ContractRevert, Phase, RoundInfo, TaskClient
from fedchain.chain.notify import EventNotifier
from fedchain.chain.privacy import (
    aggregator_keys,
    round_setups,
    round_updates,
    secagg_participants,
    setup_set_frozen,
)
from fedchain.chain.task import setup_deadline_of
from fedchain.learning.spec import PrivacySpec
from fedchain.learning.types import Weights
from fedchain.privacy.dp import DistributedNoise, noise_rng
from fedchain.privacy.protocol import (
    account_secret,
    address_bytes,
    delta_vector,
    encryption_key_of,
    round_context,
    seal_context,
)
from fedchain.privacy.sealed import seal
from fedchain.privacy.secagg import SecAggDevice
from fedchain.storage import IpfsClient, cid_to_digest, digest_to_cid
from fedchain.storage.codec import encode_weights

log = logging.getLogger("fedchain.device.private")

# Reverts meaning the round went on without this device's step: it drops out of the round, which SecAgg tolerates.
DROPPED_OUT = {
    "WrongPhase",
    "WrongRound",
    "AlreadySubmitted",
    "SetupWindowClosed",  # the setup came after the setup deadline: not in this round's set
    "SetupWindowOpen",  # still refused after SUBMIT_ATTEMPTS: the chain's clock lags far behind ours
    "SetupCountMismatch",  # masked against another set than the frozen one (never re-masked, see above)
    "NoSetup",
}
# Past the setup deadline by the local clock, by this much, before masking: the node's clock may lag ours a little.
FREEZE_GRACE = 0.5
# A masked update refused with SetupWindowOpen (the chain's time not yet at the setup deadline) is sent again, the
# same one, this many times in all, a second apart.
SUBMIT_ATTEMPTS = 5


class PrivacyUnavailable(RuntimeError):
    """The device cannot take part privately (for example: no aggregator has registered an encryption key)."""


@dataclass
class _SecAggRound:
    device: SecAggDevice
    participants: int  # devices with a registered key when the round opened (the DP noise is split among them)
    setups: dict[str, bytes] = field(default_factory=dict)  # the setups masked against: {address: blob}
    setup_gas: int = 0
    set_up: bool = False  # its setup is on chain
    submitted: bool = False
    revealed: bool = False


@dataclass(frozen=True)
class PrivateSubmission:
    cid: str
    gas_used: int
    detail: dict[str, float | int]


def private_delta(
    privacy: PrivacySpec, global_weights: Weights, trained: Weights, participants: int, rng: np.random.Generator
) -> np.ndarray:
    """The delta a device contributes to a secure-aggregation round (flat float64, in the model's tensor order):
    trained minus global, clipped and noised with its share of the round's noise (drawn from `rng`) under
    differential privacy."""
    if privacy.differential_privacy:
        noise = DistributedNoise(
            privacy.dp_noise_multiplier, privacy.dp_clip_norm, participants, privacy.min_survivors_for(participants)
        )
        noisy, norm = noise.privatize(global_weights, trained, rng)
        log.debug("delta norm %.4f clipped to %.4f", norm, privacy.dp_clip_norm)
        return delta_vector(global_weights, noisy)
    delta = {name: np.subtract(trained[name], global_weights[name], dtype=np.float64) for name in global_weights}
    return delta_vector(global_weights, delta)


def survivors_and_dropped(setups: Collection[str], submitted: Iterable[str]) -> tuple[list[str], list[str]]:
    """A closed round's survivors (devices of the frozen setup set whose masked update the chain recorded) and
    dropouts (the rest of the set), each sorted by address: what a device reveals shares for. Both come from the
    chain, never from an aggregator."""
    survivors = set(submitted)
    return (
        sorted(survivors & set(setups), key=str.lower),
        sorted(set(setups) - survivors, key=str.lower),
    )


def sealed_update(
    weights: Weights, metadata: Mapping[str, str], recipients: Mapping[bytes, bytes], context: bytes
) -> bytes:
    """An update file encrypted to every aggregator key in `recipients` ({address: public key}) for `context`
    (task, round, device); PrivacyUnavailable when no aggregator registered a key."""
    if not recipients:
        raise PrivacyUnavailable("no aggregator of this task has registered an encryption key: cannot seal")
    return seal(encode_weights(weights, metadata), recipients, context)


class DevicePrivacy:
    """Private submission for one device of one task; keeps per-round SecAgg state between the round's steps."""

    def __init__(
        self,
        task: TaskClient,
        ipfs: IpfsClient,
        account: LocalAccount,
        privacy: PrivacySpec,
        poll_interval: float = 0.25,
        drop_after_setup: bool = False,
        notifier: EventNotifier | None = None,
        state_recheck: float = 5.0,
    ) -> None:
        self.task = task
        self.ipfs = ipfs
        self.account = account
        self.privacy = privacy
        self.poll_interval = poll_interval
        # Wakes the wait for the setup window's end on the task's events (SetupSetFrozen); None: poll.
        self.notifier = notifier
        self.state_recheck = state_recheck
        self._round_duration: int | None = None
        self.drop_after_setup = drop_after_setup
        if drop_after_setup:
            log.warning("device %s drops out of every round after its setup (evaluation mode)", account.address)
        self._private_key = bytes(account.key)
        self.encryption_key = encryption_key_of(self._private_key)
        self._rounds: dict[int, _SecAggRound] = {}
        self._sat_out: set[int] = set()  # rounds this device dropped out of: it does not try them again

    @property
    def address(self) -> str:
        return self.account.address

    def ensure_key(self) -> None:
        """Register this device's encryption key on chain unless it is already there."""
        if bytes(self.task.encryption_key(self.address)) != self.encryption_key.public:
            tx = self.task.set_encryption_key(self.encryption_key.public)
            log.info("device %s registered its encryption key (gas %d)", self.address, tx.gas_used)

    def sat_out(self, round_index: int) -> bool:
        """Whether this device dropped out of the round (it does not train for it again)."""
        return round_index in self._sat_out

    # ------------------------------------------------------------ sealed updates (secure aggregation off)

    def sealed_blob(self, round_index: int, weights: Weights, metadata: Mapping[str, str]) -> bytes:
        """The update encrypted to the aggregators' keys."""
        recipients = {address_bytes(a): k for a, k in aggregator_keys(self.task).items()}
        return sealed_update(weights, metadata, recipients, seal_context(self.task.address, round_index, self.address))

    def sealed_upload(self, round_index: int, weights: Weights, metadata: Mapping[str, str]) -> str:
        """Encrypt the update to the aggregators' keys and upload it; its CID."""
        return self.ipfs.add(self.sealed_blob(round_index, weights, metadata))

    # ------------------------------------------------------------ secure aggregation

    def privatize(self, global_weights: Weights, trained: Weights, participants: int) -> np.ndarray:
        """The delta the device contributes (flat float64): clipped and noised under differential privacy."""
        # Fresh OS randomness: nobody, not even a restarted device, can reproduce and subtract the noise.
        return private_delta(self.privacy, global_weights, trained, participants, noise_rng(None))

    def secagg_setup(self, state: RoundInfo) -> int | None:
        """Step 1, as soon as the round opens (before training: the setup must land in the round's setup window).
        Gas spent (0 if the setup is already on chain); None if the device sits the round out."""
        r = state.round
        if r in self._sat_out:
            return None
        current = self._round(r)
        if current is None:
            self._sat_out.add(r)
            return None
        if not current.set_up:
            if self.address in round_setups(self.task, r):
                current.set_up = True  # a restarted device: its setup is already on chain
            else:
                cid = self.ipfs.add(current.device.shares_blob())
                try:
                    current.setup_gas = self.task.submit_setup(r, cid_to_digest(cid)).gas_used
                except ContractRevert as exc:
                    if exc.error in DROPPED_OUT:
                        log.info("round %d: setup refused (%s): sitting out", r, exc.error)
                        self._sat_out.add(r)
                        return None
                    raise
                current.set_up = True
        if self.drop_after_setup:
            log.info("round %d: published the setup, now dropping out (evaluation mode)", r)
            self._sat_out.add(r)
            return None
        return current.setup_gas

    def secagg_submit(
        self, state: RoundInfo, global_weights: Weights, trained: Weights, num_samples: int
    ) -> PrivateSubmission | None:
        """Steps 1 (if not done yet) and 2 of the round; None if the round went on without this device (it then
        counts as dropped)."""
        r = state.round
        started = time.perf_counter()
        if self.secagg_setup(state) is None:
            return None
        outcome = self._secagg_submit(state, global_weights, trained, num_samples, started)
        if outcome is None:
            self._sat_out.add(r)
        return outcome

    def _round(self, r: int) -> _SecAggRound | None:
        """This device's SecAgg state for round r (created on first use); None if it is no participant of r."""
        current = self._rounds.get(r)
        if current is not None:
            return current
        participants = secagg_participants(self.task, r)
        if self.address not in participants:
            log.warning(
                "round %d: %s has no encryption key registered from the round's start: sitting out", r, self.address
            )
            return None
        ctx = round_context(self.task.address, r, participants, self.privacy.secagg_threshold)
        current = self._rounds[r] = _SecAggRound(
            SecAggDevice(account_secret(self._private_key), address_bytes(self.address), ctx), len(participants)
        )
        return current

    def _secagg_submit(
        self, state: RoundInfo, global_weights: Weights, trained: Weights, num_samples: int, started: float
    ) -> PrivateSubmission | None:
        r = state.round
        current = self._rounds[r]
        if not self._wait_for_freeze(r, setup_deadline_of(state.deadline, self.round_duration)):
            log.info("round %d closed before its setup window did: dropping out of the round", r)
            return None
        setups = round_setups(self.task, r)
        if self.address not in setups:
            return None
        blobs = {address: self.ipfs.cat(digest_to_cid(digest), max_size=1 << 24) for address, digest in setups.items()}
        vector = self.privatize(global_weights, trained, current.participants)
        try:
            masked = current.device.mask(vector, {address_bytes(a): b for a, b in blobs.items()})
        except ValueError as exc:
            # A setup of the frozen set is malformed (the chain does not read setups): nobody can mask against the
            # set, so the round fails at its deadline and the next one opens with a fresh setup window.
            log.warning("round %d: cannot mask against the frozen setup set (%s): dropping out of the round", r, exc)
            return None
        cid = self.ipfs.add(masked.to_bytes())
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                tx = self.task.submit_masked_update(r, cid_to_digest(cid), num_samples, len(setups))
                break
            except ContractRevert as exc:
                if exc.error == "SetupWindowOpen" and attempt < SUBMIT_ATTEMPTS:
                    # The node's clock lags ours: the same masked update again, once its time passed the deadline.
                    # Setups may still land meanwhile; against a different set the device would have to re-mask.
                    time.sleep(1.0)
                    if set(round_setups(self.task, r)) == set(setups):
                        continue
                    log.info("round %d: setups landed after our masking: dropping out of the round", r)
                    return None
                if exc.error in DROPPED_OUT:
                    log.info("round %d: masked update refused (%s): dropping out of the round", r, exc.error)
                    return None
                raise
        current.setups = blobs
        current.submitted = True
        detail = {
            "participants": current.participants,
            "setups": len(setups),
            "secagg_seconds": time.perf_counter() - started,
        }
        return PrivateSubmission(cid, current.setup_gas + tx.gas_used, detail)

    @property
    def round_duration(self) -> int:
        """The task's roundDuration (an immutable: read once)."""
        if self._round_duration is None:
            self._round_duration = int(self.task.contract.functions.roundDuration().call())
        return self._round_duration

    def _wait_for_freeze(self, round_index: int, setup_deadline: int) -> bool:
        """Wait until the round's setup set is frozen: the local clock is past the setup deadline (plus a grace for
        the node's clock), or the chain announced the frozen set (another device's masked update, SetupSetFrozen).
        False if the round closed meanwhile."""
        while True:
            state = self.task.current_round()
            if state.round != round_index or state.phase != Phase.OPEN:
                return False
            remaining = setup_deadline + FREEZE_GRACE - time.time()
            if remaining <= 0 or setup_set_frozen(self.task, round_index) is not None:
                return True
            timeout = min(remaining, self.state_recheck)
            if self.notifier is not None:
                self.notifier.wait(timeout)  # wakes on the task's events; polls when nothing is pushed
            else:
                time.sleep(min(timeout, self.poll_interval))

    def after_round(self, state: RoundInfo) -> int:
        """Step 3 for every round this device masked in that has closed and still needs its shares; gas spent."""
        gas = 0
        for r, current in sorted(self._rounds.items()):
            if current.revealed or not current.submitted:
                continue
            if state.round == r and state.phase == Phase.OPEN:
                continue  # the round has not closed yet
            if state.round != r or state.phase not in (Phase.AGGREGATING, Phase.REVEALING):
                current.revealed = True  # aggregated, failed or over: the shares are no longer needed
                continue
            submitted = round_updates(self.task, r)
            survivors, dropped = survivors_and_dropped(current.setups, submitted)
            try:
                reveal = current.device.reveal(
                    {address_bytes(a): b for a, b in current.setups.items()},
                    [address_bytes(a) for a in survivors],
                    [address_bytes(a) for a in dropped],
                )
            except ValueError as exc:
                # Fewer survivors than the threshold (or inconsistent sets): revealing could expose a peer, so the
                # device keeps its shares; the round fails on chain and runs again with the previous model.
                log.warning("round %d: not revealing unmasking shares: %s", r, exc)
                current.revealed = True
                continue
            cid = self.ipfs.add(reveal.to_bytes())
            try:
                gas += self.task.submit_unmask_shares(r, cid_to_digest(cid)).gas_used
                log.info(
                    "round %d: revealed unmasking shares (%d survivors, %d dropped)",
                    r,
                    len(set(submitted)),
                    len(dropped),
                )
            except ContractRevert as exc:
                log.info("round %d: unmasking shares refused (%s)", r, exc.error)
            current.revealed = True
        self._rounds = {r: c for r, c in self._rounds.items() if not c.revealed or r >= state.round}
        self._sat_out = {r for r in self._sat_out if r >= state.round}
        return gas


__all__ = [
    "DROPPED_OUT",
    "DevicePrivacy",
    "PrivacyUnavailable",
    "PrivateSubmission",
    "private_delta",
    "sealed_update",
    "survivors_and_dropped",
]
