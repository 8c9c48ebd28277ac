"""Search: where what a user typed leads (a task, round, address, block, transaction or CID), or why nowhere."""

from __future__ import annotations

from typing import Any

from fedchain.explorer.queries.base import NotFound, Reader
from fedchain.explorer.queries.content import ContentPages
from fedchain.explorer.queries.rounds import RoundPages
from fedchain.explorer.queries.transactions import TransactionPages
from fedchain.explorer.rpc import NodeUnavailable, RpcError
from fedchain.explorer.search import Query, parse_query
from fedchain.storage import digest_to_cid


class SearchPages:
    def __init__(
        self, reader: Reader, rounds: RoundPages, transactions: TransactionPages, content: ContentPages
    ) -> None:
        self.r = reader
        self.rounds = rounds
        self.transactions = transactions
        self.content = content

    def resolve(self, raw: str) -> dict[str, Any]:
        """Where a search leads: {kind, url, api}; SearchError or NotFound with a clear message otherwise."""
        q: Query = parse_query(raw)
        if q.kind == "round":
            self.rounds.round(q.value, q.round or 0)
            path = f"/task/{q.value}/round/{q.round}"
            return {"query": raw, "kind": "round", "url": path, "api": "/api" + path}
        if q.kind == "address":
            if self.r.row("SELECT 1 FROM tasks WHERE address = ?", q.value):
                return {"query": raw, "kind": "task", "url": f"/task/{q.value}", "api": f"/api/task/{q.value}"}
            known = self.r.row(
                "SELECT 1 FROM txs WHERE from_addr = ? OR to_addr = ? UNION SELECT 1 FROM participants "
                "WHERE address = ? LIMIT 1",
                q.value,
                q.value,
                q.value,
            )
            kind = "address" if known else "address (no indexed activity)"
            return {"query": raw, "kind": kind, "url": f"/address/{q.value}", "api": f"/api/address/{q.value}"}
        if q.kind == "block":
            number = int(q.value)
            self.transactions.block(number)
            return {"query": raw, "kind": "block", "url": f"/block/{number}", "api": f"/api/block/{number}"}
        if q.kind == "cid":
            self.content.content(q.value)
            return {"query": raw, "kind": "cid", "url": f"/ipfs/{q.value}", "api": f"/api/ipfs/{q.value}"}
        # A 32-byte hash: a transaction, a block, or the digest of a CID the index knows.
        if self.r.row("SELECT 1 FROM txs WHERE hash = ?", q.value):
            return {"query": raw, "kind": "tx", "url": f"/tx/{q.value}", "api": f"/api/tx/{q.value}"}
        block = self.r.row("SELECT number FROM blocks WHERE hash = ?", q.value)
        if block:
            n = block["number"]
            return {"query": raw, "kind": "block", "url": f"/block/{n}", "api": f"/api/block/{n}"}
        cid = digest_to_cid(q.value)
        if self.content.cid_references(cid):
            return {"query": raw, "kind": "cid", "url": f"/ipfs/{cid}", "api": f"/api/ipfs/{cid}"}
        if self.r.rpc is not None:
            try:
                if self.r.rpc.call("eth_getTransactionByHash", q.value):
                    return {"query": raw, "kind": "tx", "url": f"/tx/{q.value}", "api": f"/api/tx/{q.value}"}
                found = self.r.rpc.call("eth_getBlockByHash", q.value, False)
                if found:
                    n = int(found["number"], 16)
                    return {"query": raw, "kind": "block", "url": f"/block/{n}", "api": f"/api/block/{n}"}
            except (RpcError, NodeUnavailable):
                pass
        raise NotFound(
            f"No transaction, block or known CID digest has the hash {q.value} on this chain "
            f"(chain id {self.r.settings.chain_id})."
        )
