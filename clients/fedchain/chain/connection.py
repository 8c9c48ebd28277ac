"""Connecting to an Ethereum JSON-RPC endpoint."""

from __future__ import annotations

import time

from web3 import HTTPProvider, Web3

from fedchain.chain.errors import ChainUnavailable


def connect(rpc_url: str, timeout: float = 30.0, wait: float = 0.0) -> Web3:
    """A Web3 over HTTP; waits up to `wait` seconds for the node to answer (it may be starting)."""
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    deadline = time.monotonic() + wait
    while True:
        try:
            w3.eth.chain_id  # noqa: B018 - the cheapest round trip that proves the node answers
            return w3
        except Exception as exc:  # requests/aiohttp raise many kinds; any failure means "not reachable yet"
            if time.monotonic() >= deadline:
                raise ChainUnavailable(f"cannot reach the Ethereum node at {rpc_url}: {exc}") from exc
            time.sleep(0.2)
