"""Connecting to an Ethereum JSON-RPC endpoint."""

from __future__ import annotations

import logging
import time
from typing import Any

import requests
from web3 import HTTPProvider, Web3
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from fedchain.chain.errors import ChainUnavailable
from fedchain.protocol.loopback import is_loopback_url

# Ganache 7 (its last release) now and then drops a request: the client either waits for its timeout or sees
# "Remote end closed connection without response" (seen in about one round in ten with 5 device processes). Every
# call we make is safe to repeat (reads, gas estimates, and raw transactions, which are signed once and so
# idempotent), so all methods are retried, and on loopback a lost request is given up on quickly.
RETRY_ALL_METHODS = ExceptionRetryConfiguration(
    errors=(requests.ConnectionError, requests.Timeout),
    retries=6,
    backoff_factor=0.1,
    method_allowlist=["eth", "net", "web3", "evm", "anvil", "ots"],
)
LOOPBACK_TIMEOUT = 5.0
SLOW_CALL_SECONDS = 2.0

log = logging.getLogger("fedchain.chain")


class LoggingHTTPProvider(HTTPProvider):
    """HTTPProvider that reports calls slower than SLOW_CALL_SECONDS (usually a lost request and its retry)."""

    def make_request(self, method: Any, params: Any) -> Any:
        started = time.monotonic()
        try:
            return super().make_request(method, params)
        finally:
            elapsed = time.monotonic() - started
            if elapsed > SLOW_CALL_SECONDS:
                log.warning("slow RPC call %s: %.1fs (a lost request retried, or an overloaded node)", method, elapsed)


def connect(rpc_url: str, timeout: float = 30.0, wait: float = 0.0) -> Web3:
    """A Web3 over HTTP; waits up to `wait` seconds for the node to answer (it may be starting)."""
    if is_loopback_url(rpc_url):
        timeout = min(timeout, LOOPBACK_TIMEOUT)
    provider = LoggingHTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=RETRY_ALL_METHODS
    )
    w3 = Web3(provider)
    # web3's validation middleware asks the node for its chain id before every eth_call and eth_estimateGas, to check
    # a chainId field our calls never carry (transactions are signed locally with the chain id read once): without it
    # a device's or aggregator's view call is one round trip instead of two.
    w3.middleware_onion.remove("validation")
    deadline = time.monotonic() + wait
    while True:
        try:
            w3.eth.chain_id  # noqa: B018 - the cheapest round trip that proves the node answers
            return w3
        except Exception as exc:  # requests/aiohttp raise many kinds; any failure means "not reachable yet"
            if time.monotonic() >= deadline:
                raise ChainUnavailable(f"cannot reach the Ethereum node at {rpc_url}: {exc}") from exc
            time.sleep(0.2)
