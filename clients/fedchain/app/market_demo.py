"""`fedchain market-demo`: a training job on the compute market, end to end on a local devnet.

A requester posts the demo plan (plan JSON and initial checkpoint on IPFS, payment in escrow); staked worker
processes claim and compute its units (two replicas each, some workers possibly cheating); a coordinator process
merges each stage and commits its checkpoint. The summary compares the final model with the same plan trained in
one process: with honest majorities on every unit they are the same bits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from web3 import Web3

from fedchain.app.devnet import Devnet, terminate
from fedchain.chain import (
    ChainEvent,
    EventFollower,
    JobParams,
    JobStatus,
    MarketClient,
    connect,
    deploy_market,
    devnet_account,
)
from fedchain.learning.units import (
    JobPlan,
    default_plan,
    evaluate_plan_model,
    initial_checkpoint,
    result_digest,
    train_single_process,
)
from fedchain.protocol.canonical_json import canonical_json
from fedchain.protocol.worker_env import WORKER_ENV
from fedchain.storage import IpfsClient, cid_to_digest, digest_to_cid

ETHER = 10**18
REQUESTER_INDEX = 0  # deploys the market and posts the job
COORDINATOR_INDEX = 1
FIRST_WORKER_INDEX = 2
# Transactions of these functions are the per-unit cost of the market.
UNIT_FUNCTIONS = (
    "claimUnit",
    "commitResult",
    "revealResult",
    "publishResult",
    "submitArbitration",
    "drawArbiter",
    "expireClaim",
    "expireReveal",
    "expireDispute",
)


@dataclass(frozen=True)
class MarketDemoOptions:
    workers: int = 4
    cheaters: int = 1
    lazy: int = 0  # evaluation: workers that copy other replicas instead of computing (never paid)
    chain: str = "ganache"
    workdir: Path = Path(".fedchain/market-demo")
    timeout: float = 900.0
    # The plan: the demo ECG job, shortened so that a run takes a few minutes on two busy cores.
    num_stages: int = 3
    units_per_stage: int = 4
    steps_per_unit: int = 100
    min_stake: int = ETHER
    slash_amount: int = ETHER // 2
    # Each worker's stake: minStake per open claim, so three (a unit computed, one waiting for verification, and
    # the one kept free to be drawn as an arbiter).
    worker_stake: int = 3 * ETHER
    price_per_unit: int = ETHER // 1000
    claim_duration: int = 600
    ray_local: int | None = None  # every worker computes up to this many claimed units at once on its own local Ray
    single_process_reference: bool = True  # train the plan in this process too, for the accuracy and bit check
    extra_env: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.workers < 2:
            raise ValueError("each unit needs two replicas from two different workers: at least 2 workers")
        if not 0 <= self.cheaters < self.workers:
            raise ValueError(f"cheaters must be between 0 and {self.workers - 1}")
        if not 0 <= self.lazy < self.workers:
            raise ValueError(f"lazy must be between 0 and {self.workers - 1}")
        honest = self.workers - self.cheaters - self.lazy
        if honest < 2:
            raise ValueError("at least two honest workers are needed for any unit to be accepted honestly")
        if self.cheaters and honest < 2 + (1 if self.cheaters > 1 else 0):
            raise ValueError("too few honest workers to arbitrate every dispute")
        for name in ("num_stages", "units_per_stage", "steps_per_unit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.worker_stake < self.min_stake:
            raise ValueError("worker_stake must be at least min_stake")
        if self.claim_duration < 10:
            raise ValueError("claim_duration must be at least 10 seconds (a unit must be computed within it)")

    def plan(self) -> JobPlan:
        return replace(
            default_plan(pin_data=True),
            num_stages=self.num_stages,
            units_per_stage=self.units_per_stage,
            steps_per_unit=self.steps_per_unit,
        )

    def worker_indices(self) -> list[int]:
        return [FIRST_WORKER_INDEX + i for i in range(self.workers)]

    def is_cheater(self, i: int) -> bool:
        """The last `cheaters` workers cheat."""
        return i >= self.workers - self.cheaters

    def is_lazy(self, i: int) -> bool:
        """The `lazy` workers just before the cheaters copy instead of computing."""
        return self.workers - self.cheaters - self.lazy <= i < self.workers - self.cheaters


def run_market_demo(options: MarketDemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns its summary (what `--json` prints)."""
    options.check()
    console = console or Console(stderr=True)
    started = time.perf_counter()
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    net = Devnet(workdir, options.chain, num_accounts=FIRST_WORKER_INDEX + options.workers + 1)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        state = net.start()
        state.save(workdir / "devnet.json")
        console.print(f"devnet: {options.chain} at {state.rpc_url}, IPFS at {state.ipfs_api} (logs in {workdir}/logs)")
        w3 = connect(state.rpc_url)
        ipfs = IpfsClient(state.ipfs_api)
        requester = devnet_account(REQUESTER_INDEX)
        market, deployed = deploy_market(w3, requester, options.min_stake, options.slash_amount)
        plan = options.plan()
        params = _publish_job(ipfs, plan, devnet_account(COORDINATOR_INDEX).address, options)
        job_id, posted = market.post_job(params)
        console.print(
            f"market {market.address}: job {job_id}, {plan.num_stages} stages x {plan.units_per_stage} units x "
            f"{plan.steps_per_unit} steps, escrow {params.escrow()} wei; {options.workers} workers "
            f"({options.cheaters} cheating)"
        )
        job_started = time.perf_counter()
        processes = _launch(options, state.rpc_url, state.ipfs_api, market.address, job_id, workdir / "logs")
        events = _follow(market, job_id, deployed.block_number, processes, options, console)
        job_seconds = time.perf_counter() - job_started
        for name, proc in processes.items():  # workers withdraw and exit once the job is finished
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                console.print(f"[yellow]{name} did not exit in time[/]")
                terminate(proc)
        # Withdrawals happen after JobFinished: collect the rest of the events.
        events += EventFollower(w3, market.address, market.abi, from_block=_last_block(events) + 1).poll()
        summary = _summary(options, w3, ipfs, market, job_id, plan, events, deployed.block_number)
        summary["gas"]["deploy"] = deployed.gas_used
        summary["gas"]["postJob"] = posted.gas_used
        summary["job_seconds"] = round(job_seconds, 2)
        summary["wall_seconds"] = round(time.perf_counter() - started, 2)
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        console.print(
            f"job finished in {job_seconds:.1f}s: final accuracy {summary['final_accuracy']:.4f} "
            f"(single process {summary['single_machine_accuracy']}), bit-identical: {summary['bit_identical']}, "
            f"{summary['gas_per_unit']} gas per unit, faults {summary['faults']}"
        )
        return summary
    finally:
        for proc in processes.values():
            terminate(proc)
        net.stop()


