"""Client for the Kubo HTTP RPC API (https://docs.ipfs.tech/reference/kubo/rpc/).

It speaks the same subset to a real Kubo daemon and to fedchain's embedded node. Nothing fetched is trusted:
`cat` always checks the bytes against the CID, and `add` checks the daemon's CID against our own computation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from fedchain.protocol.retry import Backoff, retry_call
from fedchain.storage.cid import cid_to_digest, compute_cid, verify
from fedchain.storage.codec import DEFAULT_MAX_BYTES, decode_weights, encode_weights
from fedchain.storage.errors import ContentMismatch, ContentTooLarge, IpfsUnavailable, StorageError

# A node that is still starting refuses connections for a moment: retry those, and a connection the node dropped
# mid-request (killed and restarted by the devnet's supervisor).
_CONNECT_RETRIES = 4
_BACKOFF = Backoff((0.2, 0.5, 1.0, 2.0))
_RETRIED_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


class IpfsClient:
    """Kubo RPC client: add / cat / pin and node info, plus safetensors weight helpers."""

    def __init__(
        self,
        api_url: str = "http://127.0.0.1:5001",
        timeout: float = 60.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        # `transport` lets tests substitute an httpx.MockTransport for the daemon.
        self._http = httpx.Client(base_url=self.api_url, timeout=timeout, transport=transport)

    def __enter__(self) -> IpfsClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def add(self, data: bytes, pin: bool = True) -> str:
        """Store `data` as one file; returns its CIDv0, checked against our own computation."""
        params = {"cid-version": "0", "pin": _flag(pin)}
        files = {"file": ("file", bytes(data), "application/octet-stream")}
        response = self._request("/api/v0/add", params=params, files=files)
        cid = _last_json_line(response.text, "Hash", "/api/v0/add")
        expected = compute_cid(data)
        if cid != expected:
            raise ContentMismatch(
                f"expected the daemon to store {len(data)} bytes as {expected}, it answered {cid}"
                " (non-default add settings on the daemon?)"
            )
        return cid

    def add_many(self, blobs: Sequence[bytes], pin: bool = True) -> list[str]:
        """Store each blob as its own file, in one request (Kubo's multi-file add, wrapped in a directory that is
        pinned recursively); returns the files' CIDv0s in order, each checked against our own computation."""
        if not blobs:
            return []
        params = {"cid-version": "0", "pin": _flag(pin), "wrap-with-directory": "true"}
        files = [("file", (f"{i:06d}", bytes(blob), "application/octet-stream")) for i, blob in enumerate(blobs)]
        response = self._request("/api/v0/add", params=params, files=files)
        answered: dict[str, str] = {}
        for line in response.text.splitlines():
            if line.strip():
                entry = json.loads(line)
                if entry.get("Name"):
                    answered[str(entry["Name"])] = str(entry.get("Hash", ""))
        cids = []
        for i, blob in enumerate(blobs):
            expected = compute_cid(blob)
            if answered.get(f"{i:06d}") != expected:
                raise ContentMismatch(
                    f"expected the daemon to store file {i} ({len(blob)} bytes) as {expected}, "
                    f"it answered {answered.get(f'{i:06d}')}"
                )
            cids.append(expected)
        return cids

    def cat(self, cid: str, max_size: int = DEFAULT_MAX_BYTES) -> bytes:
        """The file behind `cid`, at most `max_size` bytes, verified against the CID before it is returned."""
        cid_to_digest(cid)  # InvalidCid before any request
        chunks: list[bytes] = []
        received = 0

        def read(response: httpx.Response) -> None:
            nonlocal received
            chunks.clear()  # a retried request (the node dropped the first mid-way) starts over
            received = 0
            declared = response.headers.get("X-Content-Length") or response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_size:
                raise ContentTooLarge(f"expected at most {max_size} bytes for {cid}, daemon announces {declared}")
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received > max_size:
                    raise ContentTooLarge(f"expected at most {max_size} bytes for {cid}, received more")
                chunks.append(chunk)

        self._request("/api/v0/cat", params={"arg": cid}, stream=read)
        data = b"".join(chunks)
        verify(data, cid)
        return data

    def pin_add(self, cid: str) -> None:
        """Pin `cid` recursively on the daemon."""
        cid_to_digest(cid)
        response = self._request("/api/v0/pin/add", params={"arg": cid})
        pins = _json(response, "/api/v0/pin/add").get("Pins")
        if not isinstance(pins, list) or cid not in pins:
            raise StorageError(f"expected /api/v0/pin/add to report {cid} pinned, got {response.text[:200]!r}")

    def pin_ls(self) -> list[str]:
        """CIDs pinned recursively on the daemon, sorted."""
        # type=recursive: the pinned roots; "all" would add every block below them (indirect pins).
        response = self._request("/api/v0/pin/ls", params={"type": "recursive"})
        keys = _json(response, "/api/v0/pin/ls").get("Keys")
        if not isinstance(keys, dict):
            raise StorageError(f"expected {{'Keys': {{...}}}} from /api/v0/pin/ls, got {response.text[:200]!r}")
        return sorted(keys)

    def swarm_connect(self, multiaddr: str) -> None:
        """Connect the daemon to a peer (`/ip4/.../tcp/N/p2p/<ID>`); with Routing none peers are not found alone."""
        self._request("/api/v0/swarm/connect", params={"arg": multiaddr})

    def swarm_peers(self) -> list[str]:
        """Multiaddrs (with /p2p/ID) of the daemon's connected peers."""
        body = _json(self._request("/api/v0/swarm/peers"), "/api/v0/swarm/peers")
        peers = body.get("Peers") or []
        return [f"{p.get('Addr')}/p2p/{p.get('Peer')}" for p in peers if isinstance(p, dict)]

    def id(self) -> dict[str, Any]:
        """The daemon's identity: ID, Addresses, AgentVersion, ..."""
        return _json(self._request("/api/v0/id"), "/api/v0/id")

    def version(self) -> dict[str, Any]:
        """The daemon's version info: Version, System, ..."""
        return _json(self._request("/api/v0/version"), "/api/v0/version")

    def put_weights(self, weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> str:
        """Encode `weights` as safetensors, add and pin them; returns the CIDv0."""
        return self.add(encode_weights(weights, metadata))

    def get_weights(self, cid: str, max_size: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
        """Fetch, verify and decode the safetensors weights behind `cid`."""
        return decode_weights(self.cat(cid, max_size=max_size), max_bytes=max_size)

    def _request(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        stream: Any = None,
    ) -> httpx.Response:
        """POST with retries on connection failure; maps transport and daemon errors to StorageError."""

        def once() -> httpx.Response:
            if stream is None:
                response = self._http.post(path, params=params, files=files)
                _raise_for_daemon_error(response, path)
                return response
            with self._http.stream("POST", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_daemon_error(response, path)
                stream(response)
                return response

        try:
            # A reset mid-request (the service restarted under a supervisor) is sent again: every Kubo call used
            # here is idempotent (content-addressed adds, reads, pins), and a streaming callback starts over on
            # each response (see `cat`).
            return retry_call(once, retries=_CONNECT_RETRIES, backoff=_BACKOFF, retry_on=_RETRIED_ERRORS)
        except _RETRIED_ERRORS as exc:
            raise IpfsUnavailable(
                f"cannot reach the IPFS RPC API at {self.api_url} after {_CONNECT_RETRIES + 1} attempts: {exc}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise StorageError(f"IPFS RPC {path} at {self.api_url} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise IpfsUnavailable(f"IPFS RPC {path} at {self.api_url} failed: {exc}") from exc


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _raise_for_daemon_error(response: httpx.Response, path: str) -> None:
    """Kubo answers errors as {"Message", "Code", "Type": "error"}; surface its message."""
    if response.status_code < 400:
        return
    message = response.text.strip()
    try:
        body = json.loads(message)
        if isinstance(body, dict) and "Message" in body:
            message = str(body["Message"])
    except json.JSONDecodeError:
        pass
    raise StorageError(f"IPFS daemon error on {path} (HTTP {response.status_code}): {message[:500]}")


def _json(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"expected JSON from {path}, got {response.text[:200]!r}") from exc
    if not isinstance(body, dict):
        raise StorageError(f"expected a JSON object from {path}, got {response.text[:200]!r}")
    return body


def _last_json_line(text: str, key: str, path: str) -> str:
    """Kubo streams add results as JSON lines (progress first); the last one carrying `key` is the answer."""
    value: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StorageError(f"expected JSON lines from {path}, got {line[:200]!r}") from exc
        if isinstance(obj, dict) and isinstance(obj.get(key), str):
            value = obj[key]
    if value is None:
        raise StorageError(f"expected a {key!r} field from {path}, got {text[:200]!r}")
    return value
