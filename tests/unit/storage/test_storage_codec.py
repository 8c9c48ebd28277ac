"""safetensors encoding: round trips, determinism, and strict rejection of malformed input."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from fedchain.storage import MalformedWeights, decode_weights, encode_weights, read_metadata


def sample_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "layer1.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "layer1.bias": rng.standard_normal(4).astype(np.float64),
        "steps": np.array(12345, dtype=np.int64),  # 0-d scalar
        "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": np.zeros((0, 5), dtype=np.float32),
        "mask": np.array([True, False, True]),
        "small": np.array([1, -2, 3], dtype=np.int8),
        "half": np.array([0.5, 1.5], dtype=np.float16),
        "u32": np.array([1, 2**32 - 1], dtype=np.uint32),
    }


def test_round_trip_preserves_dtype_shape_and_values() -> None:
    weights = sample_weights()
    decoded = decode_weights(encode_weights(weights))
    assert sorted(decoded) == sorted(weights)
    for name, original in weights.items():
        assert decoded[name].dtype == original.dtype, name
        assert decoded[name].shape == original.shape, name
        np.testing.assert_array_equal(decoded[name], original)
    assert decoded["steps"].shape == ()


def test_decoded_arrays_are_writable() -> None:
    decoded = decode_weights(encode_weights({"w": np.ones(3, np.float32)}))
    decoded["w"] += 1
    np.testing.assert_array_equal(decoded["w"], [2, 2, 2])


def test_non_contiguous_and_big_endian_inputs() -> None:
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    weights = {"t": base.T, "be": np.arange(4, dtype=">i4"), "scalar": np.float32(2.5)}
    decoded = decode_weights(encode_weights(weights))
    np.testing.assert_array_equal(decoded["t"], base.T)
    np.testing.assert_array_equal(decoded["be"], np.arange(4))
    assert decoded["scalar"].shape == () and decoded["scalar"] == np.float32(2.5)


def test_metadata_round_trip() -> None:
    blob = encode_weights({"w": np.zeros(2, np.float32)}, metadata={"round": "3", "task": "0xabc", "ü": "ß"})
    assert read_metadata(blob) == {"round": "3", "task": "0xabc", "ü": "ß"}
    assert read_metadata(encode_weights({"w": np.zeros(2, np.float32)})) == {}


def test_encoding_is_deterministic() -> None:
    weights = sample_weights()
    metadata = {f"k{i}": str(i) for i in range(20)}
    first = encode_weights(weights, metadata)
    assert encode_weights(dict(reversed(list(weights.items()))), dict(reversed(list(metadata.items())))) == first
    assert encode_weights({k: v.copy() for k, v in weights.items()}, metadata) == first


def test_encoding_is_deterministic_across_processes() -> None:
    # safetensors keeps metadata in a Rust HashMap whose order changes per process; we sort it.
    script = (
        "import sys, numpy as np; from fedchain.storage import encode_weights;"
        "sys.stdout.buffer.write(encode_weights({'b': np.ones(3, np.float32), 'a': np.zeros((), np.int64)},"
        " {f'k{i}': str(i) for i in range(12)}))"
    )
    outputs = {subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout for _ in range(3)}
    assert len(outputs) == 1


def test_unsupported_dtype_is_rejected() -> None:
    with pytest.raises(MalformedWeights, match="dtype"):
        encode_weights({"c": np.zeros(2, np.complex64)})
    with pytest.raises(MalformedWeights, match="dtype"):
        encode_weights({"o": np.array(["x"], dtype=object)})
    with pytest.raises(MalformedWeights):
        encode_weights({"w": np.zeros(1)}, metadata={"n": 1})  # type: ignore[dict-item]


def _blob(header: object, body: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "8-byte"),
        (b"\x01\x02", "8-byte"),
        ((2**63).to_bytes(8, "little"), "at most"),  # huge header length
        ((1000).to_bytes(8, "little") + b"{}", "truncated"),
        (_blob(b"{not json"), "JSON"),
        (_blob(b"\xff\xfe"), "JSON"),
        (_blob([1, 2]), "object"),
        (_blob({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\x00" * 4), "fill|bytes"),
        (_blob({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\x00" * 4), "expected 8 bytes"),
        (_blob({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\x00" * 4), "dtype"),
        (_blob({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\x00" * 4), "shape"),
        (_blob({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\x00" * 8), "start at byte 0"),
        (_blob({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, b"\x00" * 4), "data_offsets"),
        (_blob({"w": "nope"}), "JSON object"),
        (_blob({"__metadata__": {"a": 1}}), "__metadata__"),
        (_blob({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\x00" * 3), "fill"),
    ],
)
def test_malformed_inputs(data: bytes, fragment: str) -> None:
    with pytest.raises(MalformedWeights, match=fragment):
        decode_weights(data)
    with pytest.raises(MalformedWeights):
        read_metadata(data)


def test_too_large() -> None:
    blob = encode_weights({"w": np.zeros(100, np.float32)})
    with pytest.raises(MalformedWeights, match="too large"):
        decode_weights(blob, max_bytes=100)


def test_not_bytes() -> None:
    with pytest.raises(MalformedWeights, match="bytes"):
        decode_weights("text")  # type: ignore[arg-type]


def test_every_truncation_is_rejected_cleanly() -> None:
    blob = encode_weights({"a": np.arange(5, dtype=np.float32), "b": np.ones((2, 2))}, {"m": "v"})
    for cut in range(len(blob)):
        with pytest.raises(MalformedWeights):
            decode_weights(blob[:cut])


def test_fuzz_garbage_and_bit_flips_never_escape_as_other_errors() -> None:
    rng = random.Random(1234)
    blob = encode_weights({"a": np.arange(5, dtype=np.float32), "b": np.ones((2, 2))}, {"m": "v"})
    for _ in range(400):
        garbage = rng.randbytes(rng.randrange(0, 300))
        with pytest.raises(MalformedWeights):
            decode_weights(garbage)
    for _ in range(1500):
        mutated = bytearray(blob)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            decoded = decode_weights(bytes(mutated))
        except MalformedWeights:
            continue
        assert all(isinstance(v, np.ndarray) for v in decoded.values())
