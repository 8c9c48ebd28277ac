"""Decoding calls and logs of the project's contracts from raw JSON-RPC data (hex strings), with web3.py's ABI
machinery: `get_event_data` for logs, web3's codec and return normalizers for calls and constructors.

Pure functions over an ABI: no node. Values come back JSON-ready: bytes as 0x-hex, addresses checksummed, integers
as int, tuples as dicts of their component names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_abi.codec import ABICodec
from eth_utils import event_abi_to_log_topic, function_abi_to_4byte_selector, to_checksum_address
from web3._utils.abi import build_strict_registry, map_abi_data
from web3._utils.events import get_event_data
from web3._utils.normalizers import BASE_RETURN_NORMALIZERS

_CODEC = ABICodec(build_strict_registry())
# get_event_data copies these from the log into its answer; a raw log from a receipt or eth_getLogs has them, a
# log read back from the index does not need them.
_LOG_FIELDS = ("logIndex", "transactionIndex", "transactionHash", "address", "blockHash", "blockNumber")


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
        components = param["components"]
        if isinstance(value, dict):  # web3's named tree of an event's tuple
            value = [value[c["name"]] for c in components]
        return {c["name"] or str(i): _jsonable(c, v) for i, (c, v) in enumerate(zip(components, value, strict=True))}
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
                self._functions[function_abi_to_4byte_selector(entry)] = entry  # type: ignore[arg-type]
            elif kind == "event" and not entry.get("anonymous"):
                self._events[event_abi_to_log_topic(entry)] = entry  # type: ignore[arg-type]
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
        return _decode_params(entry, raw[4:])

    def decode_constructor(self, data: str | bytes, bytecode: str | bytes) -> DecodedCall | None:
        """Constructor arguments of a creation transaction whose input starts with `bytecode`."""
        raw, code = _hex_bytes(data), _hex_bytes(bytecode)
        if self._constructor is None or not code or not raw.startswith(code):
            return None
        return _decode_params({**self._constructor, "name": "constructor"}, raw[len(code) :])

    def decode_log(self, topics: list[str], data: str) -> DecodedLog | None:
        """A log's event and arguments; None for an unknown topic or malformed data."""
        if not topics:
            return None
        topic_bytes = [_hex_bytes(t) for t in topics]
        entry = self._events.get(topic_bytes[0])
        if entry is None:
            return None
        inputs = entry.get("inputs", [])
        log_entry = {**dict.fromkeys(_LOG_FIELDS), "topics": topic_bytes, "data": _hex_bytes(data)}
        try:
            decoded = get_event_data(_CODEC, entry, log_entry)  # type: ignore[arg-type]
        except Exception:  # a topic count or data that does not fit the event: the caller shows the log raw
            return None
        # Indexed dynamic values (string, bytes, arrays, tuples) are only their keccak hash in the topic: web3
        # decodes them as bytes32, shown as hex.
        args = {p["name"]: _event_value(p, decoded["args"][p["name"]]) for p in inputs}  # declaration order
        return DecodedLog(entry["name"], args, {p["name"]: abi_type(p) for p in inputs})


def _event_value(param: dict[str, Any], value: Any) -> Any:
    if param.get("indexed") and not _is_static(param):
        return "0x" + bytes(value).hex()
    return _jsonable(param, value)


def _decode_params(entry: dict[str, Any], payload: bytes) -> DecodedCall | None:
    inputs = entry.get("inputs", [])
    types = [abi_type(i) for i in inputs]
    try:
        values = map_abi_data(BASE_RETURN_NORMALIZERS, types, _CODEC.decode(types, payload))
    except Exception:  # malformed input: the caller shows it raw
        return None
    args = {(p["name"] or f"arg{i}"): _jsonable(p, v) for i, (p, v) in enumerate(zip(inputs, values, strict=True))}
    names = [p["name"] or f"arg{i}" for i, p in enumerate(inputs)]
    return DecodedCall(entry["name"], args, dict(zip(names, types, strict=True)))


def _is_static(param: dict[str, Any]) -> bool:
    """Indexed dynamic values (string, bytes, arrays, tuples) are stored as their keccak hash in the topic."""
    kind = param["type"]
    return not (kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("tuple"))
