"""`fedchain bench throughput`: how many device updates per second the chain takes, and what each costs in gas.

On an Anvil devnet, N devices approved on one task, the two sides of each pair run from the same chain state (a
snapshot, reverted after each run, so neither side meets a longer chain than the other):

* **ceiling**: every device's `submitUpdate` signed beforehand, then sent in JSON-RPC batches and confirmed: the
  node's own throughput for this transaction;
* **devices sending their own** (what a pool of virtual devices does each round, `DevicePool._submit`): each
  device's transaction built and signed at submit time (call data encoded directly, libsecp256k1) while a sender
  thread sends what is signed so far (`sign_and_send`); the nonces are read once beforehand, as a pool does once per
  life;
* **one by one** (what one `fedchain device` process does): sign, send, wait for the receipt, per device;

under two ways of making blocks:

* **packed** (the headline): automining off, blocks mined one after another as soon as the last is done, each as
  full as the 30M gas limit allows (~850 updates), as a real chain's block builder packs them under load;
* **automine** (the devnet default, what `fedchain demo` runs on): one block whenever transactions are ready. How
  many updates share a block then depends on how the node's RPC handler and miner interleave on a busy machine: the
  same 1,000 pre-signed transactions landed in 75 to 275 blocks from run to run, so the throughput swings several-fold
  whatever the client does. Reported for completeness, with the blocks each run took.

and the gas per update: per-device `submitUpdate` against the same N updates relayed as one signed batch
(`submitUpdateBatch`, amortised). Several repeats, the pair's order alternating; the headline is the median of the
pairs' ratios. Writes reports/throughput.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedchain.app.deploy import TaskPlan, create_task
from fedchain.app.devnet import Devnet
from fedchain.chain import TaskClient, connect
from fedchain.chain.accounts import devnet_accounts
from fedchain.chain.batch import SignedUpdate, make_batch
from fedchain.chain.signing import sign_update
from fedchain.chain.task import GAS_LIMITS, encode_submit_update
from fedchain.chain.tx import read_nonces, send_raw_batch, sign_and_send, wait_receipts
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


@contextmanager
def _from_snapshot(w3: Any, automine: bool) -> Iterator[None]:
    """Run the body from the current chain state and return to it afterwards (Anvil's evm_snapshot / evm_revert)."""
    rpc = w3.provider.make_request
    snapshot = rpc("evm_snapshot", [])["result"]
    block = w3.eth.block_number
    rpc("evm_setAutomine", [automine])
    try:
        yield
    finally:
        rpc("evm_setAutomine", [True])
        if not rpc("evm_revert", [snapshot]).get("result") or w3.eth.block_number != block:
            raise RuntimeError("the devnet did not return to its snapshot")


def _confirm(w3: Any, hashes: list[bytes], automine: bool) -> tuple[list[dict[str, Any]], int]:
    """Every transaction's receipt, mining packed blocks one after another first when automining is off; the
    receipts and the number of blocks they took."""
    if not automine:
        rpc = w3.provider.make_request
        while True:
            pool = rpc("txpool_status", [])["result"]
            if int(pool["pending"], 16) == 0 and int(pool["queued"], 16) == 0:
                break
            rpc("evm_mine", [])
    receipts = wait_receipts(w3, hashes)
    blocks = {int(r["blockNumber"], 16) for r in receipts}
    return receipts, len(blocks)


def _summary(runs: dict[str, list[float]], blocks: dict[str, list[int]]) -> dict[str, Any]:
    pairs = [s / c for s, c in zip(runs["devices_sending"], runs["ceiling"], strict=True)]
    return {
        "updates_per_second": {name: round(statistics.median(v), 1) for name, v in runs.items()},
        "updates_per_second_runs": {name: [round(x, 1) for x in v] for name, v in runs.items()},
        "blocks_per_run": blocks,
        "devices_sending_fraction_pairs": [round(f, 3) for f in pairs],
        "devices_sending_fraction_of_ceiling": round(statistics.median(pairs), 3),
        "devices_sending_fraction_p10": round(_quantile(pairs, 0.1), 3),
        "ratio_of_medians": round(statistics.median(runs["devices_sending"]) / statistics.median(runs["ceiling"]), 3),
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(devices: int, repeats: int, workdir: Path) -> dict[str, Any]:
    with Devnet(workdir, "anvil", num_accounts=FIRST_DEVICE + devices + 1) as net:
        state = net.state
        assert state is not None
        w3 = connect(state.rpc_url)
        ipfs = IpfsClient(state.ipfs_api)
        accounts = devnet_accounts(range(FIRST_DEVICE, FIRST_DEVICE + devices))
        relayer = devnet_accounts([RELAYER])[0]
        addresses = [a.address for a in accounts]
        task = _task(w3, ipfs, addresses, relayer.address)
        clients = [TaskClient.for_account(w3, task.address, a) for a in accounts]
        digests = [_digest(i, task.address) for i in range(devices)]
        nonces = read_nonces(w3, addresses)  # the same in every run: each starts from the snapshot
        fees = clients[0].sender.fees()  # type: ignore[union-attr]
        presigned = [
            c.sender.sign_data(task.address, encode_submit_update(1, d, 10), GAS_LIMITS["submitUpdate"], fees)[1]  # type: ignore[union-attr]
            for c, d in zip(clients, digests, strict=True)
        ]
        gas_direct: list[int] = []

        def ceiling(automine: bool) -> tuple[float, int]:
            # Signed beforehand: the node's own rate for this transaction.
            started = time.perf_counter()
            hashes = [h for h in send_raw_batch(w3, presigned) if isinstance(h, bytes)]
            receipts, blocks = _confirm(w3, hashes, automine)
            elapsed = time.perf_counter() - started
            assert len(receipts) == devices and all(int(r["status"], 16) == 1 for r in receipts)
            gas_direct.extend(int(r["gasUsed"], 16) for r in receipts)
            return devices / elapsed, blocks

        def devices_sending(automine: bool) -> tuple[float, int]:
            for c, nonce in zip(clients, nonces, strict=True):
                c.sender.set_nonce(nonce)  # type: ignore[union-attr]
            started = time.perf_counter()
            # As DevicePool._submit does: fees once, call data encoded directly, signed while the sender sends.
            current = clients[0].sender.fees()  # type: ignore[union-attr]

            def sign(i: int) -> tuple[dict[str, Any], bytes]:
                data = encode_submit_update(1, digests[i], 10)
                return clients[i].sender.sign_data(task.address, data, GAS_LIMITS["submitUpdate"], current)  # type: ignore[union-attr]

            _, sent = sign_and_send(w3, devices, sign)
            receipts, blocks = _confirm(w3, [h for h in sent if isinstance(h, bytes)], automine)
            elapsed = time.perf_counter() - started
            assert len(receipts) == devices and all(int(r["status"], 16) == 1 for r in receipts)
            return devices / elapsed, blocks

        sides: dict[str, Callable[[bool], tuple[float, int]]] = {
            "ceiling": ceiling,
            "devices_sending": devices_sending,
        }
        modes: dict[str, Any] = {}
        for mode, automine in (("packed", False), ("automine", True)):
            runs: dict[str, list[float]] = {name: [] for name in sides}
            blocks: dict[str, list[int]] = {name: [] for name in sides}
            for repeat in range(repeats):
                # Alternating, so that neither side always meets the node (and the machine) second.
                for name in list(sides) if repeat % 2 == 0 else list(sides)[::-1]:
                    with _from_snapshot(w3, automine):
                        rate, used = sides[name](automine)
                    runs[name].append(rate)
                    blocks[name].append(used)
            modes[mode] = _summary(runs, blocks)

        # One by one, as a lone device process does (a sample of the devices: it is slow).
        one_by_one: list[float] = []
        gas_batch: list[int] = []
        sample = accounts[: min(devices, 50)]
        for _ in range(repeats):
            with _from_snapshot(w3, automine=True):
                started = time.perf_counter()
                for i, account in enumerate(sample):
                    TaskClient.for_account(w3, task.address, account).submit_update(1, digests[i], 10)
                one_by_one.append(len(sample) / (time.perf_counter() - started))

        # The same N updates relayed as one signed batch (the gas is the same every time: measured once).
        with _from_snapshot(w3, automine=True):
            chain_id = w3.eth.chain_id
            entries = [
                SignedUpdate(a.address, d, 10, sign_update(a, chain_id, task.address, 1, d, 10))
                for a, d in zip(accounts, digests, strict=True)
            ]
            batch = make_batch(task.address, chain_id, 1, entries)
            batch_cid = ipfs.add(batch.to_json())
            tx = TaskClient.for_account(w3, task.address, relayer).submit_update_batch(
                1, cid_to_digest(batch_cid), batch.root(), len(entries), batch.total_samples
            )
            gas_batch.append(tx.gas_used)
        return {
            "devices": devices,
            "repeats": repeats,
            "headline": "packed",
            **modes["packed"],
            "modes": modes,
            "one_by_one_updates_per_second": round(statistics.median(one_by_one), 1),
            "one_by_one_runs": [round(x, 1) for x in one_by_one],
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
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
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
