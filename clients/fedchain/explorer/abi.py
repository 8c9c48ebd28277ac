"""Decoding calls and logs of the project's contracts from raw JSON-RPC data (hex strings), with eth_abi only.

Pure functions over an ABI: no node, no web3 formatters. Values come back JSON-ready: bytes as 0x-hex, addresses
checksummed, integers as int, tuples as dicts of their component names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address


def abi_type(param: dict[str, Any]) -> str:
    """The canonical type string of one ABI parameter (tuples spelled out)."""
    if param["type"].startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param.get("components", []))
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


def _jsonable(param: dict[str, Any], value: Any) -> Any:
    kind = param["type"]
    if kind.endswith("]"):
        inner = {**param, "type": kind[: kind.rindex("[")]}
        return [_jsonable(inner, v) for v in value]
    if kind == "tuple":
        return {
            c["name"] or str(i): _jsonable(c, v)
            for i, (c, v) in enumerate(zip(param["components"], value, strict=True))
        }
    if kind == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return value


def _hex_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    text = value[2:] if value.startswith(("0x", "0X")) else value
    return bytes.fromhex(text)


@dataclass(frozen=True)
class DecodedCall:
    """A decoded transaction input: function name, arguments (JSON-ready, by name), and parameter types."""

    name: str
    args: dict[str, Any]
    types: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodedLog:
    name: str
    args: dict[str, Any]
    types: dict[str, str] = field(default_factory=dict)


class AbiCodec:
    """Function, constructor and event decoding for one contract ABI."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self.abi = abi
        self._functions: dict[bytes, dict[str, Any]] = {}
        self._events: dict[bytes, dict[str, Any]] = {}
        self._constructor: dict[str, Any] | None = None
        for entry in abi:
            kind = entry.get("type")
            if kind == "function":
                signature = f"{entry['name']}({','.join(abi_type(i) for i in entry.get('inputs', []))})"
                self._functions[function_signature_to_4byte_selector(signature)] = entry
            elif kind == "event" and not entry.get("anonymous"):
                signature = f"{entry['name']}({','.join(abi_type(i) for i in entry.get('inputs', []))})"
                self._events[keccak(text=signature)] = entry
            elif kind == "constructor":
                self._constructor = entry

    def event_topics(self) -> list[str]:
        """topic0 of every event in the ABI, as 0x-hex."""
        return ["0x" + t.hex() for t in self._events]

    def event_topic(self, name: str) -> str:
        for topic, entry in self._events.items():
            if entry["name"] == name:
                return "0x" + topic.hex()
        raise KeyError(f"event {name} not in ABI")

    def event_types(self, name: str) -> dict[str, str]:
        """Parameter types of an event, by parameter name (empty for an unknown event)."""
        for entry in self._events.values():
            if entry["name"] == name:
                return {p["name"]: abi_type(p) for p in entry.get("inputs", [])}
        return {}

    def decode_call(self, data: str | bytes) -> DecodedCall | None:
        """The function call in a transaction's input; None when the selector is unknown or the data malformed."""
        raw = _hex_bytes(data)
        entry = self._functions.get(raw[:4])
        if entry is None:
            return None
        return self._decode_params(entry, raw[4:])

    def decode_constructor(self, data: str | bytes, bytecode: str | bytes) -> DecodedCall | None:
        """Constructor arguments of a creation transaction whose input starts with `bytecode`."""
        raw, code = _hex_bytes(data), _hex_bytes(bytecode)
        if self._constructor is None or not code or not raw.startswith(code):
            return None
        decoded = self._decode_params({**self._constructor, "name": "constructor"}, raw[len(code) :])
        return decoded

    def _decode_params(self, entry: dict[str, Any], payload: bytes) -> DecodedCall | None:
        inputs = entry.get("inputs", [])
        try:
            values = abi_decode([abi_type(i) for i in inputs], payload)
        except Exception:  # malformed input: the caller shows it raw
            return None
        args = {(p["name"] or f"arg{i}"): _jsonable(p, v) for i, (p, v) in enumerate(zip(inputs, values, strict=True))}
        types = {(p["name"] or f"arg{i}"): abi_type(p) for i, p in enumerate(inputs)}
        return DecodedCall(entry["name"], args, types)

    def decode_log(self, topics: list[str], data: str) -> DecodedLog | None:
        """A log's event and arguments; None for an unknown topic or malformed data."""
        if not topics:
            return None
        entry = self._events.get(_hex_bytes(topics[0]))
        if entry is None:
            return None
        inputs = entry.get("inputs", [])
        indexed = [p for p in inputs if p.get("indexed")]
        plain = [p for p in inputs if not p.get("indexed")]
        if len(topics) - 1 != len(indexed):
            return None
        try:
            plain_values = abi_decode([abi_type(p) for p in plain], _hex_bytes(data))
            indexed_values = [
                abi_decode([abi_type(p)], _hex_bytes(t))[0] if _is_static(p) else "0x" + _hex_bytes(t).hex()
                for p, t in zip(indexed, topics[1:], strict=True)
            ]
        except Exception:
            return None
        by_name: dict[str, Any] = {}
        for p, v in zip(indexed, indexed_values, strict=True):
            by_name[p["name"]] = v if isinstance(v, str) and not _is_static(p) else _jsonable(p, v)
        for p, v in zip(plain, plain_values, strict=True):
            by_name[p["name"]] = _jsonable(p, v)
        args = {p["name"]: by_name[p["name"]] for p in inputs}  # declaration order
        return DecodedLog(entry["name"], args, {p["name"]: abi_type(p) for p in inputs})


def _is_static(param: dict[str, Any]) -> bool:
    """Indexed dynamic values (string, bytes, arrays, tuples) are stored as their keccak hash in the topic."""
    kind = param["type"]
    return not (kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("tuple"))
