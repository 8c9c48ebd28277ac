"""Following a contract's events from a block, resumably, by polling eth_getLogs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eth_utils import event_abi_to_log_topic
from web3 import Web3
from web3._utils.events import get_event_data


@dataclass(frozen=True)
class ChainEvent:
    """One decoded log."""

    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int


class EventDecoder:
    """Decodes the logs of one ABI; logs it does not know are skipped."""

    def __init__(self, w3: Web3, abi: list[dict[str, Any]]) -> None:
        self.w3 = w3
        self._by_topic = {
            event_abi_to_log_topic(e): e
            for e in abi
            if e.get("type") == "event"  # type: ignore[arg-type]
        }

    def topic(self, name: str) -> bytes:
        for topic, entry in self._by_topic.items():
            if entry["name"] == name:
                return topic
        raise KeyError(f"event {name} not in ABI")

    def decode(self, log: Any) -> ChainEvent | None:
        topics = log["topics"]
        if not topics:
            return None
        entry = self._by_topic.get(bytes(topics[0]))
        if entry is None:
            return None
        data = get_event_data(self.w3.codec, entry, log)
        return ChainEvent(
            name=data["event"],
            args=dict(data["args"]),
            block_number=data["blockNumber"],
            tx_hash="0x" + bytes(data["transactionHash"]).hex(),
            log_index=data["logIndex"],
        )


class EventFollower:
    """Yields a contract's events in chain order from `from_block` on; `next_block` is the resume cursor.

    `confirmations` holds back the newest blocks on chains that may reorganise (0 on a devnet).
    """

    def __init__(
        self,
        w3: Web3,
        address: str,
        abi: list[dict[str, Any]],
        from_block: int = 0,
        confirmations: int = 0,
        max_range: int = 2000,
    ) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.decoder = EventDecoder(w3, abi)
        self.next_block = from_block
        self.confirmations = confirmations
        self.max_range = max_range

    def poll(self) -> list[ChainEvent]:
        """Every new event since the last poll (possibly none)."""
        head = self.w3.eth.block_number - self.confirmations
        events: list[ChainEvent] = []
        while self.next_block <= head:
            to_block = min(head, self.next_block + self.max_range - 1)
            logs = self.w3.eth.get_logs({"address": self.address, "fromBlock": self.next_block, "toBlock": to_block})
            events.extend(e for e in map(self.decoder.decode, logs) if e is not None)
            self.next_block = to_block + 1
        return events

    def history(
        self, name: str, from_block: int = 0, to_block: int | None = None, **indexed: Any
    ) -> Iterator[ChainEvent]:
        """Past events of one kind up to `to_block` (default: the head), optionally filtered by indexed arguments
        (e.g. round=3), in chain order."""
        entry = next(e for e in self.decoder._by_topic.values() if e["name"] == name)
        topics: list[Any] = [self.decoder.topic(name)]
        for param in (p for p in entry["inputs"] if p.get("indexed")):
            value = indexed.get(param["name"])
            if value is None:
                topics.append(None)
            else:
                topics.append(self.w3.codec.encode([param["type"]], [value]))
        while topics and topics[-1] is None:
            topics.pop()
        head = self.w3.eth.block_number if to_block is None else to_block
        start = from_block
        while start <= head:
            to_block = min(head, start + self.max_range - 1)
            logs = self.w3.eth.get_logs(
                {"address": self.address, "fromBlock": start, "toBlock": to_block, "topics": topics}
            )
            for log in logs:
                event = self.decoder.decode(log)
                if event is not None:
                    yield event
            start = to_block + 1
