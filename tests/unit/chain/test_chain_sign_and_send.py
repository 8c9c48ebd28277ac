"""sign_and_send: signing in the caller's thread while one sender thread sends what is signed so far.

The node is a stand-in that records the JSON-RPC batches it is sent (this is the pure ordering logic; the pools'
end-to-end tests send through it to a real Anvil)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fedchain.chain.errors import ChainError
from fedchain.chain.tx import sign_and_send


class RecordingProvider:
    def __init__(self, delay: float = 0.0, refuse: set[bytes] | None = None, fail_on_batch: int | None = None):
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.refuse = refuse or set()
        self.fail_on_batch = fail_on_batch

    def make_batch_request(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        self.threads.add(threading.current_thread().name)
        if self.fail_on_batch is not None and len(self.batches) == self.fail_on_batch:
            raise ConnectionError("node went away")
        self.batches.append([params[0] for method, params in calls])
        time.sleep(self.delay)
        answers: list[dict[str, Any]] = []
        for method, (raw,) in calls:
            assert method == "eth_sendRawTransaction"
            if bytes.fromhex(raw[2:]) in self.refuse:
                answers.append({"error": {"code": -32000, "message": "nonce too low"}})
            else:
                answers.append({"result": "0x" + bytes.fromhex(raw[2:]).rjust(32, b"\0").hex()})
        return answers


class FakeWeb3:
    def __init__(self, provider: RecordingProvider) -> None:
        self.provider = provider


def _sign(i: int) -> tuple[dict[str, Any], bytes]:
    return {"nonce": i}, i.to_bytes(4, "big")


def test_every_transaction_is_sent_once_in_order_and_answers_line_up() -> None:
    provider = RecordingProvider(delay=0.002)

    def slow_sign(i: int) -> tuple[dict[str, Any], bytes]:
        time.sleep(0.0005)  # signing that takes time, as the real one does (~85 µs), lets the sender run meanwhile
        return _sign(i)

    txs, answers = sign_and_send(FakeWeb3(provider), 1000, slow_sign, first=128, step=64)  # type: ignore[arg-type]
    sent = [bytes.fromhex(raw[2:]) for batch in provider.batches for raw in batch]
    assert sent == [i.to_bytes(4, "big") for i in range(1000)]
    assert [tx["nonce"] for tx in txs] == list(range(1000))
    assert answers == [i.to_bytes(4, "big").rjust(32, b"\0") for i in range(1000)]
    # Sent while signing: the first batch goes once `first` are signed, later ones take what was signed meanwhile.
    assert 128 <= len(provider.batches[0]) < 1000 and len(provider.batches) > 2
    assert provider.threads == {"fedchain-send"}


def test_a_refused_transaction_is_reported_in_its_place() -> None:
    provider = RecordingProvider(refuse={(5).to_bytes(4, "big")})
    _, answers = sign_and_send(FakeWeb3(provider), 10, _sign, first=4, step=2)  # type: ignore[arg-type]
    assert isinstance(answers[5], ChainError) and "nonce too low" in str(answers[5])
    assert all(isinstance(a, bytes) for i, a in enumerate(answers) if i != 5)


def test_fewer_transactions_than_the_first_batch_and_none() -> None:
    provider = RecordingProvider()
    txs, answers = sign_and_send(FakeWeb3(provider), 3, _sign)  # type: ignore[arg-type]
    assert len(txs) == len(answers) == 3 and len(provider.batches) == 1
    assert sign_and_send(FakeWeb3(RecordingProvider()), 0, _sign) == ([], [])  # type: ignore[arg-type]


def test_a_send_failure_stops_signing_and_is_raised_in_the_callers_thread() -> None:
    provider = RecordingProvider(fail_on_batch=0)
    signed: list[int] = []

    def slow_sign(i: int) -> tuple[dict[str, Any], bytes]:
        signed.append(i)
        time.sleep(0.001)
        return _sign(i)

    with pytest.raises(ConnectionError, match="node went away"):
        sign_and_send(FakeWeb3(provider), 2000, slow_sign, first=8, step=8)  # type: ignore[arg-type]
    assert len(signed) < 2000  # stopped early rather than signing every transaction for nothing
    assert not [t for t in threading.enumerate() if t.name == "fedchain-send"]


def test_a_signing_failure_is_raised_after_the_sender_is_done() -> None:
    provider = RecordingProvider()

    def failing_sign(i: int) -> tuple[dict[str, Any], bytes]:
        if i == 200:
            raise ValueError("bad key")
        return _sign(i)

    with pytest.raises(ValueError, match="bad key"):
        sign_and_send(FakeWeb3(provider), 500, failing_sign, first=128, step=64)  # type: ignore[arg-type]
    # What was signed before the failure was sent (its nonces are used), nothing after it.
    assert sum(len(b) for b in provider.batches) == 192
    assert not [t for t in threading.enumerate() if t.name == "fedchain-send"]
