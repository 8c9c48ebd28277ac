"""The supervisor → process hand-over file (`--launch-file`): atomic, validated, waited for with a timeout."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fedchain.app.launch import LaunchTarget, read_launch, wait_for_launch, write_launch


def test_round_trip_and_no_temporary_left(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "launch.json"
    target = LaunchTarget(
        "0x5FbDB2315678afecb367f032d93F642f64180aa3", "http://127.0.0.1:8545", "http://127.0.0.1:5001"
    )
    write_launch(path, target)
    assert read_launch(path) == target
    assert [p.name for p in path.parent.iterdir()] == ["launch.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "no task address"),
        ('{"task": ""}', "no task address"),
        ('{"task": "0x1", "x": 1}', "unknown field"),
    ],
)
def test_malformed_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "launch.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_launch(path)


def test_wait_returns_once_written(tmp_path: Path) -> None:
    path = tmp_path / "launch.json"
    writer = threading.Timer(0.2, write_launch, args=(path, LaunchTarget("0xabc")))
    writer.start()
    started = time.monotonic()
    assert wait_for_launch(path, timeout=10).task == "0xabc"
    assert time.monotonic() - started >= 0.15
    writer.join()


def test_wait_times_out(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="no launch file"):
        wait_for_launch(tmp_path / "never.json", timeout=0.1)
