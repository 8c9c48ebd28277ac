"""What one aggregator commits and reveals for a round, the secret salt that hides it until the reveal, and the
agreement machine: which of commit, reveal, submit or close the chain's state asks for next (pure transitions over
chain state, like the market worker's `reveal_step`; the worker reads the state and sends the transactions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address

from fedchain.chain import Phase
from fedchain.chain.task import result_commitment

SALT_DOMAIN = b"fedchain/aggregator-commit-salt/v1"


def commit_salt(account: LocalAccount, task_address: str, round_index: int) -> bytes:
    """A 32-byte salt only this aggregator can compute, the same after a restart.

    Derived from the private key, so nothing has to be stored between the commit and the reveal and nobody can
    brute-force a commitment by guessing the model digest. The key itself never leaves the process.
    """
    material = SALT_DOMAIN + bytes(account.key) + to_canonical_address(task_address) + round_index.to_bytes(4, "big")
    return keccak(material)


@dataclass(frozen=True)
class PreparedResult:
    """A round's aggregate as this aggregator computed it, ready to commit and reveal."""

    round: int
    inputs_hash: bytes
    model_cid: str
    model_digest: bytes
    report_cid: str
    report_digest: bytes
    accepted: int
    rejected: int
    salt: bytes
    metrics: dict[str, float] = field(default_factory=dict)
    # The cumulative DP epsilon after the round, in millionths: part of the agreement (0 for a task without a ledger).
    epsilon_micro: int = 0

    def commitment(self, task_address: str, aggregator: str) -> bytes:
        return result_commitment(
            task_address,
            self.round,
            aggregator,
            self.inputs_hash,
            self.model_digest,
            self.report_digest,
            self.accepted,
            self.salt,
            epsilon_micro=self.epsilon_micro,
        )


class Action(Enum):
    """What an aggregator does next in a round (one transition of the agreement machine)."""

    WAIT = "wait"  # for events, the clock or other aggregators
    SUBMIT = "submit"  # sole aggregator with threshold 1: finalise in one transaction, no commit and reveal
    COMMIT = "commit"  # aggregate and commit to a salted hash of the result
    REVEAL = "reveal"  # every aggregator committed (or the commit window closed): reveal the committed result
    CLOSE_WINDOW = "close-window"  # the commit or reveal window expired without agreement: fail the round
    CLOSE_ROUND = "close-round"  # the submission window expired: close the round (extended or failed by the chain)


@dataclass(frozen=True)
class AgreementView:
    """What the machine decides on: the task's current round and this aggregator's place in it, as read from chain.

    `alone` (one aggregator, threshold 1) is read only where it matters (aggregating, not yet committed) and is
    False elsewhere. `inputs_ready` False says the round's inputs are not visible yet (a lagging node, unmasking
    shares still missing): the aggregator cannot commit now. `close_due`: the phase's deadline passed on the
    wall clock and a close attempt is not too soon after the last one.
    """

    round: int
    phase: Phase
    committed_round: int
    revealed: bool
    alone: bool = False
    close_due: bool = False
    inputs_ready: bool = True
    unrevealable: frozenset[int] = frozenset()
    prepared: frozenset[int] = frozenset()  # rounds whose result this process computed and still holds

    @property
    def committed(self) -> bool:
        return self.committed_round == self.round

    @property
    def agreeing(self) -> bool:
        return self.phase in (Phase.AGGREGATING, Phase.REVEALING)


def agreement_step(view: AgreementView) -> Action:
    """The next transition in the task's current round."""
    if view.phase == Phase.OPEN:
        return Action.CLOSE_ROUND if view.close_due else Action.WAIT
    if not view.agreeing:
        return Action.WAIT
    if view.phase == Phase.AGGREGATING and not view.committed and view.inputs_ready:
        return Action.SUBMIT if view.alone else Action.COMMIT
    if view.phase == Phase.REVEALING and view.committed and not view.revealed and view.round not in view.unrevealable:
        return Action.REVEAL
    # The window passed without every aggregator committing, or without k agreeing reveals.
    return Action.CLOSE_WINDOW if view.close_due else Action.WAIT


def late_reveal_round(view: AgreementView) -> int | None:
    """An earlier round this aggregator committed to but has not revealed, which others finalised meanwhile (the
    caller checks that it was finalised: a failed round's reveals are closed); None if there is none.

    Revealing it still records a disagreeing result as a fault, and an agreeing one on the record too. Only a
    result this process computed can be revealed late: after a restart the round is gone from the chain's view.
    """
    r = view.committed_round
    if r == 0 or view.revealed or r in view.unrevealable or r not in view.prepared:
        return None
    if r == view.round and view.agreeing:
        return None
    return r
