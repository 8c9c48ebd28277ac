"""The `fedchain` command line: one module per command family, the options they share declared once (options.py).

The commands are listed here, in the order `fedchain --help` shows them; each family's module only defines them.
"""

from __future__ import annotations

import typer

from fedchain.cli import bench, datasets, demo, market, roles, services, task, views

app = typer.Typer(
    help="fedchain: federated learning for medical IoT devices, coordinated by Ethereum contracts, weights on IPFS.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(services.ipfs)
app.command()(services.devnet)
app.command()(task.deploy)
app.command()(task.start)
app.command()(roles.device)
app.command()(roles.pool)
app.command()(roles.aggregator)
app.command()(services.explorer)
app.command()(views.status)
app.command()(views.rounds)
app.command()(views.report)
app.command()(demo.demo)
app.command()(datasets.datasets)
app.command()(market.worker)
app.command()(market.coordinator)
app.command("market-demo")(market.market_demo)
app.add_typer(bench.bench_app, name="bench")


def main() -> None:
    app()
