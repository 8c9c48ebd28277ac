"""The `fedchain` command line as a package: every command registered in its place, each shared option declared once
(the same flag and help wherever a command takes it), --strategy parsing, and `python -m fedchain.cli`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any, get_args

import pytest
import typer
import typer.main

from fedchain.cli import app, options
from fedchain.cli.common import parse_strategy

COMMANDS = [
    "ipfs",
    "devnet",
    "deploy",
    "start",
    "device",
    "pool",
    "aggregator",
    "explorer",
    "status",
    "rounds",
    "report",
    "demo",
    "datasets",
    "worker",
    "coordinator",
    "market-demo",
    "bench",
]
BENCHES = ["attacks", "aggregation", "privacy", "market", "rounds", "flower", "throughput", "device", "online"]
# Commands that talk to a chain and IPFS: each takes the three endpoint options.
CONNECTED = {
    "deploy",
    "start",
    "device",
    "pool",
    "aggregator",
    "explorer",
    "status",
    "rounds",
    "report",
    "worker",
    "coordinator",
}
# Commands that sign: each takes the three account options.
SIGNING = {"deploy", "start", "device", "aggregator", "worker", "coordinator"}
# The flag is the same but not the option: `ipfs --ready-file` receives the API URL, `explorer --index` is the index
# file it builds and serves from (a default of its own).
OWN_MEANING = {"--ready-file": ("ipfs",), "--index": ("explorer",)}


# Typer builds on its own copy of click (typer._click): groups are told apart by their commands, not their class.
def _commands(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield prefix + name, command


def _takers(flag: str) -> dict[str, Any]:
    root = typer.main.get_command(app)
    return {name: p for name, command in _commands(root) for p in command.params if flag in p.opts}


def _help(alias: object) -> str:
    info = get_args(alias)[1]
    assert isinstance(info, typer.models.OptionInfo)
    return info.help or ""


def test_every_command_is_registered_in_order() -> None:
    root: Any = typer.main.get_command(app)
    assert list(root.commands) == COMMANDS
    assert list(root.commands["bench"].commands) == BENCHES


@pytest.mark.parametrize(
    ("flag", "alias", "commands"),
    [
        ("--rpc-url", options.RpcUrl, CONNECTED),
        ("--ipfs-api", options.IpfsApi, CONNECTED),
        ("--state-file", options.StateFile, CONNECTED | {"devnet"}),
        ("--account", options.AccountIndex, SIGNING),
        ("--key-env", options.KeyEnv, SIGNING),
        ("--keystore", options.Keystore, SIGNING),
        ("--ready-file", options.ReadyFile, {"device", "pool", "aggregator"}),
        ("--launch-file", options.LaunchFile, {"device", "pool", "aggregator"}),
        ("--strategy", options.StrategyName, {"deploy", "demo"}),
        ("--dataset", options.DatasetName, {"deploy", "demo"}),
        ("--stream-buffer", options.StreamBuffer, {"device", "demo"}),
        ("--stream-speed", options.StreamSpeed, {"device", "demo"}),
        ("--strategy-param", options.StrategyParams, {"deploy", "demo"}),
        ("--index", options.IndexFile, {"status", "rounds", "report"}),
        ("--market", options.MarketAddress, {"worker", "coordinator"}),
        ("--verbose", options.Verbose, {"device", "pool", "aggregator", "explorer", "worker", "coordinator"}),
    ],
)
def test_a_shared_option_means_the_same_everywhere(flag: str, alias: object, commands: set[str]) -> None:
    takers = {name: p for name, p in _takers(flag).items() if name not in OWN_MEANING.get(flag, ())}
    assert set(takers) == commands
    assert {p.help or "" for p in takers.values()} == {_help(alias)}


def test_state_file_default_is_the_devnets_everywhere() -> None:
    defaults = {name: p.default for name, p in _takers("--state-file").items()}
    assert set(defaults.values()) == {options.DEVNET_STATE_FILE}


def test_json_is_a_result_or_a_last_line_summary() -> None:
    helps = {name: p.help for name, p in _takers("--json").items()}
    summary = {name for name, text in helps.items() if text == _help(options.JsonSummary)}
    assert summary == {"demo", "market-demo"}
    assert set(helps.values()) == {_help(options.AsJson), _help(options.JsonSummary)}
    assert {"deploy", "status", "rounds", "bench attacks"} <= set(helps)


def test_parse_strategy() -> None:
    spec = parse_strategy("multi-krum", ["f=2"])
    assert spec.name == "multi-krum" and spec.params["f"] == 2
    with pytest.raises(typer.BadParameter, match="NAME=VALUE"):
        parse_strategy("fedavg", ["f"])
    with pytest.raises(typer.BadParameter, match="not a number"):
        parse_strategy("krum", ["f=two"])
    with pytest.raises(typer.BadParameter):
        parse_strategy("no-such-rule", None)


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fedchain.cli", "--help"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "market-demo" in out and "bench" in out
