"""What every page and API route shows, read from the index (never by scanning the chain).

Each method returns plain JSON-ready dicts: the JSON API serves them as they are and the pages render the same
dicts. Lookups of a transaction or block that the index does not hold (outside the indexed range, or not yet
indexed) ask the node once; IPFS content is fetched on demand, verified against its CID, and cached in memory.

`Explorer` is the facade over one module per page family: overview, tasks, rounds (with the agreement verdicts of
agreement.py), addresses, transactions (and blocks), content (IPFS) and resolve (search).
"""

from __future__ import annotations

from typing import Any

from fedchain.explorer.index import SyncStatus
from fedchain.explorer.queries.addresses import AddressPages
from fedchain.explorer.queries.base import BadInput, NotFound, Reader, Settings
from fedchain.explorer.queries.content import ContentPages
from fedchain.explorer.queries.overview import OverviewPages
from fedchain.explorer.queries.resolve import SearchPages
from fedchain.explorer.queries.rounds import RoundPages
from fedchain.explorer.queries.tasks import TaskPages
from fedchain.explorer.queries.transactions import TransactionPages
from fedchain.explorer.rpc import JsonRpc
from fedchain.explorer.search import SearchError
from fedchain.storage import IpfsClient


class Explorer(Reader):
    """Read side of the explorer: one per process, connections per thread."""

    def __init__(
        self,
        settings: Settings,
        status: SyncStatus | None = None,
        rpc: JsonRpc | None = None,
        ipfs: IpfsClient | None = None,
    ) -> None:
        super().__init__(settings, status, rpc, ipfs)
        self._overview = OverviewPages(self)
        self._tasks = TaskPages(self)
        self._transactions = TransactionPages(self)
        self._rounds = RoundPages(self, self._transactions)
        self._addresses = AddressPages(self)
        self._content = ContentPages(self)
        self._search = SearchPages(self, self._rounds, self._transactions, self._content)

    def overview(self) -> dict[str, Any]:
        return self._overview.overview()

    def tasks(self) -> list[dict[str, Any]]:
        return self._overview.tasks()

    def task(self, address: str) -> dict[str, Any]:
        return self._tasks.task(address)

    def rounds(self, address: str, task: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._tasks.rounds(address, task)

    def round(self, address: str, number: int) -> dict[str, Any]:
        return self._rounds.round(address, number)

    def update(self, address: str, number: int, device: str) -> dict[str, Any]:
        return self._rounds.update(address, number, device)

    def address(self, value: str) -> dict[str, Any]:
        return self._addresses.address(value)

    def tx(self, value: str) -> dict[str, Any]:
        return self._transactions.tx(value)

    def block(self, value: str | int) -> dict[str, Any]:
        return self._transactions.block(value)

    def cid_references(self, cid: str) -> list[dict[str, Any]]:
        return self._content.cid_references(cid)

    def content(self, cid: str) -> dict[str, Any]:
        return self._content.content(cid)

    def raw_content(self, cid: str) -> bytes:
        return self._content.raw_content(cid)

    def resolve(self, raw: str) -> dict[str, Any]:
        return self._search.resolve(raw)


__all__ = ["BadInput", "Explorer", "NotFound", "SearchError", "Settings"]
