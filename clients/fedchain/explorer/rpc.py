"""The indexer's JSON-RPC client on web3.py's HTTP provider: raw results (hex strings), batches, retries on lost
requests.

web3's provider does the transport and the JSON-RPC framing; no middleware or result formatters run, so results
stay the node's own hex strings. Every method the explorer calls is a read, so a request lost on the way (Ganache 7
drops one now and then) is simply sent again, on our schedule rather than web3's (which retries only an allowlist of
methods and never on a 5xx). Batches fall back to one request per call on nodes that refuse JSON-RPC batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import requests
from web3 import HTTPProvider

from fedchain.protocol.loopback import is_loopback_url
from fedchain.protocol.retry import Backoff, retry_call

log = logging.getLogger("fedchain.explorer.rpc")

_RETRIES = 5
_BACKOFF = Backoff((0.1, 0.2, 0.5, 1.0, 2.0))


class RpcError(Exception):
    """The node answered with a JSON-RPC error, or could not be reached."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class NodeUnavailable(RpcError):
    """The node cannot be reached."""


class _Retry(Exception):
    """A lost or garbled answer: send the request again."""


# A lost connection, a garbled answer: sent again.
_RETRIED = (_Retry, requests.RequestException, ValueError)


class JsonRpc:
    """JSON-RPC over HTTP returning raw `result` values."""

    def __init__(self, url: str, timeout: float | None = None, batch_size: int = 100) -> None:
        self.url = url
        if timeout is None:
            timeout = 10.0 if is_loopback_url(url) else 30.0
        self._session = requests.Session()
        self._provider = HTTPProvider(
            url,
            request_kwargs={"timeout": timeout, "headers": {"Content-Type": "application/json"}},
            session=self._session,
            exception_retry_configuration=None,  # retried below, every method alike
        )
        self.batch_size = batch_size
        self._batch_ok: bool | None = None

    def close(self) -> None:
        self._session.close()

    def _send(self, request: Callable[[], Any]) -> Any:
        """The decoded JSON answer of `request`, retried while the node is unreachable or answers garbage."""
        try:
            return retry_call(lambda: _answer(request), retries=_RETRIES, backoff=_BACKOFF, retry_on=_RETRIED)
        except _RETRIED as exc:
            raise NodeUnavailable(f"cannot reach the Ethereum node at {self.url}: {exc}") from exc

    def call(self, method: str, *params: Any) -> Any:
        body = self._send(lambda: self._provider.make_request(method, list(params)))  # type: ignore[arg-type]
        if not isinstance(body, dict):
            raise RpcError(f"unexpected answer to {method}: {str(body)[:200]}")
        if body.get("error"):
            err = body["error"]
            raise RpcError(f"{method}: {_message(err)}", _code(err), _error_data(err))
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
            requests_ = [(m, list(p)) for m, p in calls]
            # web3 numbers the requests in order and sorts the answers by id: answer i belongs to call i.
            body = self._send(lambda: self._provider.make_batch_request(requests_))  # type: ignore[arg-type]
            if isinstance(body, list) and len(body) == len(calls):
                self._batch_ok = True
                out = []
                for (method, _), item in zip(calls, body, strict=True):
                    if not isinstance(item, dict) or item.get("id") is None:
                        raise RpcError(f"batch answer lacks the result of {method}")
                    if item.get("error"):
                        err = item["error"]
                        raise RpcError(f"{method}: {_message(err)}", _code(err), _error_data(err))
                    out.append(item.get("result"))
                return out
            log.info("the node at %s does not answer JSON-RPC batches; sending calls one by one", self.url)
            self._batch_ok = False
        return [self.call(m, *p) for m, p in calls]


def _answer(request: Callable[[], Any]) -> Any:
    """Run one provider request. A 5xx or 429 is lost (retried); another HTTP error status still carries a
    JSON-RPC answer on most nodes, which is returned as it is (and retried when it is not JSON)."""
    try:
        return request()
    except requests.HTTPError as exc:
        response = exc.response
        if response is None or response.status_code >= 500 or response.status_code == 429:
            raise _Retry(f"HTTP {response.status_code if response is not None else '?'}") from exc
        return response.json()


def _message(err: Any) -> Any:
    return err.get("message", err) if isinstance(err, dict) else err


def _code(err: Any) -> int | None:
    return err.get("code") if isinstance(err, dict) else None


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
