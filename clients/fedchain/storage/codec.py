"""Model weights <-> safetensors bytes: deterministic on the way out, strictly validated on the way in.

Weights come from other participants over IPFS, so decoding treats every byte as hostile: the header is
checked in Python (sizes, dtypes, offsets) before safetensors sees it, and every failure is MalformedWeights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from fedchain.storage.errors import MalformedWeights

DEFAULT_MAX_BYTES = 512 * 2**20
# safetensors itself refuses headers over 100 MB; a real header for our models is a few kB.
MAX_HEADER_BYTES = 100 * 2**20
_METADATA_KEY = "__metadata__"

# dtypes numpy can represent, with their item sizes (safetensors also has BF16/F8, which numpy cannot hold).
_ITEMSIZE: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
_NUMPY_KINDS = frozenset("biuf")


def encode_weights(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """safetensors bytes for `weights`; identical input gives identical bytes, in any process."""
    tensors: dict[str, np.ndarray] = {}
    for name in sorted(weights):
        if not isinstance(name, str) or not name or name == _METADATA_KEY:
            raise MalformedWeights(f"expected non-empty string tensor names other than {_METADATA_KEY!r}, got {name!r}")
        tensors[name] = _prepare(name, weights[name])
    meta: dict[str, str] | None = None
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise MalformedWeights(f"expected str -> str metadata, got {key!r}: {type(value).__name__}")
        meta = dict(sorted(metadata.items()))
    return _canonical_header(_st_save(tensors, metadata=meta))


def decode_weights(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
    """Arrays from safetensors bytes (writable copies); MalformedWeights for anything not valid and bounded."""
    _parse(data, max_bytes)
    try:
        loaded = _st_load(bytes(data))
    except Exception as exc:  # the header was validated; anything left is still the sender's fault
        raise MalformedWeights(f"expected a valid safetensors blob, safetensors refused it: {exc}") from exc
    # np.frombuffer views are read-only; aggregation code updates arrays in place, so hand out copies.
    return {name: np.array(arr, copy=True) for name, arr in loaded.items()}


def read_metadata(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, str]:
    """The safetensors `__metadata__` map (empty when absent); MalformedWeights on bad input."""
    metadata, _ = _parse(data, max_bytes)
    return metadata


def _prepare(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in _NUMPY_KINDS or arr.dtype.itemsize not in (1, 2, 4, 8):
        raise MalformedWeights(f"tensor {name!r}: expected a bool/int/uint/float dtype, got {arr.dtype}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    # Not np.ascontiguousarray: it turns 0-d arrays into shape (1,).
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _canonical_header(blob: bytes) -> bytes:
    """Rewrite the header with sorted metadata keys: safetensors keeps them in a Rust HashMap (random order)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    out: dict[str, Any] = {}
    if _METADATA_KEY in header:
        out[_METADATA_KEY] = dict(sorted(header.pop(_METADATA_KEY).items()))
    out.update(header)  # tensor order is already deterministic (by dtype alignment, then name)
    text = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors pads the header so the data section stays 8-byte aligned
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def _parse(data: bytes, max_bytes: int) -> tuple[dict[str, str], dict[str, Any]]:
    """Validate framing, header JSON and tensor table; returns (metadata, tensor entries)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedWeights(f"expected safetensors bytes, got {type(data).__name__}")
    total = len(data)
    if total > max_bytes:
        raise MalformedWeights(f"expected at most {max_bytes} bytes of weights, found {total} bytes (too large)")
    if total < 8:
        raise MalformedWeights(
            f"expected an 8-byte safetensors header length, found only {total} bytes (truncated or not safetensors)"
        )
    size = int.from_bytes(data[:8], "little")
    if size > MAX_HEADER_BYTES:
        raise MalformedWeights(f"expected a header of at most {MAX_HEADER_BYTES} bytes, length field says {size}")
    if size > total - 8:
        raise MalformedWeights(
            f"expected {size} header bytes after the length field, found {total - 8} (truncated or not safetensors)"
        )
    try:
        header = json.loads(bytes(data[8 : 8 + size]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedWeights(f"expected a UTF-8 JSON safetensors header, found invalid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedWeights(f"expected the safetensors header to be a JSON object, found {type(header).__name__}")
    metadata = header.pop(_METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise MalformedWeights("expected __metadata__ to be a JSON object of string -> string")
    _check_tensors(header, total - 8 - size)
    return metadata, header


def _check_tensors(entries: dict[str, Any], body_len: int) -> None:
    """Each entry well-typed and sized; together they tile the data section exactly, as safetensors requires."""
    spans: list[tuple[int, int, str]] = []
    for name, info in entries.items():
        if not isinstance(info, dict):
            raise MalformedWeights(f"tensor {name!r}: expected a JSON object, found {type(info).__name__}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _ITEMSIZE:
            raise MalformedWeights(f"tensor {name!r}: expected one of {sorted(_ITEMSIZE)} as dtype, found {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise MalformedWeights(f"tensor {name!r}: expected a list of non-negative ints as shape, found {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
            raise MalformedWeights(f"tensor {name!r}: expected data_offsets [begin, end], found {offsets!r}")
        begin, end = offsets
        expected = math.prod(shape) * _ITEMSIZE[dtype]
        if end < begin or end - begin != expected:
            raise MalformedWeights(
                f"tensor {name!r}: expected {expected} bytes for {dtype}{shape}, offsets give {end - begin}"
            )
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise MalformedWeights(f"tensor {name!r}: expected data to start at byte {position}, found {begin}")
        position = end
    if position != body_len:
        raise MalformedWeights(
            f"expected tensors to fill the {body_len}-byte data section, they cover {position} bytes"
            " (truncated or padded)"
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
