"""CIDv0 <-> digest conversions and Kubo-compatible CID computation (pure, no node)."""

from __future__ import annotations

import hashlib

import base58
import pytest

from fedchain.storage import ContentMismatch, InvalidCid, cid_to_digest, compute_cid, digest_to_cid, verify
from fedchain.storage.dagpb import CHUNK_SIZE, MAX_LINKS, build_file_dag, internal_block, leaf_block, link_hashes

# Well-known CIDs from `ipfs add` (Kubo defaults).
HELLO_CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"  # b"hello world\n"
EMPTY_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"  # b""


def test_known_cids() -> None:
    assert compute_cid(b"hello world\n") == HELLO_CID
    assert compute_cid(b"") == EMPTY_CID


def test_digest_round_trip() -> None:
    digest = hashlib.sha256(b"anything").digest()
    cid = digest_to_cid(digest)
    assert cid.startswith("Qm") and len(cid) == 46
    assert cid_to_digest(cid) == digest
    assert digest_to_cid("0x" + digest.hex()) == cid
    assert digest_to_cid("0x" + digest.hex().upper()) == cid
    assert digest_to_cid(bytearray(digest)) == cid
    assert digest_to_cid(cid_to_digest(HELLO_CID)) == HELLO_CID


def test_digest_is_sha256_of_the_root_block() -> None:
    # For a single-chunk file the root is the leaf block itself.
    assert cid_to_digest(HELLO_CID) == hashlib.sha256(leaf_block(b"hello world\n")).digest()


@pytest.mark.parametrize(
    ("cid", "fragment"),
    [
        ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "CIDv1"),  # CIDv1, base32
        ("zdj7WWeQ43G6JJvLWQWZpyHuAMq6uYWRjkBXFad11vE2LHhQ7", "CIDv1"),  # CIDv1, base58btc
        ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5", "46 characters"),  # one character short
        (HELLO_CID + "o", "46 characters"),
        ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff50", "base58"),  # '0' is not base58
        ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ffOl", "base58"),  # 'O' and 'l' are not either
        ("", "46 characters"),
        ("Qm" + "é" * 44, "base58"),
    ],
)
def test_invalid_cids(cid: str, fragment: str) -> None:
    with pytest.raises(InvalidCid, match=fragment):
        cid_to_digest(cid)


def test_wrong_multihash_code() -> None:
    # A 46-character "Qm…" string whose bytes are not 0x12 0x20: find one by changing the digest length byte.
    for code in range(0x00, 0x100):
        candidate = base58.b58encode(bytes((0x12, code)) + b"\x01" * 32).decode()
        if code != 0x20 and candidate.startswith("Qm") and len(candidate) == 46:
            with pytest.raises(InvalidCid, match="0x1220"):
                cid_to_digest(candidate)
            return
    pytest.skip("no such spelling exists")


def test_non_string_cid() -> None:
    with pytest.raises(InvalidCid, match="string"):
        cid_to_digest(b"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")  # type: ignore[arg-type]


def test_invalid_cid_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        cid_to_digest("nope")


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, "0x" + "ab" * 31, "ab" * 32, "0x" + "zz" * 32, 7])
def test_invalid_digests(digest: object) -> None:
    with pytest.raises(InvalidCid):
        digest_to_cid(digest)  # type: ignore[arg-type]


def test_verify() -> None:
    verify(b"hello world\n", HELLO_CID)
    with pytest.raises(ContentMismatch, match=HELLO_CID):
        verify(b"hello world!", HELLO_CID)
    with pytest.raises(InvalidCid):
        verify(b"x", "not-a-cid")


def test_dag_shape_matches_kubo_layout() -> None:
    """Structure checks; the byte-exact proof against the real node is in test_storage_node.py."""
    one_level = build_file_dag(b"\x00" * (CHUNK_SIZE + 1))
    assert one_level.filesize == CHUNK_SIZE + 1
    two_levels = build_file_dag(b"\x00" * (MAX_LINKS * CHUNK_SIZE + 1))
    assert two_levels.filesize == MAX_LINKS * CHUNK_SIZE + 1
    # The root's Tsize counts every block: at least the data plus per-block overhead.
    assert two_levels.tsize > two_levels.filesize


def test_internal_block_encoding() -> None:
    leaf = build_file_dag(b"ab")
    block = internal_block([leaf, leaf])
    # Links come first (tag 0x12), each with Hash, empty Name (0x12 0x00) and Tsize.
    assert block[0] == 0x12
    assert link_hashes(block) == [leaf.multihash, leaf.multihash]
    assert b"\x12\x00\x18" in block
