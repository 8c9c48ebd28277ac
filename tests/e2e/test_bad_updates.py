"""Malformed and hostile updates are excluded with their reason recorded, and the aggregator keeps going."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from e2e_helpers import Cli, committed_rounds, evaluate_cid, report_of, task_spec, wait_for_phase

from fedchain.chain import EventFollower, Phase, TaskClient, connect, devnet_account
from fedchain.learning.model import build_model, get_weights
from fedchain.storage import IpfsClient, cid_to_digest, decode_weights, digest_to_cid
from fedchain.storage.binding import UpdateBinding

pytestmark = pytest.mark.e2e


def bound_to(w3, task: str, round_index: int, account: int) -> dict[str, str]:
    """The binding metadata a device of this version writes into its update."""
    return UpdateBinding(w3.eth.chain_id, task, round_index, devnet_account(account).address).metadata()


def test_bad_updates_are_rejected_with_reasons(cli: Cli) -> None:
    task = cli.deploy("--rounds", "1", "--devices", "6", "--max-updates", "6", "--min-updates", "6")["task"]
    w3 = connect(cli.state.rpc_url)
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        good = get_weights(build_model(spec.model, seed=1))
        wrong_shape = {**good, next(iter(good)): np.zeros((3, 3), dtype=np.float32)}
        non_finite = {k: v.copy() for k, v in good.items()}
        next(iter(non_finite.values())).flat[0] = np.nan
        bad_cids = {
            3: ipfs.add(b"this is not a safetensors file"),
            4: ipfs.put_weights(wrong_shape, bound_to(w3, task, 1, 4)),
            5: ipfs.put_weights(non_finite, bound_to(w3, task, 1, 5)),
            # Well-formed weights without a binding (a device of an older version, or a file made by hand).
            7: ipfs.put_weights(good),
        }
    # Device 6 submits the digest of content nobody holds.
    missing = digest_to_cid(hashlib.sha256(b"nobody has this").digest())
    for index, cid in [*bad_cids.items(), (6, missing)]:
        TaskClient.for_account(w3, task, devnet_account(index)).submit_update(1, cid_to_digest(cid), 50)

    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")
    honest = cli.spawn("device", "device", "--task", task, "--account", "2", "--partition", "0/1")
    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=240, procs=[aggregator, honest])
    assert aggregator.wait(timeout=60) == 0

    (commit,) = committed_rounds(cli.state.rpc_url, task)[1]
    assert commit["acceptedUpdates"] == 1
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        report = report_of(ipfs, commit)
    assert [a["device"] for a in report["accepted"]] == [devnet_account(2).address]
    reasons = {r["device"]: r["reason"] for r in report["rejected"]}
    assert reasons[devnet_account(3).address] == "MalformedWeights"
    assert reasons[devnet_account(4).address] == "shape-mismatch"
    assert reasons[devnet_account(5).address] == "non-finite"
    assert devnet_account(6).address in reasons
    assert reasons[devnet_account(7).address] == "binding-missing"


# The hostile-updates scenario: three honest device processes and three attackers driven from the test.
HONEST = (2, 3, 4)
HUGE, COPIER, REPLAYER = 5, 6, 7
ROUNDS = 3


def test_hostile_updates_are_excluded_and_every_round_finalises(cli: Cli) -> None:
    """Each round: HUGE submits weights of 1e30 (correctly bound: only the norm bound stops it), COPIER submits
    device 2's digest of the same round, REPLAYER submits device 3's digest of the previous round (in round 1, a
    harmless update of its own: the global model unchanged). Every one is left out with its reason; every round
    finalises and the model learns as the honest devices teach it."""
    deployed = cli.deploy(
        *("--rounds", str(ROUNDS), "--devices", "6", "--max-updates", "6", "--min-updates", "6"),
        *("--round-duration", "300"),
    )
    task = deployed["task"]
    w3 = connect(cli.state.rpc_url)
    client = TaskClient(w3, task)
    events = EventFollower(w3, task, client.abi)
    as_account = {i: TaskClient.for_account(w3, task, devnet_account(i)) for i in (HUGE, COPIER, REPLAYER)}
    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")
    devices = [
        cli.spawn(f"device-{i}", "device", "--task", task, "--account", str(a), "--partition", f"{i}/{len(HONEST)}")
        for i, a in enumerate(HONEST)
    ]
    procs = [aggregator, *devices]

    def submitted(round_index: int) -> dict[str, bytes]:
        return {
            e.args["device"]: bytes(e.args["updateDigest"])
            for e in events.history("UpdateSubmitted", round=round_index)
        }

    with IpfsClient(cli.state.ipfs_api) as ipfs:
        for r in range(1, ROUNDS + 1):
            # Wait for the round to open and for the honest updates the attackers copy.
            deadline = time.monotonic() + 240
            while True:
                state = client.current_round()
                digests = submitted(r)
                if state.round == r and state.phase == Phase.OPEN and devnet_account(2).address in digests:
                    break
                assert time.monotonic() < deadline, f"round {r} did not open with device 2's update"
                assert all(p.poll() in (None, 0) for p in procs), "a process died"
                time.sleep(0.2)
            global_weights = decode_weights(ipfs.cat(digest_to_cid(state.global_model_digest)))
            huge = {name: np.full_like(value, 1e30) for name, value in global_weights.items()}
            huge_cid = ipfs.put_weights(huge, {"fedchain.kind": "update", **bound_to(w3, task, r, HUGE)})
            as_account[HUGE].submit_update(r, cid_to_digest(huge_cid), 100)
            as_account[COPIER].submit_update(r, digests[devnet_account(2).address], 100)
            if r == 1:
                own = ipfs.put_weights(global_weights, {"fedchain.kind": "update", **bound_to(w3, task, 1, REPLAYER)})
                as_account[REPLAYER].submit_update(r, cid_to_digest(own), 10)
            else:
                as_account[REPLAYER].submit_update(r, submitted(r - 1)[devnet_account(3).address], 100)

    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=300, procs=procs)
    assert aggregator.wait(timeout=60) == 0

    finals = committed_rounds(cli.state.rpc_url, task)
    assert sorted(finals) == list(range(1, ROUNDS + 1)) and all(len(v) == 1 for v in finals.values())
    assert client.failed_rounds() == 0
    honest = {devnet_account(a).address for a in HONEST}
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        for r in range(1, ROUNDS + 1):
            report = report_of(ipfs, finals[r][0])
            accepted = {a["device"] for a in report["accepted"]}
            rejected = {e["device"]: e for e in report["rejected"]}
            assert accepted == (honest | {devnet_account(REPLAYER).address} if r == 1 else honest), (r, report)
            assert rejected[devnet_account(HUGE).address]["reason"] == "update-too-large", (r, report)
            assert rejected[devnet_account(COPIER).address]["reason"] == "duplicate-digest", (r, report)
            assert devnet_account(2).address in rejected[devnet_account(COPIER).address]["detail"]
            if r > 1:
                replay = rejected[devnet_account(REPLAYER).address]
                assert replay["reason"] == "binding-mismatch", (r, report)
                assert f"round {r - 1}" in replay["detail"] and devnet_account(3).address in replay["detail"]
            assert finals[r][0]["acceptedUpdates"] == len(accepted)
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        final_cid = digest_to_cid(client.global_model_digest())
        largest = max(float(np.abs(v).max()) for v in decode_weights(ipfs.cat(final_cid)).values())
        accuracy = evaluate_cid(ipfs, spec, final_cid)
    # The review's run ended with weights of 1.1e29, loss NaN and accuracy 0.37.
    assert largest < 10.0, largest
    assert accuracy >= 0.8, accuracy
