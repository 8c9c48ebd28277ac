"""The options several `fedchain` commands take, declared once: a command names the alias and its default.

Annotated aliases keep each option's flag and help in one place, so `--rpc-url` means the same thing wherever it is
given. Only typer and the standard library here: importing the CLI stays light (no torch, web3 or numpy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# Where `fedchain devnet` writes its state file and every other command reads it, unless --state-file says otherwise.
DEVNET_STATE_FILE = Path(".fedchain/devnet.json")

# Endpoints: given, or read from the devnet's state file.
StateFile = Annotated[Path, typer.Option("--state-file", help="Devnet state file written by `fedchain devnet`.")]
RpcUrl = Annotated[str | None, typer.Option("--rpc-url", help="Ethereum JSON-RPC URL (default: the devnet's).")]
IpfsApi = Annotated[str | None, typer.Option("--ipfs-api", help="Kubo RPC API URL (default: the devnet's).")]

# The signing account: a devnet index, a key in an environment variable, or a keystore file.
AccountIndex = Annotated[int | None, typer.Option("--account", help="Devnet account index (well-known test keys).")]
KeyEnv = Annotated[
    str | None, typer.Option("--key-env", help="Environment variable holding a hex private key (testnets).")
]
Keystore = Annotated[Path | None, typer.Option("--keystore", help="JSON keystore file (password from env or prompt).")]

# Output.
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
JsonSummary = Annotated[bool, typer.Option("--json", help="Last stdout line: a JSON summary.")]
Verbose = Annotated[bool, typer.Option("-v", "--verbose")]

# Long-running roles started by a supervisor.
ReadyFile = Annotated[
    Path | None, typer.Option("--ready-file", help="Create this file once ready for round 1 (for supervisors).")
]
LaunchFile = Annotated[
    Path | None,
    typer.Option(
        "--launch-file",
        help="Start now, connect later: wait for this JSON file ({task, rpc_url, ipfs_api}, written by a supervisor "
        "such as `fedchain demo`) and take --task and the endpoints from it. Imports and warm-up overlap the "
        "devnet's start and the task's deployment.",
    ),
]

# What a command acts on.
TaskAddress = Annotated[str, typer.Option(help="Task contract address.")]
OptionalTask = Annotated[str | None, typer.Option(help="Task contract address (or give --launch-file).")]
MarketAddress = Annotated[str, typer.Option("--market", help="ComputeMarket contract address.")]
IndexFile = Annotated[Path | None, typer.Option("--index", help="Explorer index file (default: per RPC URL).")]

# A task's set-up (deploy and demo).
Rounds = Annotated[int, typer.Option(help="Number of rounds.")]
Chain = Annotated[str, typer.Option(help="ganache or anvil.")]
StrategyName = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="Aggregation strategy: fedavg, fedavgm, fedadam, fedyogi, fedprox, median, trimmed-mean, krum, "
        "multi-krum, bulyan.",
    ),
]
StrategyParams = Annotated[
    list[str] | None,
    typer.Option(
        "--strategy-param", help="A strategy parameter as NAME=VALUE (repeatable), e.g. f=2, beta=0.3, clip_norm=1."
    ),
]
TaskMode = Annotated[
    str,
    typer.Option("--mode", help="sync: a FederatedTask (rounds); buffered: a BufferedTask (asynchronous, FedBuff)."),
]
Threshold = Annotated[
    int | None, typer.Option(help="Agreeing aggregators that finalise a round (default: a strict majority).")
]
DatasetName = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="The dataset the task trains on, with its model and training settings (`fedchain datasets` lists "
        "them): breast_cancer (the default task), ecg, basic_motions, mitdb_rate.",
    ),
]
DpClipNorm = Annotated[float, typer.Option(help="Differential privacy: each device's update norm bound.")]

# A device's data and lifetime (device and pool).
StreamBuffer = Annotated[
    int,
    typer.Option(
        help="Wearable tasks: replay each device's recordings into a buffer of the newest N windows and train on "
        "what it holds (0: train on the whole partition)."
    ),
]
StreamSpeed = Annotated[float, typer.Option(help="Replay speed of --stream-buffer, x real time.")]
DataSeed = Annotated[int, typer.Option(help="Seed of the data partition.")]
Online = Annotated[bool, typer.Option(help="Data arrives as a stream, a share per round.")]
MaxRounds = Annotated[int | None, typer.Option(help="Leave after training this many rounds.")]
Runtime = Annotated[
    str,
    typer.Option(
        help="How devices train: torch, light (numpy only: no torch, for small gateways) or auto (torch if it is "
        "installed, else light)."
    ),
]

# Demos.
Workdir = Annotated[Path | None, typer.Option(help="Where logs and the IPFS repo go.")]
Timeout = Annotated[float, typer.Option(help="Give up after this many seconds.")]
