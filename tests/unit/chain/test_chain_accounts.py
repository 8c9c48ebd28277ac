"""Accounts: devnet keys are the well-known ones; real keys come from env or keystore and never leak in errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account

from fedchain.chain.accounts import account_from_env, account_from_keystore, devnet_account, resolve_account

# The first two accounts of the `test test ... junk` mnemonic, as every Anvil/Hardhat user knows them.
ANVIL_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ANVIL_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_devnet_accounts_are_the_well_known_ones() -> None:
    assert devnet_account(0).address == ANVIL_0
    assert devnet_account(1).address == ANVIL_1
    with pytest.raises(ValueError):
        devnet_account(-1)


def test_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "0x" + "11" * 32
    monkeypatch.setenv("MY_KEY", key)
    assert account_from_env("MY_KEY").address == Account.from_key(key).address


def test_bad_key_in_env_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "not-a-key-but-secret-looking")
    with pytest.raises(ValueError) as err:
        account_from_env("MY_KEY")
    assert "secret-looking" not in str(err.value)
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ValueError, match="not set"):
        account_from_env("MY_KEY")


def test_keystore_round_trip_and_wrong_password(tmp_path: Path) -> None:
    key = "0x" + "22" * 32
    path = tmp_path / "key.json"
    path.write_text(json.dumps(Account.encrypt(key, "pw", iterations=2)))
    assert account_from_keystore(path, "pw").address == Account.from_key(key).address
    with pytest.raises(ValueError, match="cannot decrypt"):
        account_from_keystore(path, "wrong")


def test_resolve_account_needs_a_source() -> None:
    with pytest.raises(ValueError, match="no account"):
        resolve_account()
    assert resolve_account(1).address == ANVIL_1


def test_many_devnet_accounts_at_once_are_the_same_keys() -> None:
    from fedchain.chain.accounts import devnet_accounts, devnet_addresses

    indices = [0, 1, 7, 250, 1001]
    many = devnet_accounts(indices)
    assert [a.address for a in many[:2]] == [ANVIL_0, ANVIL_1]
    for index, account in zip(indices, many, strict=True):
        assert account.key == devnet_account(index).key
    assert devnet_addresses(3) == [devnet_account(i).address for i in range(3)]
    # The same signer too (its public key is computed by libsecp256k1 here, by eth-keys' default there).
    from eth_account.messages import encode_defunct

    message = encode_defunct(text="fedchain")
    assert many[3].sign_message(message).signature == devnet_account(250).sign_message(message).signature
    assert devnet_accounts([]) == []
    with pytest.raises(ValueError):
        devnet_accounts([3, -1])
