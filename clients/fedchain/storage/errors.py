"""Errors raised by the storage layer (CIDs, weight encoding, the IPFS RPC client and the embedded node)."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for every storage-layer failure."""


class InvalidCid(StorageError, ValueError):
    """A string or digest is not a CIDv0 (sha256 multihash, base58btc, "Qm…")."""


class ContentMismatch(StorageError):
    """Bytes do not hash to the CID they were fetched or stored under."""


class MalformedWeights(StorageError, ValueError):
    """Bytes are not a valid, bounded safetensors blob."""


class IpfsUnavailable(StorageError):
    """The IPFS RPC API cannot be reached."""


class ContentTooLarge(StorageError):
    """Content is larger than the caller's limit."""
