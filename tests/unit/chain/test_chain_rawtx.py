"""The fast raw-transaction signer gives byte-for-byte what eth-account gives, for both envelopes."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_utils import function_signature_to_4byte_selector
from hypothesis import given, settings
from hypothesis import strategies as st

from fedchain.chain.accounts import devnet_accounts
from fedchain.chain.rawtx import RawSigner, selector, word

ACCOUNT = devnet_accounts([3])[0]
SIGNER = RawSigner(bytes(ACCOUNT.key))
uint64 = st.integers(0, 2**64 - 1)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


@settings(max_examples=200, deadline=None)
@given(
    chain_id=st.integers(1, 2**32),
    nonce=uint64,
    gas=st.integers(21_000, 30_000_000),
    to=addresses,
    value=st.integers(0, 2**128),
    data=st.binary(max_size=300),
    fees=st.one_of(
        st.builds(lambda tip, extra: {"maxPriorityFeePerGas": tip, "maxFeePerGas": tip + extra}, uint64, uint64),
        st.builds(lambda price: {"gasPrice": price}, uint64),
    ),
)
def test_signed_bytes_equal_eth_account(chain_id, nonce, gas, to, value, data, fees) -> None:
    tx = {"chainId": chain_id, "nonce": nonce, "gas": gas, "to": to, "value": value, "data": data, **fees}
    expected = bytes(Account.sign_transaction(_checksummed(tx), ACCOUNT.key).raw_transaction)
    assert SIGNER.sign(tx) == expected


def _checksummed(tx: dict) -> dict:
    from eth_utils import to_checksum_address

    return {**tx, "to": to_checksum_address(tx["to"])}


def test_signer_recovers_to_the_account() -> None:
    tx = {"chainId": 31337, "nonce": 7, "gas": 60_000, "to": "0x" + "11" * 20, "value": 0, "data": b"\x01\x02",
          "maxFeePerGas": 2_000_000_000, "maxPriorityFeePerGas": 1_000_000_000}  # fmt: skip
    assert Account.recover_transaction(SIGNER.sign(tx)) == ACCOUNT.address


@pytest.mark.parametrize(
    "tx",
    [
        {"chainId": 1, "nonce": 0, "gas": 1, "to": "0x12", "gasPrice": 1},  # short address
        {"chainId": 1, "nonce": 0, "gas": 1, "to": "0x" + "11" * 20, "gasPrice": 1, "accessList": []},  # unsupported
    ],
)
def test_refuses_what_it_cannot_sign(tx: dict) -> None:
    with pytest.raises(ValueError):
        SIGNER.sign(tx)


def test_abi_helpers() -> None:
    assert selector("submitUpdate(uint32,bytes32,uint64)") == function_signature_to_4byte_selector(
        "submitUpdate(uint32,bytes32,uint64)"
    )
    assert word(1) == b"\x00" * 31 + b"\x01"
    assert word(b"\xaa" * 32) == b"\xaa" * 32
    for bad in (-1, 1 << 256, b"\x00" * 31):
        with pytest.raises(ValueError):
            word(bad)


@pytest.mark.parametrize("kind", [None, 2, "0x2"])
def test_contract_creation_and_type_field(kind) -> None:
    tx = {"chainId": 1337, "nonce": 0, "gas": 3_000_000, "value": 0, "data": b"\x60\x80" * 40,
          "maxFeePerGas": 10, "maxPriorityFeePerGas": 1}  # fmt: skip
    if kind is not None:
        tx["type"] = kind
    assert SIGNER.sign(tx) == bytes(Account.sign_transaction(tx, ACCOUNT.key).raw_transaction)


def test_type_must_match_the_fee_fields() -> None:
    with pytest.raises(ValueError, match="type"):
        SIGNER.sign({"chainId": 1, "nonce": 0, "gas": 21_000, "to": "0x" + "11" * 20, "gasPrice": 1, "type": 2})


def test_submit_update_call_data_equals_web3s() -> None:
    from web3 import Web3

    from fedchain.chain.artifacts import load_artifact
    from fedchain.chain.task import encode_submit_update

    contract = Web3().eth.contract(
        address="0x5FbDB2315678afecb367f032d93F642f64180aa3", abi=load_artifact("FederatedTask").abi
    )
    for args in [(1, b"\x01" * 32, 10), (2**32 - 1, bytes(range(32)), 2**64 - 1), (0, b"\x00" * 32, 0)]:
        expected = contract.functions.submitUpdate(*args)._encode_transaction_data()
        assert "0x" + encode_submit_update(*args).hex() == expected
    for bad in [(2**32, b"\x01" * 32, 1), (1, b"\x01" * 32, 2**64), (1, b"\x01" * 31, 1)]:
        with pytest.raises(ValueError):
            encode_submit_update(*bad)
