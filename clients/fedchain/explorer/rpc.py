"""A small JSON-RPC client for the indexer: raw results (hex strings), batches, retries on lost requests.

Every method the explorer calls is a read, so a request lost on the way (Ganache 7 drops one now and then) is simply
sent again. Batches fall back to one request per call on nodes that refuse JSON-RPC batches.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import httpx

log = logging.getLogger("fedchain.explorer.rpc")

_RETRIES = 5
_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)


class RpcError(Exception):
    """The node answered with a JSON-RPC error, or could not be reached."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class NodeUnavailable(RpcError):
    """The node cannot be reached."""


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


class JsonRpc:
    """JSON-RPC over HTTP returning raw `result` values."""

    def __init__(self, url: str, timeout: float | None = None, batch_size: int = 100) -> None:
        self.url = url
        if timeout is None:
            timeout = 10.0 if is_loopback_url(url) else 30.0
        self._http = httpx.Client(timeout=timeout, headers={"Content-Type": "application/json"})
        self._ids = itertools.count(1)
        self.batch_size = batch_size
        self._batch_ok: bool | None = None

    def close(self) -> None:
        self._http.close()

    def _post(self, payload: Any) -> Any:
        for attempt in range(_RETRIES + 1):
            try:
                response = self._http.post(self.url, json=payload)
                if response.status_code >= 500 or response.status_code == 429:
                    raise httpx.TransportError(f"HTTP {response.status_code}")
                return response.json()
            except (httpx.TransportError, ValueError) as exc:
                if attempt == _RETRIES:
                    raise NodeUnavailable(f"cannot reach the Ethereum node at {self.url}: {exc}") from exc
                time.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
        raise AssertionError("unreachable")

    def call(self, method: str, *params: Any) -> Any:
        body = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)})
        if not isinstance(body, dict):
            raise RpcError(f"unexpected answer to {method}: {str(body)[:200]}")
        if body.get("error"):
            err = body["error"]
            raise RpcError(f"{method}: {err.get('message', err)}", err.get("code"), _error_data(err))
        return body.get("result")

    def try_call(self, method: str, *params: Any) -> Any:
        """Like call, but None when the node answers with an error (an unsupported method, say)."""
        try:
            return self.call(method, *params)
        except NodeUnavailable:
            raise
        except RpcError:
            return None

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Results of many calls, in order; an individual error raises RpcError."""
        results: list[Any] = []
        for start in range(0, len(calls), self.batch_size):
            results.extend(self._batch_chunk(calls[start : start + self.batch_size]))
        return results

    def _batch_chunk(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        if not calls:
            return []
        if self._batch_ok is not False and len(calls) > 1:
            first = next(self._ids)
            payload = [
                {"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p)} for i, (m, p) in enumerate(calls)
            ]
            for _ in range(len(calls) - 1):
                next(self._ids)
            body = self._post(payload)
            if isinstance(body, list) and len(body) == len(calls):
                self._batch_ok = True
                by_id = {item.get("id"): item for item in body if isinstance(item, dict)}
                out = []
                for i, (method, _) in enumerate(calls):
                    item = by_id.get(first + i)
                    if item is None:
                        raise RpcError(f"batch answer lacks the result of {method}")
                    if item.get("error"):
                        err = item["error"]
                        raise RpcError(f"{method}: {err.get('message', err)}", err.get("code"), _error_data(err))
                    out.append(item.get("result"))
                return out
            log.info("the node at %s does not answer JSON-RPC batches; sending calls one by one", self.url)
            self._batch_ok = False
        return [self.call(m, *p) for m, p in calls]


def _error_data(err: Any) -> Any:
    """Revert data of an eth_call error: `data` is a hex string (Anvil) or nested in an object (Ganache)."""
    if not isinstance(err, dict):
        return None
    data = err.get("data")
    if isinstance(data, dict):
        inner = data.get("data") or data.get("result")
        if isinstance(inner, str):
            return inner
        for value in data.values():  # Ganache 7: {"<tx hash>": {"return": "0x..."}} or {"result": "0x..."}
            if isinstance(value, dict) and isinstance(value.get("return"), str):
                return value["return"]
    return data
