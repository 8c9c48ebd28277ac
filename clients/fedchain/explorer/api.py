"""The JSON API: the same data as the pages, for scripts and notebooks. Documented in the README ("Explorer")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from fedchain.explorer.queries import Explorer


def router(explorer: Explorer) -> APIRouter:
    api = APIRouter(prefix="/api")

    @api.get("/health", summary="Index progress: indexed block, chain head, lag, last error")
    def health() -> dict[str, Any]:
        return {
            "ok": explorer.status.error is None,
            "chain_id": explorer.settings.chain_id,
            **explorer.status.as_dict(),
        }

    @api.get("/overview", summary="Chain, IPFS node, latest blocks and transactions, tasks")
    def overview() -> dict[str, Any]:
        return explorer.overview()

    @api.get("/tasks", summary="Every indexed FederatedTask")
    def tasks() -> list[dict[str, Any]]:
        return explorer.tasks()

    @api.get("/task/{address}", summary="A task: configuration, participants, rounds, totals")
    def task(address: str) -> dict[str, Any]:
        return explorer.task(address)

    @api.get("/task/{address}/rounds", summary="A task's rounds table")
    def rounds(address: str) -> list[dict[str, Any]]:
        return explorer.rounds(address)

    @api.get("/task/{address}/round/{number}", summary="One round: its updates and its aggregate")
    def round_(address: str, number: int) -> dict[str, Any]:
        return explorer.round(address, number)

    @api.get("/task/{address}/round/{number}/update/{device}", summary="One device's update in one round")
    def update(address: str, number: int, device: str) -> dict[str, Any]:
        return explorer.update(address, number, device)

    @api.get("/address/{address}", summary="An address: roles, device history per task, updates, transactions")
    def address(address: str) -> dict[str, Any]:
        return explorer.address(address)

    @api.get("/device/{address}", summary="Alias of /api/address for devices")
    def device(address: str) -> dict[str, Any]:
        return explorer.address(address)

    @api.get("/tx/{tx_hash}", summary="A transaction with its call and events decoded")
    def tx(tx_hash: str) -> dict[str, Any]:
        return explorer.tx(tx_hash)

    @api.get("/block/{ident}", summary="A block (by number or hash) and its transactions")
    def block(ident: str) -> dict[str, Any]:
        return explorer.block(ident)

    @api.get("/ipfs/{cid}", summary="What a CID holds (verified), and where the index references it")
    def ipfs(cid: str) -> dict[str, Any]:
        return explorer.content(cid)

    @api.get("/ipfs/{cid}/raw", summary="The bytes behind a CID, verified against it")
    def ipfs_raw(cid: str) -> Response:
        return Response(
            explorer.raw_content(cid),
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{cid}"'},
        )

    @api.get("/search", summary="Resolve search input to a page URL and its API URL")
    def search(q: str = Query("", max_length=1000)) -> dict[str, Any]:
        return explorer.resolve(q)

    return api
