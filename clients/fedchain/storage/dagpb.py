"""Minimal dag-pb / UnixFS encoding, enough to reproduce the CIDv0 that Kubo's `ipfs add` gives a file.

There is no well-kept Python UnixFS importer (py-ipfs and friends are unmaintained), so the few protobuf
messages involved are written by hand here. Field numbers follow the dag-pb and UnixFS specs:

- PBNode: Links = 2 (repeated PBLink), Data = 1. Canonical dag-pb puts every Link BEFORE Data.
- PBLink: Hash = 1, Name = 2, Tsize = 3. Kubo always writes Name, even when empty (bytes 0x12 0x00).
- UnixFS Data: Type = 1, Data = 2, filesize = 3, blocksizes = 4 (repeated, not packed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

# Kubo's defaults for `ipfs add` (cid-version 0): size-262144 chunker, balanced layout, 174 links per node.
CHUNK_SIZE = 262144
MAX_LINKS = 174

SHA2_256 = 0x12
DIGEST_LEN = 32
CODEC_DAG_PB = 0x70
CODEC_RAW = 0x55
UNIXFS_FILE = 2

_WIRE_VARINT = 0
_WIRE_I64 = 1
_WIRE_LEN = 2
_WIRE_I32 = 5


def varint(value: int) -> bytes:
    """Unsigned LEB128, as protobuf and multiformats use."""
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a varint at `pos`; returns (value, next position). ValueError if truncated or over 64 bits."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise ValueError("varint longer than 64 bits")


def _key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def _len_field(field: int, payload: bytes | memoryview) -> bytes:
    return _key(field, _WIRE_LEN) + varint(len(payload)) + bytes(payload)


def _uint_field(field: int, value: int) -> bytes:
    return _key(field, _WIRE_VARINT) + varint(value)


def sha256_multihash(block: bytes) -> bytes:
    """The 34-byte sha2-256 multihash of a block."""
    return bytes((SHA2_256, DIGEST_LEN)) + hashlib.sha256(block).digest()


@dataclass(frozen=True, slots=True)
class DagNode:
    """A built node: its multihash, cumulative serialized size (the parent's Tsize) and file bytes below it."""

    multihash: bytes
    tsize: int
    filesize: int


def leaf_block(chunk: bytes | memoryview) -> bytes:
    """A non-raw UnixFS leaf: PBNode{Data: UnixFS{Type=File, Data=chunk, filesize=len(chunk)}}."""
    unixfs = _uint_field(1, UNIXFS_FILE)
    # Go's protobuf omits a nil Data field; only the empty file has one (then filesize=0 is still written).
    if len(chunk):
        unixfs += _len_field(2, chunk)
    unixfs += _uint_field(3, len(chunk))
    return _len_field(1, unixfs)


def internal_block(children: list[DagNode]) -> bytes:
    """An internal UnixFS file node linking `children` in order."""
    links = b"".join(
        _len_field(2, _len_field(1, child.multihash) + _len_field(2, b"") + _uint_field(3, child.tsize))
        for child in children
    )
    unixfs = _uint_field(1, UNIXFS_FILE) + _uint_field(3, sum(c.filesize for c in children))
    unixfs += b"".join(_uint_field(4, c.filesize) for c in children)
    # Links before Data: dag-pb canonical order, which is what the hash is taken over.
    return links + _len_field(1, unixfs)


def _leaf(chunk: memoryview) -> DagNode:
    block = leaf_block(chunk)
    return DagNode(sha256_multihash(block), len(block), len(chunk))


def _internal(children: list[DagNode]) -> DagNode:
    block = internal_block(children)
    return DagNode(
        sha256_multihash(block), len(block) + sum(c.tsize for c in children), sum(c.filesize for c in children)
    )


def build_file_dag(data: bytes) -> DagNode:
    """Root of the DAG Kubo builds for `data` (boxo importer/balanced, non-raw leaves)."""
    view = memoryview(data)
    if not view:
        return _leaf(view)
    leaves: Iterator[DagNode] = (_leaf(view[off : off + CHUNK_SIZE]) for off in range(0, len(view), CHUNK_SIZE))
    remaining = [-(-len(view) // CHUNK_SIZE)]  # leaves not yet built: the importer's "db.Done()" test

    def next_leaf() -> DagNode:
        remaining[0] -= 1
        return next(leaves)

    def fill(children: list[DagNode], depth: int) -> DagNode:
        # Mirrors balanced.fillNodeRec: fill this node to MAX_LINKS with subtrees of depth - 1.
        while len(children) < MAX_LINKS and remaining[0] > 0:
            children.append(next_leaf() if depth == 1 else fill([], depth - 1))
        return _internal(children)

    # Mirrors balanced.Layout: a single chunk is its own root; each extra level adopts the old root first.
    root = next_leaf()
    depth = 1
    while remaining[0] > 0:
        root = fill([root], depth)
        depth += 1
    return root


def link_hashes(block: bytes) -> list[bytes]:
    """Binary CIDs (or v0 multihashes) of a dag-pb block's links, in order. ValueError if malformed."""
    hashes: list[bytes] = []
    for field, wire, value in _fields(block):
        if field == 2 and wire == _WIRE_LEN:
            assert isinstance(value, bytes)
            found = [v for f, w, v in _fields(value) if f == 1 and w == _WIRE_LEN]
            if len(found) != 1:
                raise ValueError("dag-pb link without exactly one Hash")
            assert isinstance(found[0], bytes)
            hashes.append(found[0])
    return hashes


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Iterate the (field, wire type, value) triples of a protobuf message."""
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == _WIRE_VARINT:
            value, pos = read_varint(buf, pos)
            yield field, wire, value
        elif wire == _WIRE_LEN:
            size, pos = read_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated length-delimited field")
            yield field, wire, buf[pos : pos + size]
            pos += size
        elif wire in (_WIRE_I64, _WIRE_I32):
            pos += 8 if wire == _WIRE_I64 else 4
            if pos > len(buf):
                raise ValueError("truncated fixed-width field")
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def split_binary_cid(raw: bytes) -> tuple[int, bytes]:
    """(codec, multihash) of a binary CID; a bare 34-byte sha256 multihash is CIDv0 (dag-pb)."""
    if len(raw) == 2 + DIGEST_LEN and raw[0] == SHA2_256 and raw[1] == DIGEST_LEN:
        return CODEC_DAG_PB, raw
    version, pos = read_varint(raw, 0)
    if version != 1:
        raise ValueError(f"unsupported CID version {version}")
    codec, pos = read_varint(raw, pos)
    return codec, raw[pos:]
