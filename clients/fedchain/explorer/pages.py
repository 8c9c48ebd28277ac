"""Server-rendered HTML pages (Jinja2): the same dicts as the JSON API, plus inline SVG charts."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Undefined
from markupsafe import Markup

from fedchain.explorer.charts import Series, bar_chart, line_chart
from fedchain.explorer.queries import Explorer

TEMPLATES = Path(__file__).parent / "templates"


def short(value: Any, keep: int = 6) -> str:
    text = "" if value is None else str(value)
    if len(text) <= 2 * keep + 3:
        return text
    return f"{text[: keep + 2]}…{text[-keep:]}"


def num(value: Any) -> str:
    if value is None or isinstance(value, Undefined):  # Undefined: a field the data lacks (no IPFS node, ...)
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def metric(value: Any, digits: int = 4) -> str:
    return "—" if value is None or isinstance(value, Undefined) else f"{float(value):.{digits}f}"


def gwei(value: Any) -> str:
    if value is None or isinstance(value, Undefined):  # Undefined: a field the data lacks (no IPFS node, ...)
        return "—"
    return f"{int(value) / 1e9:,.4g} gwei"


def eth(value: Any) -> str:
    if value in (None, ""):
        return "—"
    wei = int(value)
    return "0 ETH" if wei == 0 else f"{wei / 1e18:.6g} ETH"


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    env = Jinja2Templates(directory=str(TEMPLATES))
    env.env.filters.update(short=short, num=num, metric=metric, gwei=gwei, eth=eth)
    return env


def task_charts(rounds: list[dict[str, Any]]) -> dict[str, Markup]:
    acc = [(float(r["round"]), r["accuracy"]) for r in rounds]
    loss = [(float(r["round"]), r["loss"]) for r in rounds]
    gas = [(float(r["round"]), float(r["gas"]) if r["gas"] else None) for r in rounds]
    return {
        "accuracy": Markup(line_chart([Series("accuracy", acc)], title="Accuracy per round", y_min=None)),
        "loss": Markup(line_chart([Series("loss", loss)], title="Loss per round", y_min=0.0)),
        "gas": Markup(bar_chart(gas, title="Gas per round", label="gas")),
    }


def router(explorer: Explorer) -> APIRouter:
    pages = APIRouter()
    tpl = templates()

    def render(request: Request, name: str, title: str, api: str | None, **context: Any) -> HTMLResponse:
        return tpl.TemplateResponse(
            request,
            name,
            {
                "title": title,
                "api_url": api,
                "status": explorer.status.as_dict(),
                "chain_name": explorer.chain.name,
                **context,
            },
        )

    @pages.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        data = explorer.overview()
        return render(request, "overview.html", "Overview", "/api/overview", o=data, live="block round:*")

    @pages.get("/task/{address}", response_class=HTMLResponse)
    def task(request: Request, address: str) -> HTMLResponse:
        data = explorer.task(address)
        return render(
            request,
            "task.html",
            f"Task {short(data['address'])}",
            f"/api/task/{data['address']}",
            t=data,
            charts=task_charts(data["rounds"]),
            live=f"round:{data['address']}",
        )

    @pages.get("/task/{address}/round/{number}", response_class=HTMLResponse)
    def round_(request: Request, address: str, number: int) -> HTMLResponse:
        data = explorer.round(address, number)
        return render(
            request,
            "round.html",
            f"Round {number} · task {short(data['task'])}",
            f"/api/task/{data['task']}/round/{number}",
            r=data,
            live=f"round:{data['task']}/{number}",
        )

    @pages.get("/task/{address}/round/{number}/update/{device}", response_class=HTMLResponse)
    def update(request: Request, address: str, number: int, device: str) -> HTMLResponse:
        data = explorer.update(address, number, device)
        return render(
            request,
            "update.html",
            f"Update of {short(data['device'])} · round {number}",
            f"/api/task/{data['task']}/round/{number}/update/{data['device']}",
            u=data,
            live=f"round:{data['task']}/{number}",
        )

    @pages.get("/address/{address}", response_class=HTMLResponse)
    @pages.get("/device/{address}", response_class=HTMLResponse)
    def address(request: Request, address: str) -> Response:
        data = explorer.address(address)
        if data["kind"] == "task" and request.url.path.startswith("/address/"):
            return RedirectResponse(f"/task/{data['address']}", status_code=303)
        return render(
            request,
            "address.html",
            f"{data['kind'].capitalize()} {short(data['address'])}",
            f"/api/address/{data['address']}",
            a=data,
            live="round:*",
        )

    @pages.get("/tx/{tx_hash}", response_class=HTMLResponse)
    def tx(request: Request, tx_hash: str) -> HTMLResponse:
        data = explorer.tx(tx_hash)
        return render(request, "tx.html", f"Transaction {short(data['hash'])}", f"/api/tx/{data['hash']}", x=data)

    @pages.get("/block/{ident}", response_class=HTMLResponse)
    def block(request: Request, ident: str) -> HTMLResponse:
        data = explorer.block(ident)
        return render(request, "block.html", f"Block {data['number']}", f"/api/block/{data['number']}", b=data)

    @pages.get("/ipfs/{cid}", response_class=HTMLResponse)
    def ipfs(request: Request, cid: str) -> HTMLResponse:
        data = explorer.content(cid)
        return render(request, "ipfs.html", f"IPFS {short(cid)}", f"/api/ipfs/{cid}", c=data)

    @pages.get("/ipfs/{cid}/raw")
    def ipfs_raw(cid: str) -> Response:
        return Response(
            explorer.raw_content(cid),
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{cid}"'},
        )

    @pages.get("/search")
    def search(request: Request, q: str = Query("", max_length=1000)) -> Response:
        target = explorer.resolve(q)  # SearchError / NotFound become a message page (app.py)
        return RedirectResponse(target["url"], status_code=303)

    return pages


def message_page(
    request: Request, status_code: int, title: str, message: str, explorer: Explorer | None
) -> HTMLResponse:
    tpl = templates()
    return tpl.TemplateResponse(
        request,
        "message.html",
        {
            "title": title,
            "message": message,
            "api_url": None,
            "status": explorer.status.as_dict() if explorer else {},
            "chain_name": explorer.chain.name if explorer else "",
            "query": request.query_params.get("q", ""),
            "code": status_code,
        },
        status_code=status_code,
    )
