"""A buffered pool reads the chain's record of an accepted update from the transaction's raw receipt."""

from __future__ import annotations

from eth_abi import encode

from fedchain.device.buffered import HeldUpdate
from fedchain.device.buffered_pool import UPDATE_BUFFERED_TOPIC, accepted_from_receipt, wake_count

HELD = HeldUpdate(base_version=4, cid="QmHeld", num_samples=12, loss=0.5)


def _receipt(logs: list[dict]) -> dict:
    return {"status": "0x1", "gasUsed": hex(50_859), "blockNumber": "0x10", "logs": logs}


def test_the_update_buffered_log_gives_buffer_and_staleness() -> None:
    data = encode(["bytes32", "uint32", "uint32", "uint32", "uint32"], [b"\x01" * 32, 12, 4, 3, 7])
    log = {
        "topics": [UPDATE_BUFFERED_TOPIC, "0x" + (9).to_bytes(32, "big").hex(), "0x" + "00" * 12 + "ab" * 20],
        "data": "0x" + data.hex(),
    }
    other = {"topics": ["0x" + "11" * 32], "data": "0x"}
    accepted = accepted_from_receipt(_receipt([other, log]), HELD)
    assert (accepted.buffer, accepted.staleness, accepted.base_version) == (9, 3, 4)
    assert (accepted.cid, accepted.gas_used) == ("QmHeld", 50_859)


def test_a_receipt_without_the_log_still_counts_the_gas() -> None:
    accepted = accepted_from_receipt(_receipt([]), HELD)
    assert (accepted.buffer, accepted.staleness, accepted.gas_used) == (0, -1, 50_859)


def test_waiting_devices_are_woken_only_into_free_places() -> None:
    assert wake_count(waiting=30, buffer_size=20, filled=0) == 20
    assert wake_count(waiting=30, buffer_size=20, filled=15) == 5
    assert wake_count(waiting=3, buffer_size=20, filled=5) == 3
    assert wake_count(waiting=30, buffer_size=20, filled=20) == 0  # full: waiting for the pending buffer
