"""The aggregator's side of private rounds: its encryption key, opening sealed updates, unmasking a securely
aggregated round, and the differential-privacy ε it reports on chain.

Under secure aggregation the aggregator never sees an update: it reads the round's setups (the set the chain froze
at the end of the round's setup window, the one every masked update was masked against), masked updates and the
survivors' unmasking shares from the chain and IPFS, and `unmask_sum` gives it only the sum of the survivors' deltas.
The new model is the unweighted mean x + Σδ/|survivors| (sample counts would weight private updates by private
numbers, and the DP noise is calibrated to the unweighted mean).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from fedchain.chain import TaskClient
from fedchain.chain.privacy import round_setups, round_unmask_shares, secagg_participants
from fedchain.learning.spec import PrivacySpec
from fedchain.learning.types import Weights
from fedchain.privacy.accountant import epsilon_after
from fedchain.privacy.dp import DistributedNoise
from fedchain.privacy.protocol import address_bytes, encryption_key_of, mean_weights, round_context, seal_context
from fedchain.privacy.sealed import open_sealed
from fedchain.privacy.secagg import RoundContext, unmask_sum
from fedchain.privacy.secagg_messages import MaskedUpdate, NotEnoughShares, Reveal, SecAggError
from fedchain.protocol.epsilon import epsilon_to_micro
from fedchain.storage import IpfsClient, digest_to_cid

log = logging.getLogger("fedchain.aggregator.secure")

MAX_MESSAGE_BYTES = 1 << 26


class SharesNotYetAvailable(RuntimeError):
    """Fewer unmasking shares are on chain than the threshold: wait (the window's deadline fails the round)."""


class RoundUnrecoverable(RuntimeError):
    """The round's masked inputs cannot be unmasked (a malformed masked update or share): the round must fail.

    `culprits` names the devices whose own submission made it so, {device: (reason, detail)}, for the report.
    """

    def __init__(self, message: str, culprits: dict[str, tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.culprits = dict(culprits or {})


# A masked update whose header names another sender, task or round than the submission the chain recorded.
REASON_BINDING_MISMATCH = "binding-mismatch"


@dataclass(frozen=True)
class UnmaskedRound:
    weights: Weights
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    participants: int
    shares: int
    note: str = ""


def _hex(address: bytes) -> str:
    return "0x" + address.hex()


def masked_binding_culprits(
    masked: dict[str, MaskedUpdate], task: bytes, round_index: int
) -> dict[str, tuple[str, str]]:
    """{submitter: (reason, detail)} for each masked update whose header names another sender, task or round than
    the submission the chain recorded: a digest copied from another device, or replayed from another round.

    The header is the masked file's binding (no chain id: the pairwise masks come from this chain's setups, so a
    file from another chain cannot unmask here anyway). A bound-elsewhere file leaves its submitter's pairwise masks
    uncancelled, so the round cannot be unmasked whatever is done with it; naming the submitter puts the blame where
    it belongs.
    """
    culprits: dict[str, tuple[str, str]] = {}
    for device, update in masked.items():
        if (update.sender, update.task, update.round_id) != (address_bytes(device), task, round_index):
            culprits[device] = (
                REASON_BINDING_MISMATCH,
                f"the masked update is bound to sender {_hex(update.sender)}, task {_hex(update.task)}, "
                f"round {update.round_id}; it was submitted by {device} in round {round_index}",
            )
    return culprits


def unmask_round(
    ctx: RoundContext,
    setups: Mapping[bytes, bytes],
    masked: Mapping[str, bytes],
    reveals: Mapping[str, bytes],
    privacy: PrivacySpec,
    global_weights: Weights,
) -> UnmaskedRound:
    """A securely aggregated round's mean from its published bytes: the frozen set's setups ({address: blob}), the
    masked updates ({submitter: file}, as the chain recorded the submissions) and the survivors' unmasking shares
    ({device: file}). Pure: what `AggregatorPrivacy.unmask` fetched from chain and IPFS goes in.

    Raises RoundUnrecoverable (with the culprits) for a malformed or bound-elsewhere masked update or inputs that
    cannot be unmasked, SharesNotYetAvailable while some secret has fewer than t shares. Under differential privacy
    a round with fewer survivors than the noise needs keeps the previous model (`global_weights`), with a note.
    """
    round_index = ctx.round_id
    updates: dict[str, MaskedUpdate] = {}
    for device, blob in sorted(masked.items(), key=lambda kv: kv[0].lower()):
        try:
            updates[device] = MaskedUpdate.from_bytes(blob)
        except ValueError as exc:
            raise RoundUnrecoverable(
                f"round {round_index}: masked update of {device} is malformed: {exc}",
                {device: ("masked-update-malformed", str(exc)[:300])},
            ) from exc
    culprits = masked_binding_culprits(updates, ctx.task, round_index)
    if culprits:
        raise RoundUnrecoverable(
            f"round {round_index}: masked updates bound to other submissions, from {sorted(culprits)}", culprits
        )
    parsed: list[Reveal] = []
    for device, blob in sorted(reveals.items(), key=lambda kv: kv[0].lower()):
        try:
            parsed.append(Reveal.from_bytes(blob))
        except ValueError as exc:
            log.warning("round %d: unmasking shares of %s are malformed, ignored: %s", round_index, device, exc)
    try:
        result = unmask_sum(ctx, setups, list(updates.values()), parsed)
    except NotEnoughShares as exc:
        raise SharesNotYetAvailable(f"round {round_index}: {exc}") from exc
    except (SecAggError, ValueError) as exc:
        raise RoundUnrecoverable(f"round {round_index}: cannot unmask: {exc}") from exc
    survivors = tuple(_hex(a) for a in result.survivors)
    dropped = tuple(_hex(a) for a in result.dropped)
    participants = len(ctx.participants)
    if privacy.differential_privacy:
        noise = DistributedNoise(
            privacy.dp_noise_multiplier, privacy.dp_clip_norm, participants, privacy.min_survivors_for(participants)
        )
        if not noise.covers(len(survivors)):
            note = (
                f"only {len(survivors)} of {participants} devices survived; their noise does not reach the "
                f"{noise.min_survivors} the privacy guarantee needs: the round keeps the previous model"
            )
            return UnmaskedRound(global_weights, survivors, dropped, participants, len(reveals), note)
    weights = mean_weights(global_weights, result.total, len(survivors))
    return UnmaskedRound(weights, survivors, dropped, participants, len(reveals))


class AggregatorPrivacy:
    """Private inputs of one task, seen by one aggregator."""

    def __init__(self, task: TaskClient, ipfs: IpfsClient, account: LocalAccount, privacy: PrivacySpec) -> None:
        self.task = task
        self.ipfs = ipfs
        self.account = account
        self.privacy = privacy
        self.encryption_key = encryption_key_of(bytes(account.key))

    def ensure_key(self) -> None:
        """Register this aggregator's encryption key on chain unless it is already there."""
        if bytes(self.task.encryption_key(self.account.address)) != self.encryption_key.public:
            tx = self.task.set_encryption_key(self.encryption_key.public)
            log.info("aggregator %s registered its encryption key (gas %d)", self.account.address, tx.gas_used)

    def open_update(self, blob: bytes, round_index: int, device: str) -> bytes:
        """The plaintext of a sealed update (SealedError, a ValueError, if it is not sealed to us or was altered)."""
        context = seal_context(self.task.address, round_index, device)
        return open_sealed(blob, address_bytes(self.account.address), self.encryption_key, context)

    def _cat(self, digest: bytes) -> bytes:
        return self.ipfs.cat(digest_to_cid(digest), max_size=MAX_MESSAGE_BYTES)

    def unmask(self, round_index: int, updates: dict[str, bytes], global_weights: Weights) -> UnmaskedRound:
        """The round's mean from its masked updates ({device: digest}, from the chain's submissions).

        Raises SharesNotYetAvailable while fewer than t unmasking shares are on chain, RoundUnrecoverable when the
        inputs cannot be unmasked. Under differential privacy a round with fewer survivors than the noise needs is
        not published: the weights returned are the previous model's, with a note.
        """
        participants = secagg_participants(self.task, round_index)
        ctx = round_context(self.task.address, round_index, participants, self.privacy.secagg_threshold)
        shares = round_unmask_shares(self.task, round_index)
        if len(shares) < ctx.threshold:
            raise SharesNotYetAvailable(
                f"round {round_index}: {len(shares)} of the {ctx.threshold} unmasking shares needed are on chain"
            )
        on_chain = round_setups(self.task, round_index)
        frozen = self.task.setup_count(round_index)
        if len(on_chain) != frozen:
            # The chain counted `frozen` setups: some of their events are not visible from our node yet.
            raise SharesNotYetAvailable(f"round {round_index}: {len(on_chain)} of the {frozen} setups are visible")
        setups = {address_bytes(a): self._cat(d) for a, d in on_chain.items()}
        masked = {device: self._cat(digest) for device, digest in sorted(updates.items(), key=lambda kv: kv[0].lower())}
        reveals = {device: self._cat(digest) for device, digest in sorted(shares.items(), key=lambda kv: kv[0].lower())}
        return unmask_round(ctx, setups, masked, reveals, self.privacy, global_weights)

    def epsilon_micro(self, round_index: int) -> int:
        """ε spent once round `round_index` is published, in millionths (rounded up); 0 without DP.

        Every opened round counts (a failed round's noised updates were uploaded too), and every device takes part
        in every round (sampling rate 1), so ε is the accountant's value after `round_index` rounds.
        """
        if not self.privacy.differential_privacy:
            return 0
        epsilon = epsilon_after(round_index, self.privacy.dp_noise_multiplier, 1.0, self.privacy.dp_delta)
        return epsilon_to_micro(epsilon)


__all__ = [
    "REASON_BINDING_MISMATCH",
    "AggregatorPrivacy",
    "RoundUnrecoverable",
    "SharesNotYetAvailable",
    "UnmaskedRound",
    "masked_binding_culprits",
    "unmask_round",
]
