"""Backoff schedules and retry_call: which errors are retried, how often, and with which waits."""

from __future__ import annotations

import pytest

from fedchain.protocol.retry import Backoff, retry_call


def test_schedule_repeats_its_last_delay() -> None:
    backoff = Backoff((0.2, 0.5, 1.0))
    assert [backoff.delay(n) for n in range(5)] == [0.2, 0.5, 1.0, 1.0, 1.0]


def test_exponential_doubles_up_to_the_cap() -> None:
    assert Backoff.exponential(0.2, cap=5.0).delays == (0.2, 0.4, 0.8, 1.6, 3.2, 5.0)
    with pytest.raises(ValueError):
        Backoff.exponential(0.0, cap=1.0)
    with pytest.raises(ValueError):
        Backoff(())


def test_retries_the_named_errors_then_succeeds() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "ok"

    result = retry_call(flaky, retries=4, backoff=Backoff((0.1, 0.3)), retry_on=(ConnectionError,), sleep=waits.append)
    assert result == "ok" and len(calls) == 3 and waits == [0.1, 0.3]


def test_gives_up_after_the_last_retry_with_the_last_error() -> None:
    waits: list[float] = []
    attempts = iter(range(10))

    def down() -> None:
        raise ConnectionError(f"attempt {next(attempts)}")

    with pytest.raises(ConnectionError, match="attempt 2"):
        retry_call(down, retries=2, backoff=Backoff((0.0,)), retry_on=(ConnectionError,), sleep=waits.append)
    assert waits == [0.0, 0.0]


def test_other_errors_are_not_retried() -> None:
    waits: list[float] = []

    def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        retry_call(broken, retries=5, backoff=Backoff((1.0,)), retry_on=(ConnectionError,), sleep=waits.append)
    assert waits == []
