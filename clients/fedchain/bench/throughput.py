"""`fedchain bench throughput`: how many device updates per second the chain takes, and what each costs in gas.

On a fresh Anvil devnet, with N devices approved on three identical tasks, side by side in one run:

* **ceiling**: every device's `submitUpdate` signed beforehand, then sent and confirmed in JSON-RPC batches; the
  node's own throughput for this transaction;
* **devices sending their own** (what a pool of virtual devices does each round): each device builds and signs its
  transaction at submit time (call data encoded directly, libsecp256k1), then the same batched send and
  confirmation; the nonces are read once beforehand, as a pool does once per life;
* **one by one** (what one `fedchain device` process does): sign, send, wait for the receipt, per device;

and the gas per update: per-device `submitUpdate` against the same N updates relayed as one signed batch
(`submitUpdateBatch`, amortised). Several repeats, the pair's order alternating; medians and their ratio.
Writes reports/throughput.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedchain.app.deploy import TaskPlan, create_task
from fedchain.app.devnet import Devnet
from fedchain.chain import TaskClient, connect
from fedchain.chain.accounts import devnet_accounts
from fedchain.chain.batch import SignedUpdate, make_batch
from fedchain.chain.signing import sign_update
from fedchain.chain.task import GAS_LIMITS, encode_submit_update
from fedchain.chain.tx import read_nonces, send_raw_batch, wait_receipts
from fedchain.storage import IpfsClient, cid_to_digest

ADMIN, RELAYER, FIRST_DEVICE = 0, 1, 2


def _digest(device: int, task: str) -> bytes:
    return hashlib.sha256(f"{task}:{device}".encode()).digest()


def _task(w3: Any, ipfs: IpfsClient, devices: list[str], relayer: str) -> TaskClient:
    plan = TaskPlan(
        num_rounds=1,
        min_updates=1,
        max_updates=len(devices) + 1,  # stays open: every measured submission lands in round 1
        round_duration=3600,
        devices=tuple(devices),
        # start() needs n / 2 < k <= n aggregators; the relayer's account serves (it never aggregates here).
        aggregators=(relayer,),
        relayers=(relayer,),
        aggregators_relay=False,
    )
    deployed = create_task(w3, devnet_accounts([ADMIN])[0], ipfs, plan)
    return TaskClient(w3, deployed.address)


def measure(devices: int, repeats: int, workdir: Path) -> dict[str, Any]:
    with Devnet(workdir, "anvil", num_accounts=FIRST_DEVICE + devices + 1) as net:
        state = net.state
        assert state is not None
        w3 = connect(state.rpc_url)
        ipfs = IpfsClient(state.ipfs_api)
        accounts = devnet_accounts(range(FIRST_DEVICE, FIRST_DEVICE + devices))
        relayer = devnet_accounts([RELAYER])[0]
        addresses = [a.address for a in accounts]
        runs: dict[str, list[float]] = {"ceiling": [], "devices_sending": [], "one_by_one": []}
        gas_direct: list[int] = []
        gas_batch: list[int] = []

        def ceiling() -> None:
            # Signed beforehand: the node's own rate for this transaction.
            task = _task(w3, ipfs, addresses, relayer.address)
            clients = [TaskClient.for_account(w3, task.address, a) for a in accounts]
            fees = clients[0].sender.fees()  # type: ignore[union-attr]
            raws = [
                c.sender.sign(  # type: ignore[union-attr]
                    c.contract.functions.submitUpdate(1, _digest(i, task.address), 10), GAS_LIMITS["submitUpdate"], fees
                )[1]
                for i, c in enumerate(clients)
            ]
            started = time.perf_counter()
            receipts = wait_receipts(w3, [h for h in send_raw_batch(w3, raws) if isinstance(h, bytes)])
            runs["ceiling"].append(devices / (time.perf_counter() - started))
            assert all(int(r["status"], 16) == 1 for r in receipts)
            gas_direct.extend(int(r["gasUsed"], 16) for r in receipts)

        def devices_sending() -> None:
            # Build and sign inside the timed part.
            task = _task(w3, ipfs, addresses, relayer.address)
            clients = [TaskClient.for_account(w3, task.address, a) for a in accounts]
            # As a pool does once per life (not per round): every device's nonce in one batched request.
            for c, nonce in zip(clients, read_nonces(w3, addresses), strict=True):
                c.sender.set_nonce(nonce)  # type: ignore[union-attr]
            started = time.perf_counter()
            fees = clients[0].sender.fees()  # type: ignore[union-attr]
            # As DevicePool._submit does: call data encoded directly, the fast signer, all signed, then batched.
            raws = [
                c.sender.sign_data(  # type: ignore[union-attr]
                    task.address,
                    encode_submit_update(1, _digest(i, task.address), 10),
                    GAS_LIMITS["submitUpdate"],
                    fees,
                )[1]
                for i, c in enumerate(clients)
            ]
            receipts = wait_receipts(w3, [h for h in send_raw_batch(w3, raws) if isinstance(h, bytes)])
            runs["devices_sending"].append(devices / (time.perf_counter() - started))
            assert all(int(r["status"], 16) == 1 for r in receipts)

        for repeat in range(repeats):
            # The node slows as its chain grows: the pair's order alternates so neither side always runs second.
            for run in (ceiling, devices_sending) if repeat % 2 == 0 else (devices_sending, ceiling):
                run()

            # One by one, as a lone device process does (a sample of the devices: it is slow).
            task = _task(w3, ipfs, addresses, relayer.address)
            sample = accounts[: min(devices, 50)]
            started = time.perf_counter()
            for i, account in enumerate(sample):
                TaskClient.for_account(w3, task.address, account).submit_update(1, _digest(i, task.address), 10)
            runs["one_by_one"].append(len(sample) / (time.perf_counter() - started))

            # The same N updates relayed as one signed batch.
            task = _task(w3, ipfs, addresses, relayer.address)
            chain_id = w3.eth.chain_id
            entries = [
                SignedUpdate(
                    a.address,
                    _digest(i, task.address),
                    10,
                    sign_update(a, chain_id, task.address, 1, _digest(i, task.address), 10),
                )
                for i, a in enumerate(accounts)
            ]
            batch = make_batch(task.address, chain_id, 1, entries)
            batch_cid = ipfs.add(batch.to_json())
            tx = TaskClient.for_account(w3, task.address, relayer).submit_update_batch(
                1, cid_to_digest(batch_cid), batch.root(), len(entries), batch.total_samples
            )
            gas_batch.append(tx.gas_used)
        # The node slows as its chain grows, so whichever run of a pair goes second is slower: with the order
        # alternating, the ratio of the medians is the fair figure (each pair's own ratio is listed too).
        fractions = [s / c for s, c in zip(runs["devices_sending"], runs["ceiling"], strict=True)]
        return {
            "devices": devices,
            "repeats": repeats,
            "updates_per_second": {name: round(statistics.median(v), 1) for name, v in runs.items()},
            "updates_per_second_runs": {name: [round(x, 1) for x in v] for name, v in runs.items()},
            "devices_sending_fraction_of_ceiling": round(
                statistics.median(runs["devices_sending"]) / statistics.median(runs["ceiling"]), 3
            ),
            "devices_sending_fraction_pairs": [round(f, 3) for f in fractions],
            "target_fraction": 0.9,
            "gas_per_update": {
                "submitUpdate": round(statistics.median(gas_direct)),
                "batch_transaction": round(statistics.median(gas_batch)),
                "batch_amortised": round(statistics.median(gas_batch) / devices),
            },
            "targets": {"submitUpdate_max": 35_000, "batch_amortised_max_at_100": 5_000},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedchain bench throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("reports/throughput.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fedchain-throughput-") as tmp:
        report = measure(args.devices, args.repeats, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
