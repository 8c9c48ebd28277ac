"""The transaction and block pages, from the index or, outside the indexed range, from the node (asked once)."""

from __future__ import annotations

import json
from typing import Any

from eth_utils import to_checksum_address

from fedchain.explorer.index import AGGREGATOR_ROLE, DEFAULT_ADMIN_ROLE, TASK_CONTRACT
from fedchain.explorer.queries.base import NotFound, Reader, checked_hash, fmt_time
from fedchain.explorer.rpc import NodeUnavailable, RpcError
from fedchain.storage import digest_to_cid

ROLE_NAMES = {AGGREGATOR_ROLE: "AGGREGATOR_ROLE", DEFAULT_ADMIN_ROLE: "DEFAULT_ADMIN_ROLE"}


class TransactionPages:
    def __init__(self, reader: Reader) -> None:
        self.r = reader

    def tx(self, value: str) -> dict[str, Any]:
        tx_hash = checked_hash(value)
        row = self.r.row("SELECT * FROM txs WHERE hash = ?", tx_hash)
        if row is not None:
            logs = self.r.rows("SELECT * FROM logs WHERE tx_hash = ? ORDER BY log_index", tx_hash)
            block = self.r.row("SELECT timestamp FROM blocks WHERE number = ?", row["block_number"])
            return self._tx_view(row, logs, block["timestamp"] if block else None, "index")
        return self._tx_from_node(tx_hash)

    def _tx_from_node(self, tx_hash: str) -> dict[str, Any]:
        if self.r.rpc is None:
            raise NotFound(f"transaction {tx_hash} is not in the index")
        try:
            tx = self.r.rpc.call("eth_getTransactionByHash", tx_hash)
            receipt = self.r.rpc.call("eth_getTransactionReceipt", tx_hash) if tx else None
        except (RpcError, NodeUnavailable) as exc:
            raise NotFound(
                f"transaction {tx_hash} is not in the index, and the node could not be asked: {exc}"
            ) from exc
        if tx is None:
            raise NotFound(f"no transaction {tx_hash} on this chain (chain id {self.r.settings.chain_id})")
        known = {r["address"] for r in self.r.rows("SELECT address FROM tasks")}
        to = to_checksum_address(tx["to"]) if tx.get("to") else None
        created = (
            to_checksum_address(receipt["contractAddress"]) if receipt and receipt.get("contractAddress") else None
        )
        row = {
            "hash": tx_hash,
            "block_number": int(tx["blockNumber"], 16) if tx.get("blockNumber") else None,
            "tx_index": int(tx["transactionIndex"], 16) if tx.get("transactionIndex") else None,
            "from_addr": to_checksum_address(tx["from"]),
            "to_addr": to,
            "created": created,
            "value": str(int(tx.get("value") or "0x0", 16)),
            "nonce": int(tx["nonce"], 16),
            "gas_limit": int(tx["gas"], 16),
            "gas_used": int(receipt["gasUsed"], 16) if receipt else None,
            "gas_price": int(receipt.get("effectiveGasPrice") or tx.get("gasPrice") or "0x0", 16) if receipt else None,
            "status": int(receipt["status"], 16) if receipt and receipt.get("status") else None,
            "input": tx["input"],
            "task": to if to in known else None,
            "fn_name": None,
            "revert": None,
        }
        logs = []
        for lg in (receipt or {}).get("logs", []):
            address = to_checksum_address(lg["address"])
            decoded = self.r.codec.decode_log(lg["topics"], lg["data"]) if address in known else None
            logs.append(
                {
                    "log_index": int(lg["logIndex"], 16),
                    "address": address,
                    "topics": json.dumps(lg["topics"]),
                    "data": lg["data"],
                    "name": decoded.name if decoded else None,
                    "args": json.dumps(decoded.args) if decoded else None,
                }
            )
        return self._tx_view(row, logs, None, "node" if receipt else "node (pending)")

    def _tx_view(self, row: dict[str, Any], logs: list[dict[str, Any]], ts: int | None, source: str) -> dict[str, Any]:
        call = None
        if row["task"] is not None and row["to_addr"] is not None:
            decoded = self.r.codec.decode_call(row["input"])
            if decoded is not None:
                call = {
                    "contract": TASK_CONTRACT,
                    "function": decoded.name,
                    "args": decoded.args,
                    "types": decoded.types,
                    "labels": _labels(decoded.args),
                }
        elif row["task"] is not None and row["created"] is not None:
            decoded = self.r.codec.decode_constructor(row["input"], self.r.bytecode)
            if decoded is not None:
                call = {
                    "contract": TASK_CONTRACT,
                    "function": "constructor",
                    "args": decoded.args,
                    "types": decoded.types,
                    "labels": {},
                }
        events = []
        for lg in logs:
            args = json.loads(lg["args"]) if lg.get("args") else None
            events.append(
                {
                    "log_index": lg["log_index"],
                    "address": lg["address"],
                    "name": lg.get("name"),
                    "args": args,
                    "cids": _cids_in(args),
                    "types": self.r.codec.event_types(lg["name"]) if lg.get("name") else {},
                    "labels": _labels(args),
                    "topics": json.loads(lg["topics"]) if isinstance(lg["topics"], str) else lg["topics"],
                    "data": lg["data"],
                }
            )
        gas_price = row["gas_price"]
        fee = row["gas_used"] * gas_price if row["gas_used"] is not None and gas_price is not None else None
        related = self.r.rows(
            "SELECT task, round, device, NULL AS aggregator, 'update' AS kind FROM updates WHERE tx_hash = ? "
            "UNION ALL SELECT task, round, NULL, aggregator, 'commit' FROM round_aggregators WHERE commit_tx = ? "
            "UNION ALL SELECT task, round, NULL, aggregator, CASE WHEN late = 1 THEN 'late reveal' ELSE 'reveal' END "
            "FROM round_aggregators WHERE reveal_tx = ? "
            "UNION ALL SELECT task, round, NULL, aggregator, 'fault' FROM round_aggregators "
            "WHERE fault_tx = ? AND fault_tx IS NOT reveal_tx "
            "UNION ALL SELECT task, round, NULL, NULL, 'reveal window' FROM rounds WHERE reveal_tx = ? "
            "UNION ALL SELECT task, round, NULL, aggregator, 'aggregate' FROM rounds WHERE committed_tx = ? "
            "UNION ALL SELECT task, round, NULL, NULL, 'failure' FROM rounds WHERE failed_tx = ?",
            *([row["hash"]] * 7),
        )
        return {
            "hash": row["hash"],
            "block_number": row["block_number"],
            "tx_index": row["tx_index"],
            "time": fmt_time(ts),
            "from": row["from_addr"],
            "to": row["to_addr"],
            "created": row["created"],
            "value": row["value"],
            "nonce": row["nonce"],
            "gas_limit": row["gas_limit"],
            "gas_used": row["gas_used"],
            "gas_price": gas_price,
            "fee_wei": str(fee) if fee is not None else None,
            "status": row["status"],
            "revert": row["revert"],
            "task": row["task"],
            "call": call,
            "call_cids": _cids_in(call["args"]) if call else {},
            "input": row["input"],
            "events": events,
            "related": related,
            "source": source,
            "public_explorer_url": self.r.link("tx", row["hash"]),
        }

    def block(self, value: str | int) -> dict[str, Any]:
        number: int | None = None
        text = str(value).strip()
        if text.isdigit():
            number = int(text)
            row = self.r.row("SELECT * FROM blocks WHERE number = ?", number)
        else:
            row = self.r.row("SELECT * FROM blocks WHERE hash = ?", checked_hash(text))
        if row is None or not row["full"]:
            return self._block_from_node(number if number is not None else checked_hash(text), row)
        txs = self.r.rows(
            "SELECT hash, tx_index, from_addr, to_addr, created, fn_name, task, gas_used, status FROM txs "
            "WHERE block_number = ? ORDER BY tx_index",
            row["number"],
        )
        return self._block_view(row, txs, "index")

    def _block_from_node(self, ident: int | str, stored: dict[str, Any] | None) -> dict[str, Any]:
        shown = f"block {ident}"
        if self.r.rpc is None:
            raise NotFound(f"{shown} is not in the index")
        try:
            if isinstance(ident, int):
                block = self.r.rpc.call("eth_getBlockByNumber", hex(ident), True)
            else:
                block = self.r.rpc.call("eth_getBlockByHash", ident, True)
        except (RpcError, NodeUnavailable) as exc:
            raise NotFound(f"{shown} is not in the index, and the node could not be asked: {exc}") from exc
        if block is None:
            head = self.r.status.head
            raise NotFound(f"no {shown} on this chain" + (f" (the head is block {head})" if head is not None else ""))
        row = {
            "number": int(block["number"], 16),
            "hash": block["hash"],
            "parent_hash": block["parentHash"],
            "timestamp": int(block["timestamp"], 16),
            "tx_count": len(block["transactions"]),
            "gas_used": int(block["gasUsed"], 16),
            "gas_limit": int(block["gasLimit"], 16),
            "base_fee": int(block["baseFeePerGas"], 16) if block.get("baseFeePerGas") else None,
            "miner": block.get("miner"),
        }
        known = {r["address"] for r in self.r.rows("SELECT address FROM tasks")}
        txs = []
        for i, tx in enumerate(block["transactions"]):
            to = to_checksum_address(tx["to"]) if tx.get("to") else None
            decoded = self.r.codec.decode_call(tx["input"]) if to in known else None
            txs.append(
                {
                    "hash": tx["hash"],
                    "tx_index": i,
                    "from_addr": to_checksum_address(tx["from"]),
                    "to_addr": to,
                    "created": None,
                    "fn_name": decoded.name if decoded else None,
                    "task": to if to in known else None,
                    "gas_used": None,
                    "status": None,
                }
            )
        return self._block_view(row, txs, "node")

    def _block_view(self, row: dict[str, Any], txs: list[dict[str, Any]], source: str) -> dict[str, Any]:
        number = row["number"]
        head = self.r.status.head
        return {
            "number": number,
            "hash": row["hash"],
            "parent_hash": row["parent_hash"],
            "timestamp": row["timestamp"],
            "time": fmt_time(row["timestamp"]),
            "tx_count": row["tx_count"],
            "gas_used": row["gas_used"],
            "gas_limit": row["gas_limit"],
            "base_fee": row["base_fee"],
            "miner": row["miner"],
            "transactions": txs,
            "previous": number - 1 if number > 0 else None,
            "next": number + 1 if head is None or number < head else None,
            "source": source,
            "public_explorer_url": self.r.link("block", number),
        }


def _labels(args: dict[str, Any] | None) -> dict[str, str]:
    """Human names for well-known values (AccessControl roles)."""
    return {k: ROLE_NAMES[v] for k, v in (args or {}).items() if isinstance(v, str) and v in ROLE_NAMES}


def _cids_in(args: dict[str, Any] | None) -> dict[str, str]:
    """CIDs of the digest arguments (bytes32 named *Digest) of a call or event."""
    out: dict[str, str] = {}
    for key, value in (args or {}).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in _cids_in(value).items()})
        elif key.endswith("Digest") and isinstance(value, str) and len(value) == 66 and value != "0x" + "00" * 32:
            out[key] = digest_to_cid(value)
    return out
