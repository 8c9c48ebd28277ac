"""Signing accounts: the devnet's well-known test keys, or a real key from the environment or a keystore.

Keys are never printed or logged; only addresses are.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable
from pathlib import Path

from eth_account import Account
from eth_account.hdaccount import seed_from_mnemonic
from eth_account.hdaccount._utils import SECP256K1_N, ec_point
from eth_account.hdaccount.deterministic import HDPath, SoftNode, derive_child_key, hmac_sha512
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_keys.backends import CoinCurveECCBackend

# The well-known development mnemonic (Anvil's and Hardhat's default); fedchain starts Ganache with it too so both
# chains have the same funded accounts. Never use it on a public network.
DEVNET_MNEMONIC = "test test test test test test test test test test test junk"
KEY_ENV = "FEDCHAIN_PRIVATE_KEY"
KEYSTORE_PASSWORD_ENV = "FEDCHAIN_KEYSTORE_PASSWORD"

Account.enable_unaudited_hdwallet_features()
# libsecp256k1 (coincurve, a dependency of fedchain.chain.rawtx) for the many devnet keys' public keys.
_SECP256K1 = CoinCurveECCBackend()


def devnet_account(index: int, mnemonic: str = DEVNET_MNEMONIC) -> LocalAccount:
    """The `index`-th account of the development mnemonic (BIP-44 path m/44'/60'/0'/0/index)."""
    if index < 0:
        raise ValueError(f"account index must be >= 0, got {index}")
    return Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}")


def devnet_accounts(indices: Iterable[int], mnemonic: str = DEVNET_MNEMONIC) -> list[LocalAccount]:
    """Many accounts of the development mnemonic at once (m/44'/60'/0'/0/i for each i).

    `devnet_account` re-runs the mnemonic's PBKDF2 and the whole BIP-32 path per account (~10 ms); here the seed,
    the parent node m/44'/60'/0'/0 and its public key are derived once and each account is one HMAC and one
    addition (`_child_keys`), its public key computed by libsecp256k1: a thousand virtual devices get their keys in
    a fraction of a second. Same keys as `devnet_account` (a test checks it).
    """
    return [LocalAccount(keys.PrivateKey(key, backend=_SECP256K1), Account) for key in _child_keys(indices, mnemonic)]


def devnet_addresses(count: int, mnemonic: str = DEVNET_MNEMONIC) -> list[str]:
    return [account.address for account in devnet_accounts(range(count), mnemonic)]


def _child_keys(indices: Iterable[int], mnemonic: str) -> list[bytes]:
    """Private keys m/44'/60'/0'/0/i, as eth-account's `derive_child_key` computes them (BIP-32 soft children),
    without recomputing the parent's public key for every child (eth-account's ~0.6 ms per key)."""
    wanted = list(indices)
    if any(i < 0 for i in wanted):
        raise ValueError("account indices must be >= 0")
    if not wanted:
        return []
    seed = seed_from_mnemonic(mnemonic, "")
    master = hmac_sha512(b"Bitcoin seed", seed)
    key, chain_code = master[:32], master[32:]
    for node in HDPath("m/44'/60'/0'/0")._path:  # HDPath.derive would drop the chain code we need
        key, chain_code = derive_child_key(key, chain_code, node)
    parent_point, parent = ec_point(key), int.from_bytes(key, "big")
    children = []
    for i in wanted:
        node = SoftNode(i)
        tweak = int.from_bytes(hmac_sha512(chain_code, parent_point + node.serialize())[:32], "big")
        child = (tweak + parent) % SECP256K1_N
        if tweak >= SECP256K1_N or child == 0:  # < 2**-127: eth-account's own rule (it moves to the next index)
            children.append(derive_child_key(key, chain_code, node)[0])
        else:
            children.append(child.to_bytes(32, "big"))
    return children


def account_from_env(var: str = KEY_ENV) -> LocalAccount:
    """A private key (hex) read from an environment variable."""
    key = os.environ.get(var)
    if not key:
        raise ValueError(f"environment variable {var} is not set (it should hold a hex private key)")
    try:
        return Account.from_key(key.strip())
    except (ValueError, TypeError) as exc:  # never echo the key itself
        raise ValueError(f"environment variable {var} does not hold a valid private key") from exc


def account_from_keystore(path: Path, password: str | None = None) -> LocalAccount:
    """Decrypt a JSON keystore (geth/web3 format); the password comes from the argument, the env, or a prompt."""
    if password is None:
        password = os.environ.get(KEYSTORE_PASSWORD_ENV)
    if password is None:
        password = getpass.getpass(f"password for keystore {path}: ")
    try:
        key = Account.decrypt(json.loads(Path(path).read_text()), password)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot decrypt keystore {path}: {exc}") from exc
    return Account.from_key(key)


def resolve_account(
    index: int | None = None,
    *,
    key_env: str | None = None,
    keystore: Path | None = None,
    mnemonic: str = DEVNET_MNEMONIC,
) -> LocalAccount:
    """Pick the signing account: keystore, then a key in the environment, then a devnet index."""
    if keystore is not None:
        return account_from_keystore(keystore)
    if key_env is not None:
        return account_from_env(key_env)
    if index is not None:
        return devnet_account(index, mnemonic)
    raise ValueError("no account given: pass an account index (devnet), a key env variable, or a keystore")