def _publish_job(ipfs: IpfsClient, plan: JobPlan, coordinator: str, options: MarketDemoOptions) -> JobParams:
    """Plan JSON, task description, data manifest and initial checkpoint on IPFS; the job's parameters."""
    plan_cid = ipfs.add(plan.to_json())
    spec_cid = ipfs.add(plan.task.to_json())
    manifest = {"dataset": plan.task.dataset.to_dict(), "data_digest": plan.data_digest}
    data_cid = ipfs.add(canonical_json(manifest, ascii_only=True, allow_nan=True))
    initial_cid = ipfs.put_weights(initial_checkpoint(plan))
    return JobParams(
        model_spec_digest=cid_to_digest(spec_cid),
        initial_checkpoint_digest=cid_to_digest(initial_cid),
        dataset_digest=cid_to_digest(data_cid),
        plan_digest=cid_to_digest(plan_cid),
        coordinator=coordinator,
        num_stages=plan.num_stages,
        units_per_stage=plan.units_per_stage,
        price_per_unit=options.price_per_unit,
        claim_duration=options.claim_duration,
    )


def _launch(
    options: MarketDemoOptions, rpc_url: str, ipfs_api: str, market: str, job_id: int, logs: Path
) -> dict[str, subprocess.Popen[bytes]]:
    common = ["--market", market, "--job", str(job_id), "--rpc-url", rpc_url, "--ipfs-api", ipfs_api]
    commands = {"coordinator": [*common, "--account", str(COORDINATOR_INDEX)]}
    for i, index in enumerate(options.worker_indices()):
        cmd = [*common, "--account", str(index), "--stake-wei", str(options.worker_stake)]
        if options.is_cheater(i):
            cmd.append("--cheat")
        if options.is_lazy(i):
            cmd.append("--lazy")
        if options.ray_local is not None:
            cmd += ["--ray-local", str(options.ray_local)]
        commands[f"worker-{i}"] = cmd
    env = {**os.environ, **WORKER_ENV, **options.extra_env}
    processes = {}
    for name, args in commands.items():
        role = "coordinator" if name == "coordinator" else "worker"
        with open(logs / f"{name}.log", "ab") as log:
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "fedchain.cli", role, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
    return processes


