"""Reading a Kubo repo's flatfs blockstore directly: block paths, links, and whether a CID is complete locally.

The byte-exact proof that these are Kubo's paths is in test_storage_node.py (a real node's fail-fast reads and pin
listing depend on them); here a repo is laid out by hand.
"""

from __future__ import annotations

from pathlib import Path

import base58

from fedchain.storage.dagpb import CHUNK_SIZE, DagNode, internal_block, leaf_block, sha256_multihash
from fedchain.storage.flatfs import FLATFS_SHARDING, block_path, child_cids, has_locally


def _cid(multihash: bytes) -> str:
    return base58.b58encode(multihash).decode("ascii")


def _store(repo: Path, block: bytes) -> Path:
    path = block_path(repo, sha256_multihash(block))
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(block)
    return path


def _two_chunk_file(repo: Path) -> tuple[str, list[str], list[Path]]:
    """A file of two chunks stored as Kubo stores it: two leaves and the root linking them."""
    leaves = [leaf_block(bytes([i]) * CHUNK_SIZE) for i in range(2)]
    nodes = [DagNode(sha256_multihash(b), len(b), CHUNK_SIZE) for b in leaves]
    root = internal_block(nodes)
    paths = [_store(repo, b) for b in leaves]
    _store(repo, root)
    return _cid(sha256_multihash(root)), [_cid(n.multihash) for n in nodes], paths


def test_block_path_is_next_to_last_two_shard(tmp_path: Path) -> None:
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "SHARDING").write_text(FLATFS_SHARDING + "\n")
    path = block_path(tmp_path, b"\x12\x20" + bytes(32))
    assert path is not None
    key = path.name.removesuffix(".data")
    assert key.startswith("CIQA") and path.parent.name == key[-3:-1] and path.parent.parent == tmp_path / "blocks"


def test_unknown_layout_is_not_guessed(tmp_path: Path) -> None:
    assert block_path(tmp_path, b"\x12\x20" + bytes(32)) is None  # no SHARDING file
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "SHARDING").write_text("/repo/flatfs/shard/v1/prefix/2")
    assert block_path(tmp_path, b"\x12\x20" + bytes(32)) is None
    assert has_locally(tmp_path, _cid(b"\x12\x20" + bytes(32))) is None


def test_complete_partial_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "SHARDING").write_text(FLATFS_SHARDING)
    root, children, leaf_paths = _two_chunk_file(tmp_path)
    assert has_locally(tmp_path, root) is True
    assert child_cids(tmp_path, root) == children
    assert child_cids(tmp_path, children[0]) == []  # a leaf links nothing
    leaf_paths[1].unlink()
    assert has_locally(tmp_path, root) is False
    assert has_locally(tmp_path, _cid(sha256_multihash(b"never stored"))) is False
