"""What one aggregator commits and reveals for a round, and the secret salt that hides it until the reveal."""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address

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
