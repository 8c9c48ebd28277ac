"""The overview page: the chain and IPFS node, the latest blocks and transactions, every indexed task."""

from __future__ import annotations

from typing import Any

from fedchain.explorer.queries.base import Reader, fmt_time

LATEST = 10


class OverviewPages:
    def __init__(self, reader: Reader) -> None:
        self.r = reader

    def overview(self) -> dict[str, Any]:
        blocks = self.r.rows("SELECT * FROM blocks ORDER BY number DESC LIMIT ?", LATEST)
        for b in blocks:
            b["time"] = fmt_time(b["timestamp"])
        txs = self.r.rows(
            "SELECT hash, block_number, from_addr, to_addr, created, fn_name, task, gas_used, status FROM txs "
            "ORDER BY block_number DESC, tx_index DESC LIMIT ?",
            LATEST,
        )
        latest = blocks[0] if blocks else None
        return {
            "chain": {
                "chain_id": self.r.settings.chain_id,
                "name": self.r.chain.name,
                "client_version": self.r.client_version(),
                "rpc_url": self.r.settings.rpc_url,
                "head": self.r.status.head,
                "indexed_block": self.r.status.next_block - 1,
                "latest_block": latest["number"] if latest else None,
                "base_fee": latest["base_fee"] if latest else None,
                "public_explorer": self.r.chain.explorer,
            },
            "latest_blocks": blocks,
            "latest_transactions": txs,
            "ipfs": self.r.ipfs_info(),
            "tasks": self.tasks(),
            "index": self.r.status.as_dict(),
        }

    def tasks(self) -> list[dict[str, Any]]:
        rows = self.r.rows(
            "SELECT t.address, t.phase, t.current_round, t.num_rounds, t.created_block, t.admin, t.final_model_cid, "
            "(SELECT COUNT(*) FROM participants p WHERE p.task = t.address AND p.role = 'device' "
            " AND p.status = 'approved') AS devices, "
            "(SELECT COUNT(*) FROM rounds r WHERE r.task = t.address AND r.state = 'committed') AS rounds_committed, "
            "t.failed_rounds, t.aggregator_threshold, "
            "(SELECT COUNT(*) FROM participants p WHERE p.task = t.address AND p.role = 'aggregator' "
            " AND p.status = 'active') AS aggregators, "
            "(SELECT accuracy FROM rounds r WHERE r.task = t.address AND r.accuracy IS NOT NULL "
            " ORDER BY r.round DESC LIMIT 1) AS latest_accuracy "
            "FROM tasks t ORDER BY t.created_block DESC"
        )
        return rows
