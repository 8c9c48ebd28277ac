"""A relayed batch of signed updates, end to end: one transaction records four device updates, the aggregator
process fetches the batch file from IPFS, screens every entry, aggregates the valid ones and reports the others.

Real processes: Ganache, the embedded Kubo node, `fedchain deploy` (with an extra relayer) and one aggregator
process. The updates are copies of the global model (valid weights); the point is the path, not the learning.
"""

from __future__ import annotations

import time

import pytest
from e2e_helpers import Cli, committed_rounds, report_of

from fedchain.chain import (
    SignedUpdate,
    TaskClient,
    connect,
    devnet_account,
    make_batch,
    sign_update,
)
from fedchain.chain.batch import REASON_BAD_SIGNATURE, REASON_UNAPPROVED
from fedchain.storage import IpfsClient, cid_to_digest, digest_to_cid
from fedchain.storage.binding import UpdateBinding

pytestmark = pytest.mark.e2e

RELAYER = 5  # devnet account given RELAYER_ROLE with --relayer-address (not a device, not an aggregator)
OUTSIDER = 9  # signs correctly but is not an approved device


def test_relayed_batch_is_screened_and_aggregated(cli: Cli) -> None:
    relayer = devnet_account(RELAYER)
    deployed = cli.deploy(
        *("--rounds", "2", "--devices", "3", "--min-updates", "1", "--max-updates", "4"),
        *("--relayer-address", relayer.address),
    )
    task_address = deployed["task"]
    assert relayer.address in deployed["relayers"]
    assert devnet_account(1).address in deployed["relayers"]  # the aggregator relays by default
    aggregator = cli.spawn("aggregator", "aggregator", "--task", task_address, "--account", "1")

    w3 = connect(cli.state.rpc_url)
    task = TaskClient.for_account(w3, task_address, relayer)
    assert task.is_relayer(relayer.address)
    with IpfsClient(cli.state.ipfs_api) as ipfs:
        weights = ipfs.get_weights(digest_to_cid(task.global_model_digest()))
        entries = []
        for i, account_index in enumerate((2, 3, 4, OUTSIDER)):
            device = devnet_account(account_index)
            binding = UpdateBinding(w3.eth.chain_id, task_address, 1, device.address)  # as devices write it
            cid = ipfs.put_weights(weights, {"fedchain.kind": "update", **binding.metadata()})
            digest = cid_to_digest(cid)
            signed_digest = digest if account_index != 4 else cid_to_digest(ipfs.add(b"something else"))
            signature = sign_update(device, w3.eth.chain_id, task_address, 1, signed_digest, 10 + i)
            entries.append(SignedUpdate(device.address, digest, 10 + i, signature))
        batch = make_batch(task_address, w3.eth.chain_id, 1, entries)
        batch_cid = ipfs.add(batch.to_json())
        result = task.submit_update_batch(1, cid_to_digest(batch_cid), batch.root(), 4, batch.total_samples)
        assert result.gas_used < 60_000
        for i, e in enumerate(batch.entries):
            expected = e.device not in (devnet_account(4).address, devnet_account(OUTSIDER).address)
            assert (
                task.verify_batch_entry(
                    1, batch.root(), e.device, e.update_digest, e.num_samples, e.signature, batch.proof(i)
                )
                is expected
            )

        deadline = time.monotonic() + 240
        while 1 not in committed_rounds(cli.state.rpc_url, task_address):
            assert aggregator.poll() is None, cli.log_text("aggregator")[-3000:]
            assert time.monotonic() < deadline, cli.log_text("aggregator")[-3000:]
            time.sleep(0.5)
        (final,) = committed_rounds(cli.state.rpc_url, task_address)[1]
        assert final["acceptedUpdates"] == 2
        report = report_of(ipfs, final)
    accepted = {e["device"] for e in report["accepted"]}
    assert accepted == {devnet_account(2).address, devnet_account(3).address}
    reasons = {e["device"]: e["reason"] for e in report["rejected"]}
    assert reasons == {
        devnet_account(4).address: REASON_BAD_SIGNATURE,
        devnet_account(OUTSIDER).address: REASON_UNAPPROVED,
    }
    assert all(e["batch_cid"] == batch_cid for e in report["rejected"])
