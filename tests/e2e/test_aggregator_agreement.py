"""Three aggregators, one of them lying, and a Byzantine device: the honest result is finalised, the liar recorded.

Real processes end to end: Ganache, the embedded Kubo node, five device processes (one boosting a flipped update
tenfold) and three aggregator processes running Multi-Krum behind the trusted-root reference filter with a 2-of-3
commit-reveal agreement on chain. The filter trains a reference model in every aggregator each round, so agreement
also shows that this training is bit-identical across processes.
"""

from __future__ import annotations

import pytest
from e2e_helpers import Cli, committed_rounds, evaluate_cid, report_of, task_spec, wait_for_phase

from fedchain.chain import EventFollower, Phase, TaskClient, connect, devnet_account
from fedchain.storage import IpfsClient, digest_to_cid

pytestmark = pytest.mark.e2e

ROUNDS = 3
DEVICES = 5
ATTACKER = 2  # devnet account of the Byzantine device
HONEST = (1, 7)  # devnet accounts of the honest aggregators
LIAR = 8


def test_lying_aggregator_is_outvoted_and_recorded(cli: Cli) -> None:
    aggregators = [devnet_account(i).address for i in (*HONEST, LIAR)]
    deployed = cli.deploy(
        *("--rounds", str(ROUNDS), "--devices", str(DEVICES)),
        *("--strategy", "multi-krum", "--strategy-param", "f=1", "--strategy-param", "root_samples=40"),
        *(arg for a in aggregators for arg in ("--aggregator-address", a)),
        *("--threshold", "2", "--aggregation-duration", "60"),
    )
    task = deployed["task"]
    assert deployed["aggregator_threshold"] == 2
    assert deployed["strategy"] == {"name": "multi-krum", "params": {"f": 1, "m": 0, "root_samples": 40}}
    aggregator_procs = [
        cli.spawn(
            f"aggregator-{i}", "aggregator", "--task", task, "--account", str(i), *(["--lie"] if i == LIAR else [])
        )
        for i in (*HONEST, LIAR)
    ]
    devices = []
    for i in range(DEVICES):
        attack = ["--attack", "sign-flip-x10"] if 2 + i == ATTACKER else []
        devices.append(
            cli.spawn(
                f"device-{i}",
                *("device", "--task", task, "--account", str(2 + i), "--partition", f"{i}/{DEVICES}", *attack),
            )
        )
    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=420, procs=[*aggregator_procs, *devices])
    for proc in aggregator_procs:  # the liar reveals the last round late, after TaskFinished, then exits
        assert proc.wait(timeout=60) == 0

    client = TaskClient(connect(cli.state.rpc_url), task)
    finals = committed_rounds(cli.state.rpc_url, task)
    assert sorted(finals) == list(range(1, ROUNDS + 1)) and all(len(v) == 1 for v in finals.values())
    assert client.failed_rounds() == 0

    events = EventFollower(client.w3, task, client.abi)
    reveals: dict[int, dict[str, bytes]] = {}
    for event in events.history("ResultRevealed"):
        reveals.setdefault(event.args["round"], {})[event.args["aggregator"]] = bytes(event.args["modelDigest"])
    faults = [(e.args["round"], e.args["aggregator"]) for e in events.history("AggregatorFault")]
    liar, honest = aggregators[2], aggregators[:2]
    for r in range(1, ROUNDS + 1):
        final = bytes(finals[r][0]["modelDigest"])
        assert client.round_model_digest(r) == final
        # Both honest aggregators computed the same bits; the liar's model is not what was finalised.
        assert [reveals[r][a] for a in honest] == [final, final], r
        assert reveals[r][liar] != final, r
        assert finals[r][0]["aggregator"] in honest
    assert sorted(faults) == [(r, liar) for r in range(1, ROUNDS + 1)]
    assert client.aggregator_info(liar).faults == ROUNDS
    assert [client.aggregator_info(a).faults for a in honest] == [0, 0]

    # The reversed, boosted update was left out of every round, and the model learned regardless.
    attacker = devnet_account(ATTACKER).address
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        for r in range(1, ROUNDS + 1):
            report = report_of(ipfs, finals[r][0])
            assert report["strategy"] == "multi-krum"
            excluded = {e["device"] for e in report["rejected"] if e["reason"] == "excluded-by-strategy"}
            assert attacker in excluded, (r, report["rejected"])
            assert attacker not in {e["device"] for e in report["accepted"]}
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        accuracy = evaluate_cid(ipfs, spec, digest_to_cid(client.global_model_digest()))
    assert accuracy >= 0.85, accuracy
