"""Malformed updates are excluded with their reason recorded, and the aggregator keeps going."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from e2e_helpers import Cli, committed_rounds, report_of, task_spec, wait_for_phase

from fedchain.chain import Phase, TaskClient, connect, devnet_account
from fedchain.learning.model import build_model, get_weights
from fedchain.storage import IpfsClient, cid_to_digest, digest_to_cid

pytestmark = pytest.mark.e2e


def test_bad_updates_are_rejected_with_reasons(cli: Cli) -> None:
    task = cli.deploy("--rounds", "1", "--devices", "5", "--max-updates", "5", "--min-updates", "5")["task"]
    w3 = connect(cli.state.rpc_url)
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        spec = task_spec(cli.state.rpc_url, ipfs, task)
        good = get_weights(build_model(spec.model, seed=1))
        wrong_shape = {**good, next(iter(good)): np.zeros((3, 3), dtype=np.float32)}
        non_finite = {k: v.copy() for k, v in good.items()}
        next(iter(non_finite.values())).flat[0] = np.nan
        bad_cids = {
            3: ipfs.add(b"this is not a safetensors file"),
            4: ipfs.put_weights(wrong_shape),
            5: ipfs.put_weights(non_finite),
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
