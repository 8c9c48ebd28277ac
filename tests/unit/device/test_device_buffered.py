"""A buffered-task device's decisions: what it does after each refusal, and how long a slow device takes."""

from __future__ import annotations

import pytest

from fedchain.device.buffered import Next, after_refusal, simulated_seconds


@pytest.mark.parametrize(
    ("error", "step"),
    [
        ("TooStale", Next.RETRAIN),
        ("UnknownVersion", Next.RETRAIN),
        ("BuffersFull", Next.WAIT_AND_RESUBMIT),
        ("AlreadyBuffered", Next.WAIT_AND_RESUBMIT),
        ("TaskNotRunning", Next.STOP),
        ("NotApprovedDevice", Next.STOP),
    ],
)
def test_documented_refusals(error: str, step: Next) -> None:
    assert after_refusal(error) is step


@pytest.mark.parametrize("error", ["EmptyDigest", "ZeroSamples", "TooManySamples", ""])
def test_a_broken_submission_is_not_retried(error: str) -> None:
    with pytest.raises(ValueError, match="not a buffered-task outcome"):
        after_refusal(error)


def test_slow_device_timing() -> None:
    assert simulated_seconds(0.2, 1.0, 0.0) == 0.0
    assert simulated_seconds(0.2, 5.0, 0.0) == pytest.approx(0.8)
    assert simulated_seconds(0.2, 5.0, 1.0) == pytest.approx(4.8)  # at least 1 s, five times slower
    assert simulated_seconds(2.0, 1.0, 1.0) == 0.0
    with pytest.raises(ValueError):
        simulated_seconds(0.2, 0.5, 0.0)
