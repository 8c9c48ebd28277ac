"""`fedchain bench ...`: the benchmarks behind `make bench`. Each command hands its options to the harness in
fedchain.bench, imported only when the command runs."""

from __future__ import annotations

import typer

from fedchain.cli.options import AsJson

bench_app = typer.Typer(help="Benchmarks that write reports/*.json (see `make bench`).", no_args_is_help=True)
# The harness parses its own options (argparse): pass everything through.
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@bench_app.command("attacks", context_settings=PASSTHROUGH)
def bench_attacks(
    ctx: typer.Context,
    as_json: AsJson = False,
) -> None:
    """Accuracy of each strategy under each attack at 0/10/20/30% attacking devices (non-IID): writes
    reports/attacks.json and reports/attacks.md. Extra options (--seeds, --rounds, --devices, --quick, --out-dir)
    go to `python -m fedchain.bench.attacks`."""
    from fedchain.bench.attacks import main as attack_main

    attack_main([*ctx.args, *(["--json"] if as_json else [])])


@bench_app.command("aggregation", context_settings=PASSTHROUGH)
def bench_aggregation(ctx: typer.Context) -> None:
    """Seconds per robust strategy on 100 updates of 1M parameters, and FedAvg's peak memory against the number
    of updates: writes reports/aggregation.json."""
    from fedchain.bench.aggregation import main as aggregation_main

    aggregation_main(list(ctx.args))


@bench_app.command("privacy", context_settings=PASSTHROUGH)
def bench_privacy(ctx: typer.Context) -> None:
    """Secure aggregation's time and bytes against plain uploads at 10/50/100 devices, accuracy against ε (∞, 8, 4,
    1) and the personalisation table: writes reports/privacy.json (--quick for a short run)."""
    from fedchain.bench.privacy import main as privacy_main

    privacy_main(list(ctx.args))


@bench_app.command("market", context_settings=PASSTHROUGH)
def bench_market(ctx: typer.Context) -> None:
    """Compute market with 2 and 4 honest workers against the same plan trained in one process: job seconds,
    speed-up, gas per unit, final model match. Writes reports/market.json (--quick for a tiny plan)."""
    from fedchain.bench.market import main as market_main

    market_main(list(ctx.args))


@bench_app.command("rounds", context_settings=PASSTHROUGH)
def bench_rounds(ctx: typer.Context) -> None:
    """Gas per function and seconds per round for 5/10/20 devices on Ganache and Anvil: reports/bench.json."""
    from fedchain.bench.rounds import main as rounds_main

    rounds_main(list(ctx.args))


@bench_app.command("flower", context_settings=PASSTHROUGH)
def bench_flower(ctx: typer.Context) -> None:
    """The demo's task in Flower's simulation and in `fedchain demo` at 10, 100 and 1,000 devices: startup, round
    1, later rounds (median, p90), peak memory, ratios, bit-identical accuracies -> reports/flower.json. Options
    (--devices 10,100,1000, --rounds 3, --chain, --flower-python, --skip-fedchain, --out) go to
    `python -m fedchain.bench.flower`; Flower is the `bench` extra (`pip install -e '.[bench]'`, in `make setup`)."""
    from fedchain.bench.flower import main as flower_main

    raise typer.Exit(flower_main(list(ctx.args)))


@bench_app.command("throughput", context_settings=PASSTHROUGH)
def bench_throughput(ctx: typer.Context) -> None:
    """Device updates per second on Anvil: pre-signed (the node's ceiling), devices signing and sending their own
    in batches (as a pool does), one by one (as a device process does); gas per update direct vs relayed in one
    batch -> reports/throughput.json. Options (--devices 200, --repeats 3, --out) go to
    `python -m fedchain.bench.throughput`."""
    from fedchain.bench.throughput import main as throughput_main

    raise typer.Exit(throughput_main(list(ctx.args)))


@bench_app.command("device", context_settings=PASSTHROUGH)
def bench_device(ctx: typer.Context) -> None:
    """One device process up to ready for the demo's task (imports, dataset, model, warm-up) and its first two
    local rounds, in fresh interpreters: seconds to ready, USS/PSS/RSS/private-dirty memory, round 1 against round 2,
    modules a device should not import; median of 5 runs -> reports/device.json. The torch and the light (numpy only)
    runtime side by side, with their ratios (--runtime torch|light|both). Options (--runs, --out, --no-cold,
    --no-floor, --runtime, --json) go to `python -m fedchain.bench.device_footprint`."""
    from fedchain.bench.device_footprint import main as device_main

    raise typer.Exit(device_main(list(ctx.args)))


@bench_app.command("online", context_settings=PASSTHROUGH)
def bench_online(ctx: typer.Context) -> None:
    """Synchronous rounds vs asynchronous buffered versions (FedBuff) on chain: the same wearable task, 100 devices
    with heterogeneous speeds (30% 5x slower, 10% asleep), accuracy against wall time, time to the target accuracy,
    updates per second, staleness, gas per update -> reports/online.json. Options (--devices, --duration, --fleet,
    --target, --per-round, --buffer-size, --max-staleness, --out) go to `python -m fedchain.bench.online`."""
    from fedchain.bench.online import main as online_main

    raise typer.Exit(online_main(list(ctx.args)))