def _follow(
    market: MarketClient,
    job_id: int,
    from_block: int,
    processes: dict[str, subprocess.Popen[bytes]],
    options: MarketDemoOptions,
    console: Console,
) -> list[ChainEvent]:
    """The market's events until the job finishes (or is cancelled); fails early if the coordinator dies."""
    follower = EventFollower(market.w3, market.address, market.abi, from_block=from_block)
    events: list[ChainEvent] = []
    deadline = time.monotonic() + options.timeout
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job did not finish within {options.timeout:.0f}s; logs in {options.workdir}")
        coordinator = processes["coordinator"]
        new = follower.poll()
        events.extend(new)
        for event in new:
            if event.name == "CheckpointCommitted":
                cid = digest_to_cid(event.args["checkpointDigest"])
                console.print(f"stage {event.args['stage'] + 1} committed: {cid}")
            elif event.name == "WorkerSlashed":
                console.print(f"[red]worker {event.args['worker']} slashed[/] on unit {event.args['unitIndex']}")
        if any(e.name in ("JobFinished", "JobCancelled") for e in new):
            return events
        if coordinator.poll() is not None and market.job(job_id).status == JobStatus.OPEN:
            raise RuntimeError(f"the coordinator exited early (code {coordinator.returncode}); see its log")
        if all(p.poll() is not None for n, p in processes.items() if n != "coordinator"):
            raise RuntimeError("every worker exited before the job finished; see their logs")
        time.sleep(0.2)


def _last_block(events: list[ChainEvent]) -> int:
    return max((e.block_number for e in events), default=0)


