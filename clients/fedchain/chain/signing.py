"""EIP-712 signed updates: what a device signs so that a relayer can submit its update in a batch.

The typed struct is `Update(uint32 round,bytes32 updateDigest,uint64 numSamples)` under the domain
{name: "fedchain", version: "1", chainId, verifyingContract: the task} (mirrors FederatedTask.updateHash and
updateSigner): a signature is valid for one task, one round and one chain only. Pure: no node is needed.
"""

from __future__ import annotations

import functools
from typing import Any

import coincurve
from eth_abi import encode as abi_encode
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "fedchain"
DOMAIN_VERSION = "1"
UPDATE_TYPE = "Update(uint32 round,bytes32 updateDigest,uint64 numSamples)"
UPDATE_TYPEHASH = keccak(text=UPDATE_TYPE)
UPDATE_TYPES: dict[str, list[dict[str, str]]] = {
    "Update": [
        {"name": "round", "type": "uint32"},
        {"name": "updateDigest", "type": "bytes32"},
        {"name": "numSamples", "type": "uint64"},
    ]
}
SIGNATURE_LENGTH = 65
# secp256k1 group order; OpenZeppelin's ECDSA (and so updateSigner) refuses s above half of it (malleability).
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_MAX_S = _SECP256K1_N // 2
_MAX_SAMPLES = 2**32 - 1  # FederatedTask.MAX_SAMPLES_PER_UPDATE


def update_domain(chain_id: int, task_address: str) -> dict[str, Any]:
    """The EIP-712 domain of a task (as `eip712Domain()` reports it)."""
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": int(chain_id),
        "verifyingContract": to_checksum_address(task_address),
    }


def _check_fields(round_index: int, update_digest: bytes, num_samples: int) -> None:
    if not 0 <= round_index < 2**32:
        raise ValueError(f"round must fit a uint32, got {round_index}")
    if len(update_digest) != 32:
        raise ValueError("update_digest must be 32 bytes")
    if not 0 <= num_samples < 2**64:
        raise ValueError(f"num_samples must fit a uint64, got {num_samples}")


def update_message(
    chain_id: int, task_address: str, round_index: int, update_digest: bytes, num_samples: int
) -> SignableMessage:
    """The EIP-712 message of an update, ready for `Account.sign_message`."""
    _check_fields(round_index, update_digest, num_samples)
    return encode_typed_data(
        domain_data=update_domain(chain_id, task_address),
        message_types=UPDATE_TYPES,
        message_data={"round": round_index, "updateDigest": bytes(update_digest), "numSamples": num_samples},
    )


@functools.lru_cache(maxsize=256)
def domain_separator(chain_id: int, task_address: str) -> bytes:
    """The task's EIP-712 domain separator (FederatedTask.domainSeparator), spelled out."""
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                domain_type,
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                int(chain_id),
                to_checksum_address(task_address),
            ],
        )
    )


def update_struct_hash(round_index: int, update_digest: bytes, num_samples: int) -> bytes:
    """keccak256(abi.encode(UPDATE_TYPEHASH, round, updateDigest, numSamples))."""
    _check_fields(round_index, update_digest, num_samples)
    # abi.encode of static words, spelled out: eth_abi's encoder costs more than the hash (a pool hashes one
    # update per device per round; tests compare with eth_abi and with eth-account's EIP-712 encoding).
    return keccak(
        UPDATE_TYPEHASH + round_index.to_bytes(32, "big") + bytes(update_digest) + num_samples.to_bytes(32, "big")
    )


def update_hash(chain_id: int, task_address: str, round_index: int, update_digest: bytes, num_samples: int) -> bytes:
    """The 32-byte EIP-712 digest a device signs (FederatedTask.updateHash): keccak256("\x19\x01" ||
    domainSeparator || structHash)."""
    return keccak(
        b"\x19\x01"
        + domain_separator(chain_id, task_address)
        + update_struct_hash(round_index, update_digest, num_samples)
    )


def sign_update(
    account: LocalAccount,
    chain_id: int,
    task_address: str,
    round_index: int,
    update_digest: bytes,
    num_samples: int,
) -> bytes:
    """The device's 65-byte signature (r || s || v, v in {27, 28}, low s) of its update for `round_index` of the
    task at `task_address` on chain `chain_id`. Refuses a sample count the contract would refuse (0 or above
    MAX_SAMPLES_PER_UPDATE): such an entry could never be accepted."""
    if not 1 <= num_samples <= _MAX_SAMPLES:
        raise ValueError(f"num_samples must be in [1, {_MAX_SAMPLES}], got {num_samples}")
    digest = update_hash(chain_id, task_address, round_index, update_digest, num_samples)
    # libsecp256k1 directly (what eth-account's sign_message computes, ~10x faster): RFC 6979 nonces, low s.
    signature = coincurve.PrivateKey(bytes(account.key)).sign_recoverable(digest, hasher=None)
    return signature[:64] + bytes([signature[64] + 27])


def recover_update_signer(
    chain_id: int,
    task_address: str,
    round_index: int,
    update_digest: bytes,
    num_samples: int,
    signature: bytes,
) -> str | None:
    """The checksummed address that signed the update, or None where `updateSigner` returns the zero address:
    a signature that is not 65 bytes, has v outside {27, 28}, a zero or high s, a zero r, or does not recover.

    A signature for another task, round, chain, digest or sample count recovers to some unrelated address: compare
    the result with the claimed device.
    """
    signature = bytes(signature)
    if len(signature) != SIGNATURE_LENGTH:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28) or s > _MAX_S or r == 0 or s == 0 or r >= _SECP256K1_N:
        return None
    try:
        digest = update_hash(chain_id, task_address, round_index, update_digest, num_samples)
        public = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest, hasher=None
        ).format(compressed=False)
    except Exception:  # no point on the curve for this r: ecrecover returns zero, so does updateSigner
        return None
    return to_checksum_address(keccak(public[1:])[-20:])
