"""Explorer benchmark (`make bench`): page and API latency on a chain with 100 rounds x 20 devices.

The chain is built quickly, without training: FederatedTask is driven directly on Anvil with the devnet's accounts
(devices' submissions signed locally and sent as one JSON-RPC batch per round; then the one aggregator, threshold 1,
commits its result, which opens the reveal window at once, and reveals it, which finalises the round), with tiny
safetensors updates, models and real aggregation reports (the aggregator's format) on the IPFS service. Then the
index is built from scratch (timed), reopened (incremental: nothing to do), and `fedchain explorer` is started as its
own process and each page and API route is requested repeatedly. Results: reports/explorer.json (p50/p95/max in
milliseconds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from rich.console import Console

from fedchain.app.devnet import Devnet, free_port, terminate
from fedchain.chain import TaskConfig, connect, deploy_task, devnet_account, inputs_hash
from fedchain.chain.task import result_commitment
from fedchain.explorer.index import Indexer
from fedchain.explorer.rpc import JsonRpc
from fedchain.storage import IpfsClient, cid_to_digest, encode_weights

TARGET_MS = 200.0
SUBMIT = keccak(text="submitUpdate(uint32,bytes32,uint64)")[:4]
COMMIT = keccak(text="commitResult(uint32,bytes32)")[:4]
REVEAL = keccak(text="revealResult(uint32,bytes20,bytes32,bytes32,uint32,uint64,bytes32)")[:4]
AGGREGATION_WINDOW_S = 3600
GWEI = 10**9


class ChainBuilder:
    """Drives one FederatedTask through many rounds as fast as the node allows."""

    def __init__(self, rpc_url: str, ipfs: IpfsClient, devices: int, rounds: int, console: Console) -> None:
        self.w3 = connect(rpc_url)
        self.rpc = JsonRpc(rpc_url)
        self.ipfs = ipfs
        self.rounds = rounds
        self.console = console
        self.admin = devnet_account(0)
        self.aggregator = devnet_account(1)
        self.devices = [devnet_account(2 + i) for i in range(devices)]
        self.chain_id = self.w3.eth.chain_id
        self.pool = ThreadPoolExecutor(max_workers=4)

    def _sign(self, account: LocalAccount, nonce: int, to: str, data: bytes, gas: int) -> str:
        tx = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "to": to,
            "data": data,
            "gas": gas,
            "value": 0,
            "maxFeePerGas": 50 * GWEI,
            "maxPriorityFeePerGas": 1 * GWEI,
        }
        return "0x" + account.sign_transaction(tx).raw_transaction.hex()

    def _wait(self, hashes: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
            if all(r is not None for r in receipts):
                failed = [r["transactionHash"] for r in receipts if int(r["status"], 16) != 1]
                if failed:
                    raise RuntimeError(f"transactions reverted: {failed[:3]}")
                return receipts
            if time.monotonic() > deadline:
                raise TimeoutError("transactions not mined in time")
            time.sleep(0.02)

    def build(self) -> str:
        spec_cid = self.ipfs.add(json.dumps({"bench": True, "model": "tiny"}).encode())
        initial = self.ipfs.put_weights({"w": np.zeros(4, dtype=np.float32)}, {"fedchain.kind": "global-model"})
        config = TaskConfig(
            model_spec_digest=cid_to_digest(spec_cid),
            initial_model_digest=cid_to_digest(initial),
            num_rounds=self.rounds,
            min_updates=len(self.devices),
            max_updates=len(self.devices),
            round_duration=3600,
            aggregator_threshold=1,
            aggregation_duration=AGGREGATION_WINDOW_S,
        )
        task, _ = deploy_task(self.w3, self.admin, config)
        task.approve_devices([d.address for d in self.devices])
        task.grant_aggregator(self.aggregator.address)
        task.start()
        address = task.address
        global_cid = initial
        started = time.perf_counter()
        for r in range(1, self.rounds + 1):
            global_cid = self._round(address, r, global_cid)
            if r % 10 == 0:
                rate = r / (time.perf_counter() - started)
                self.console.print(f"  chain: round {r}/{self.rounds} ({rate:.1f} rounds/s)")
        return address

    def _round(self, task: str, r: int, global_cid: str) -> str:
        blobs = [
            encode_weights({"w": np.full(4, r * 1000 + i, dtype=np.float32)}, {"fedchain.train_seconds": "0.01"})
            for i in range(len(self.devices))
        ]
        cids = list(self.pool.map(self.ipfs.add, blobs))
        samples = [40 + (r + i) % 17 for i in range(len(self.devices))]
        raw = [
            self._sign(
                device,
                r - 1,
                task,
                SUBMIT + abi_encode(["uint32", "bytes32", "uint64"], [r, cid_to_digest(cid), n]),
                100_000,
            )
            for device, cid, n in zip(self.devices, cids, samples, strict=True)
        ]
        hashes = self.rpc.batch([("eth_sendRawTransaction", [tx]) for tx in raw])
        receipts = self._wait(hashes)
        order = sorted(
            range(len(receipts)),
            key=lambda i: (int(receipts[i]["blockNumber"], 16), int(receipts[i]["transactionIndex"], 16)),
        )
        subs = [(self.devices[i].address, cid_to_digest(cids[i]), samples[i]) for i in order]
        inputs = inputs_hash(task, r, subs)
        rejected_index = 0 if r % 10 == 0 else None  # every tenth round the aggregator rejects one update
        accepted = [
            {"device": self.devices[i].address, "cid": cids[i], "num_samples": samples[i], "tx_hash": hashes[i]}
            for i in range(len(self.devices))
            if i != rejected_index
        ]
        rejected = (
            []
            if rejected_index is None
            else [
                {
                    "device": self.devices[0].address,
                    "cid": cids[0],
                    "num_samples": samples[0],
                    "tx_hash": hashes[0],
                    "reason": "NonFiniteWeights",
                    "detail": "tensor 'w' holds NaN (benchmark-injected)",
                }
            ]
        )
        model_cid = self.ipfs.put_weights({"w": np.full(4, r, dtype=np.float32)}, {"fedchain.round": str(r)})
        report = {
            "task": task,
            "round": r,
            "strategy": "fedavg",
            "strategy_params": {},
            "inputs_hash": "0x" + inputs.hex(),
            "previous_model_cid": global_cid,
            "model_cid": model_cid,
            "accepted": accepted,
            "rejected": rejected,
            "metrics": {"accuracy": 0.6 + 0.35 * (1 - math.exp(-r / 20)), "loss": 0.7 * math.exp(-r / 30) + 0.1},
            "server_state_cid": "",
            "note": "",
        }
        report_cid = self.ipfs.add(json.dumps(report, sort_keys=True).encode())
        # Commit, then reveal: two transactions of the aggregator per round (nonces 2(r-1) and 2(r-1)+1), sent in
        # one batch; the node mines them in nonce order. Its commitment (n = k = 1) opens the reveal window at once.
        model, report_digest = cid_to_digest(model_cid), cid_to_digest(report_cid)
        salt = keccak(text=f"explorer bench salt {r}")
        commitment = result_commitment(
            task, r, self.aggregator.address, inputs, model, report_digest, len(accepted), salt
        )
        commit = COMMIT + abi_encode(["uint32", "bytes32"], [r, commitment])
        reveal = REVEAL + abi_encode(
            ["uint32", "bytes20", "bytes32", "bytes32", "uint32", "uint64", "bytes32"],
            [r, inputs, model, report_digest, len(accepted), 0, salt],  # epsilonMicro 0: no DP ledger
        )
        nonce = 2 * (r - 1)
        raw = [
            self._sign(self.aggregator, nonce, task, commit, 150_000),
            self._sign(self.aggregator, nonce + 1, task, reveal, 400_000),
        ]
        self._wait(self.rpc.batch([("eth_sendRawTransaction", [tx]) for tx in raw]))
        return model_cid


def measure(client: httpx.Client, path: str, repeat: int) -> dict[str, Any]:
    for _ in range(2):  # warm-up: first render compiles templates, first IPFS fetch fills the cache
        client.get(path)
    times: list[float] = []
    status = 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        status = response.status_code
    times.sort()
    p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
    return {
        "path": path,
        "status": status,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(times[-1], 2),
        "under_target": p95 < TARGET_MS,
    }


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the explorer exited with code {proc.returncode}")
        try:
            health = httpx.get(base + "/api/health", timeout=2).json()
            if health.get("lag") == 0:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError("the explorer did not catch up in time")


def run(devices: int, rounds: int, repeat: int, workdir: Path, console: Console) -> dict[str, Any]:
    net = Devnet(workdir / "devnet", "anvil", num_accounts=2 + devices + 1)
    explorer: subprocess.Popen[bytes] | None = None
    try:
        state = net.start()
        ipfs = IpfsClient(state.ipfs_api)
        console.print(f"[bold]explorer bench[/]: building {rounds} rounds x {devices} devices on Anvil")
        started = time.perf_counter()
        task = ChainBuilder(state.rpc_url, ipfs, devices, rounds, console).build()
        build_chain_s = time.perf_counter() - started

        index_path = workdir / "index.sqlite"
        started = time.perf_counter()
        indexer = Indexer(index_path, JsonRpc(state.rpc_url), ipfs)
        blocks = indexer.sync()
        while indexer.fetch_reports(limit=200):
            pass
        index_build_s = time.perf_counter() - started
        counts = {
            t: indexer.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("blocks", "txs", "logs", "rounds", "updates", "reports")
        }
        indexer.close()
        started = time.perf_counter()
        reopened = Indexer(index_path, JsonRpc(state.rpc_url), ipfs)
        again = reopened.sync()
        reopened.close()
        index_resume_s = time.perf_counter() - started
        console.print(
            f"  index: {blocks} blocks in {index_build_s:.1f}s from scratch; reopened and resumed in "
            f"{index_resume_s:.2f}s ({again} new blocks)"
        )

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "fedchain.cli", "explorer", "--port", str(port)]
        cmd += ["--rpc-url", state.rpc_url, "--ipfs-api", state.ipfs_api, "--index", str(index_path)]
        with open(workdir / "explorer.log", "ab") as log:
            explorer = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_ready(base, explorer)

        with httpx.Client(base_url=base, timeout=30) as client:
            mid = rounds // 2
            round_data = client.get(f"/api/task/{task}/round/{mid}").json()
            device = round_data["updates"][0]["device"]
            aggregator = round_data["agreement"]["entries"][0]["aggregator"]
            tx_hash = round_data["updates"][0]["tx_hash"]
            block = round_data["updates"][0]["block_number"]
            report_cid = round_data["report_cid"]
            pages = [
                "/",
                f"/task/{task}",
                f"/task/{task}/round/{mid}",
                f"/task/{task}/round/{mid}/update/{device}",
                f"/address/{device}",
                f"/address/{aggregator}",
                f"/tx/{tx_hash}",
                f"/block/{block}",
                f"/ipfs/{report_cid}",
                f"/search?q={task}/{mid}",
            ]
            apis = [
                "/api/overview",
                f"/api/task/{task}",
                f"/api/task/{task}/round/{mid}",
                f"/api/task/{task}/round/{mid}/update/{device}",
                f"/api/address/{device}",
                f"/api/address/{aggregator}",
                f"/api/tx/{tx_hash}",
                f"/api/block/{block}",
                f"/api/search?q={tx_hash}",
            ]
            results = {"pages": [measure(client, p, repeat) for p in pages]}
            results["api"] = [measure(client, p, repeat) for p in apis]
        for group in results.values():
            for row in group:
                mark = "ok" if row["under_target"] else "SLOW"
                console.print(f"  {row['p50_ms']:7.1f} ms p50 {row['p95_ms']:7.1f} ms p95  {mark}  {row['path']}")
        everything = [row for group in results.values() for row in group]
        return {
            "chain": "anvil",
            "rounds": rounds,
            "devices": devices,
            "task": task,
            "build_chain_seconds": round(build_chain_s, 2),
            "index_build_seconds": round(index_build_s, 2),
            "index_resume_seconds": round(index_resume_s, 3),
            "indexed": counts,
            "repeat": repeat,
            "target_ms": TARGET_MS,
            "all_under_target": all(r["under_target"] for r in everything),
            "worst_p95_ms": max(r["p95_ms"] for r in everything),
            **results,
        }
    finally:
        if explorer is not None:
            terminate(explorer)
        net.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/explorer.json"))
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="fedchain-explorer-bench-") as tmp:
        result = run(args.devices, args.rounds, args.repeat, Path(tmp), console)
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    verdict = "all under" if result["all_under_target"] else "NOT all under"
    console.print(f"wrote {args.out}: worst p95 {result['worst_p95_ms']} ms ({verdict} {TARGET_MS:.0f} ms)")
    if not result["all_under_target"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