def _gas_by_function(w3: Web3, market: MarketClient, from_block: int) -> dict[str, list[int]]:
    """Gas of every transaction sent to the market since `from_block`, by function name."""
    used: dict[str, list[int]] = defaultdict(list)
    for number in range(from_block, w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["to"] is None or Web3.to_checksum_address(tx["to"]) != market.address:
                continue
            fn, _ = market.contract.decode_function_input(tx["input"])
            used[fn.fn_name].append(int(w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"]))
    return used


def _summary(
    options: MarketDemoOptions,
    w3: Web3,
    ipfs: IpfsClient,
    market: MarketClient,
    job_id: int,
    plan: JobPlan,
    events: list[ChainEvent],
    from_block: int,
) -> dict[str, Any]:
    job = market.job(job_id)
    if job.status != JobStatus.FINISHED:
        raise RuntimeError(f"job {job_id} ended {job.status.name.lower()}, not finished")
    final_cid = digest_to_cid(job.final_model_digest)
    final = ipfs.get_weights(final_cid)
    final_eval = evaluate_plan_model(plan, final)
    addresses = [devnet_account(i).address for i in options.worker_indices()]
    paid: dict[str, int] = defaultdict(int)
    slash_rewards: dict[str, int] = defaultdict(int)
    slashed: dict[str, int] = defaultdict(int)
    forfeited: dict[str, int] = defaultdict(int)  # stake lost to an expired claim or a withheld reveal
    forfeit_rewards: dict[str, int] = defaultdict(int)  # forfeits credited to the replica that was kept waiting
    withdrawn: dict[str, int] = defaultdict(int)
    accepted_by_tx: dict[str, ChainEvent] = {}
    for e in events:
        if e.name == "UnitAccepted":
            paid[e.args["paidA"]] += int(e.args["pricePerUnit"])
            paid[e.args["paidB"]] += int(e.args["pricePerUnit"])
            accepted_by_tx[e.tx_hash] = e
        elif e.name == "Withdrawn":
            withdrawn[e.args["account"]] += int(e.args["amount"])
        elif e.name == "StakeForfeited":
            forfeited[e.args["worker"]] += int(e.args["amount"])
            if int(e.args["beneficiary"], 16) != 0:
                forfeit_rewards[e.args["beneficiary"]] += int(e.args["amount"])
    for e in events:
        if e.name == "WorkerSlashed":
            amount = int(e.args["amount"])
            slashed[e.args["worker"]] += amount
            accepted = accepted_by_tx[e.tx_hash]  # the arbiter's submission accepts and slashes in one transaction
            slash_rewards[accepted.args["paidA"]] += amount - amount // 2
            slash_rewards[accepted.args["paidB"]] += amount // 2
    gas = _gas_by_function(w3, market, from_block)
    arbitration_txs = {e.tx_hash for e in events if e.name == "ArbitrationSubmitted"}

    def count(name: str) -> int:
        return sum(1 for e in events if e.name == name)

    unit_gas = sum(sum(gas.get(name, [])) for name in UNIT_FUNCTIONS)
    summary: dict[str, Any] = {
        "market": market.address,
        "job": job_id,
        "chain": options.chain,
        "plan": {
            "num_stages": plan.num_stages,
            "units_per_stage": plan.units_per_stage,
            "steps_per_unit": plan.steps_per_unit,
            "digest": plan.digest().hex(),
        },
        "units": plan.num_units,
        "results_committed": count("ResultCommitted"),
        "results_published": sum(1 for e in events if e.name == "UnitAccepted" and e.tx_hash not in arbitration_txs),
        "arbitrations": len(arbitration_txs),
        "final_model_cid": final_cid,
        "final_accuracy": final_eval.accuracy,
        "final_loss": final_eval.loss,
        "stage_checkpoints": [
            digest_to_cid(e.args["checkpointDigest"]) for e in events if e.name == "CheckpointCommitted"
        ],
        "gas_per_unit": round(unit_gas / plan.num_units),
        "gas": {name: round(sum(v) / len(v)) for name, v in sorted(gas.items())},
        "gas_max": {name: max(v) for name, v in sorted(gas.items())},
        "faults": sum(1 for e in events if e.name == "WorkerSlashed"),
        "disputes": sum(1 for e in events if e.name == "UnitDisputed"),
        "arbiters_drawn": count("ArbiterDrawn"),
        "draws_scheduled": count("ArbiterDrawScheduled"),
        "disputes_expired": count("DisputeExpired"),
        "forfeits": count("StakeForfeited"),
        "resets": count("UnitReset"),
        "reveal_windows_expired": count("RevealExpired"),
        "workers": [],
        "paid": {a: paid.get(a, 0) for a in addresses},
        "slashed": {a: slashed.get(a, 0) for a in addresses},
        "price_per_unit": options.price_per_unit,
        "market_totals_conserved": market.totals().conserved,
    }
    for i, address in enumerate(addresses):
        info = market.worker(address)
        summary["workers"].append(
            {
                "address": address,
                "cheater": options.is_cheater(i),
                "lazy": options.is_lazy(i),
                "paid": paid.get(address, 0),
                "slash_rewards": slash_rewards.get(address, 0),
                "slashed": slashed.get(address, 0),
                "forfeited": forfeited.get(address, 0),
                "forfeit_rewards": forfeit_rewards.get(address, 0),
                "withdrawn": withdrawn.get(address, 0),
                "stake": info.stake,
                "completed_units": info.completed_units,
                "faults": info.faults,
            }
        )
    summary["single_machine_accuracy"] = None
    summary["bit_identical"] = None
    if options.single_process_reference:
        reference, accuracies = train_single_process(plan)
        summary["single_machine_accuracy"] = accuracies[-1]
        summary["single_machine_accuracy_per_stage"] = accuracies
        summary["single_machine_digest"] = result_digest(reference).hex()
        summary["final_digest"] = result_digest(final).hex()
        summary["bit_identical"] = summary["single_machine_digest"] == summary["final_digest"]
    return summary
