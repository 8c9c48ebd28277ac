"""Reverts come back as the contract's custom error names with decoded arguments."""

from __future__ import annotations

from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector

from fedchain.chain.tx import ErrorDecoder

ABI = [
    {
        "type": "error",
        "name": "WrongRound",
        "inputs": [{"name": "expected", "type": "uint32"}, {"name": "given", "type": "uint32"}],
    },
    {
        "type": "error",
        "name": "InputsMismatch",
        "inputs": [{"name": "e", "type": "bytes20"}, {"name": "g", "type": "bytes20"}],
    },
    {"type": "error", "name": "ZeroSamples", "inputs": []},
]


def revert_data(signature: str, types: list[str], values: list) -> str:
    return "0x" + (function_signature_to_4byte_selector(signature) + abi_encode(types, values)).hex()


def test_custom_error_with_arguments() -> None:
    err = ErrorDecoder(ABI).decode(revert_data("WrongRound(uint32,uint32)", ["uint32", "uint32"], [3, 5]))
    assert err.error == "WrongRound" and err.args_ == (3, 5)
    assert "WrongRound(3, 5)" in str(err)


def test_custom_error_without_arguments_and_bytes_rendering() -> None:
    decoder = ErrorDecoder(ABI)
    assert decoder.decode(revert_data("ZeroSamples()", [], [])).error == "ZeroSamples"
    err = decoder.decode(
        revert_data("InputsMismatch(bytes20,bytes20)", ["bytes20", "bytes20"], [b"\x01" * 20, b"\x02" * 20])
    )
    assert "0x" + "01" * 20 in str(err)


def test_solidity_error_string_and_unknown_selector() -> None:
    decoder = ErrorDecoder(ABI)
    assert decoder.decode(revert_data("Error(string)", ["string"], ["boom"])).args_ == ("boom",)
    unknown = decoder.decode("0xdeadbeef")
    assert unknown.error == "" and unknown.raw == "0xdeadbeef"
    assert decoder.decode(None).error == ""


def test_truncated_arguments_keep_the_name() -> None:
    err = ErrorDecoder(ABI).decode(revert_data("WrongRound(uint32,uint32)", [], [])[:12])
    assert err.error == "WrongRound" and err.args_ == ()
