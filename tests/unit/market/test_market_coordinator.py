"""The market's coordinator: its pure decisions (what to do with a job view, what a stage's merge reads, which
refused commits mean "moved on") on real job views and real weights, then its I/O shell against the real
ComputeMarket on Anvil with the real Kubo: two replicas accept every unit, the coordinator commits each stage's
merge, and its final model is the single-process model, bit for bit."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedchain.app.devnet import Devnet
from fedchain.chain import (
    ContractRevert,
    JobInfo,
    JobParams,
    JobStatus,
    MarketClient,
    connect,
    deploy_market,
    devnet_account,
)
from fedchain.chain.market import ZERO_DIGEST, result_commitment, result_tag
from fedchain.learning.types import Weights
from fedchain.learning.units import (
    JobPlan,
    default_plan,
    initial_checkpoint,
    merge_stage,
    result_digest,
    run_unit,
    train_single_process,
)
from fedchain.market.coordinator import (
    CoordinatorReport,
    CoordinatorSettings,
    CoordinatorStep,
    MarketCoordinator,
    commit_moved_on,
    coordinator_step,
    stage_digests,
)
from fedchain.storage import IpfsClient, cid_to_digest

ETHER = 10**18
COORDINATOR, WORKER_A, WORKER_B = 1, 2, 3  # devnet account indices (0 deploys and posts)


def d(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def job_view(status: JobStatus, stage: int, accepted: int, units_per_stage: int = 3, num_stages: int = 2) -> JobInfo:
    """A `job(jobId)` view as the contract returns it (decoded by the binding, not built field by field)."""
    values = (Web3.to_checksum_address("0x" + "11" * 20), int(status), stage, accepted)
    coordinator = Web3.to_checksum_address("0x" + "22" * 20)
    config = (coordinator, num_stages, units_per_stage, 600, 0, 10**15, 0)
    digests = (d("spec"), d("ckpt0"), d("data"), d("plan"), d(f"ckpt{stage}"), ZERO_DIGEST)
    return JobInfo.from_tuple((*values, *config, *digests))


def tiny_plan() -> JobPlan:
    return replace(default_plan(pin_data=True), num_stages=2, units_per_stage=2, steps_per_unit=5)


# ---------------------------------------------------------------------------------------------------------------
# Pure decisions.


@pytest.mark.parametrize("status", [JobStatus.FINISHED, JobStatus.CANCELLED, JobStatus.NONE])
def test_a_job_that_is_not_open_is_finished_even_with_every_unit_accepted(status: JobStatus) -> None:
    assert coordinator_step(job_view(status, 1, 3)) == CoordinatorStep.FINISHED
    assert coordinator_step(job_view(status, 0, 0)) == CoordinatorStep.FINISHED


def test_an_open_job_commits_only_when_every_unit_of_its_stage_is_accepted() -> None:
    assert coordinator_step(job_view(JobStatus.OPEN, 0, 3)) == CoordinatorStep.COMMIT
    assert coordinator_step(job_view(JobStatus.OPEN, 1, 3)) == CoordinatorStep.COMMIT
    for accepted in (0, 1, 2):
        assert coordinator_step(job_view(JobStatus.OPEN, 0, accepted)) == CoordinatorStep.WAIT


def test_stage_digests_read_the_latest_checkpoint_and_the_current_stage_in_unit_index_order() -> None:
    accepted = {u: d(f"result{u}") for u in range(6)}
    asked: list[int] = []

    def lookup(unit_index: int) -> bytes:
        asked.append(unit_index)
        return accepted[unit_index]

    checkpoint, results = stage_digests(job_view(JobStatus.OPEN, 1, 3), lookup)
    assert checkpoint == d("ckpt1")
    assert results == [d("result3"), d("result4"), d("result5")]
    assert asked == [3, 4, 5]  # only the current stage's units, never the previous stage's
    assert stage_digests(job_view(JobStatus.OPEN, 0, 3), accepted.__getitem__)[1] == [accepted[u] for u in range(3)]


def test_only_reverts_that_mean_the_job_moved_on_are_swallowed() -> None:
    # the stage was committed already (by us, before a restart), or the job ended or was cancelled
    for error in ("WrongStage", "JobNotOpen", "StageIncomplete"):
        assert commit_moved_on(ContractRevert(error))
    for error in ("NotCoordinator", "ZeroDigest", ""):
        assert not commit_moved_on(ContractRevert(error, raw="0x"))


def test_stage_merges_of_real_units_in_unit_index_order_are_the_single_process_model() -> None:
    """What the coordinator computes from the digests it reads, on a real plan: stage by stage it is the plan
    trained in one process (the bits the market promises)."""
    plan = tiny_plan()
    store: dict[bytes, Weights] = {}
    checkpoint = initial_checkpoint(plan)
    store[result_digest(checkpoint)] = checkpoint
    latest = result_digest(checkpoint)
    for stage in range(plan.num_stages):
        accepted: dict[int, bytes] = {}
        for index in range(plan.units_per_stage):
            weights = run_unit(plan, store[latest], stage, index)
            accepted[stage * plan.units_per_stage + index] = result_digest(weights)
            store[result_digest(weights)] = weights
        values = (Web3.to_checksum_address("0x" + "11" * 20), 1, stage, plan.units_per_stage)
        config = (values[0], plan.num_stages, plan.units_per_stage, 600, 0, 1, 0)
        job = JobInfo.from_tuple((*values, *config, d("s"), d("c"), d("d"), d("p"), latest, ZERO_DIGEST))
        assert coordinator_step(job) == CoordinatorStep.COMMIT
        checkpoint_digest, result_digests = stage_digests(job, accepted.__getitem__)
        merged = merge_stage(store[checkpoint_digest], [store[r] for r in result_digests])
        latest = result_digest(merged)
        store[latest] = merged
    final, _ = train_single_process(plan)
    assert latest == result_digest(final)
    assert latest != result_digest(initial_checkpoint(plan))


# ---------------------------------------------------------------------------------------------------------------
# The I/O shell on Anvil and Kubo.


@dataclass
class MarketJob:
    net: Devnet
    w3: Web3
    ipfs: IpfsClient
    market: MarketClient
    job_id: int
    plan: JobPlan

    def settings(self) -> CoordinatorSettings:
        assert self.net.state is not None
        state = self.net.state
        return CoordinatorSettings(self.market.address, state.rpc_url, state.ipfs_api, self.job_id, idle_wait=0.5)

    def worker(self, index: int) -> MarketClient:
        return MarketClient.for_account(self.w3, self.market.address, devnet_account(index))

    def accept_stage(self, stage: int, checkpoint: Weights) -> list[Weights]:
        """Both workers compute every unit of `stage` and agree: claim, commit, reveal (slot 0), publish (slot 1).
        The results go to IPFS first, as a publishing worker puts them there."""
        a, b = self.worker(WORKER_A), self.worker(WORKER_B)
        results = []
        for index in range(self.plan.units_per_stage):
            unit_index = stage * self.plan.units_per_stage + index
            weights = run_unit(self.plan, checkpoint, stage, index)
            digest = cid_to_digest(self.ipfs.put_weights(weights))
            tag = result_tag(self.job_id, unit_index, 0, digest)
            for client, index_ in ((a, WORKER_A), (b, WORKER_B)):
                client.claim_unit(self.job_id, unit_index)
                client.commit_result(self.job_id, unit_index, result_commitment(devnet_account(index_).address, tag))
            a.reveal_result(self.job_id, unit_index, tag)
            b.publish_result(self.job_id, unit_index, digest)
            assert self.market.accepted_digest(self.job_id, unit_index) == digest
            results.append(weights)
        return results


@pytest.fixture(scope="module")
def market_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarketJob]:
    net = Devnet(tmp_path_factory.mktemp("devnet-anvil"), "anvil", num_accounts=5)
    state = net.start()
    try:
        w3 = connect(state.rpc_url)
        ipfs = IpfsClient(state.ipfs_api)
        market, _ = deploy_market(w3, devnet_account(0), ETHER, ETHER // 2)
        plan = tiny_plan()
        params = JobParams(
            model_spec_digest=d("spec"),
            initial_checkpoint_digest=cid_to_digest(ipfs.put_weights(initial_checkpoint(plan))),
            dataset_digest=d("data"),
            plan_digest=cid_to_digest(ipfs.add(plan.to_json())),
            coordinator=devnet_account(COORDINATOR).address,
            num_stages=plan.num_stages,
            units_per_stage=plan.units_per_stage,
            price_per_unit=ETHER // 1000,
            claim_duration=600,
        )
        job_id, _ = market.post_job(params)
        for index in (WORKER_A, WORKER_B):
            MarketClient.for_account(w3, market.address, devnet_account(index)).register_worker(3 * ETHER)
        yield MarketJob(net, w3, ipfs, market, job_id, plan)
    finally:
        net.stop()


def coordinator_account() -> LocalAccount:
    return devnet_account(COORDINATOR)


def run_within(coordinator: MarketCoordinator, timeout: float = 30) -> CoordinatorReport:
    """`coordinator.run()` on a daemon thread: a coordinator that never sees its job end fails here, not hangs."""
    reports: list[CoordinatorReport] = []
    thread = threading.Thread(target=lambda: reports.append(coordinator.run()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the coordinator did not return within {timeout}s"
    assert reports, "the coordinator raised (see the thread's traceback above)"
    return reports[0]


def test_only_the_jobs_coordinator_may_coordinate_it(market_job: MarketJob) -> None:
    with pytest.raises(PermissionError):
        MarketCoordinator(market_job.settings(), devnet_account(WORKER_A))


def test_coordinator_commits_every_stage_and_finishes_with_the_single_process_model(market_job: MarketJob) -> None:
    plan, job_id, market = market_job.plan, market_job.job_id, market_job.market
    coordinator = MarketCoordinator(market_job.settings(), coordinator_account())
    initial = initial_checkpoint(plan)

    # stage 0: committed through commit_stage, then the same (now stale) view again, as after a restart
    stage0 = market_job.accept_stage(0, initial)
    view = market.job(job_id)
    assert coordinator_step(view) == CoordinatorStep.COMMIT
    cid0 = coordinator.commit_stage(view)
    merged0 = merge_stage(initial, stage0)
    assert cid0 is not None and cid_to_digest(cid0) == market.checkpoint_digest(job_id, 0)
    assert result_digest(market_job.ipfs.get_weights(cid0)) == result_digest(merged0)
    assert coordinator.commit_stage(view) is None  # WrongStage: moved on, nothing committed twice
    assert coordinator.report.checkpoints == [cid0] and coordinator.report.gas_used > 0
    assert coordinator_step(market.job(job_id)) == CoordinatorStep.WAIT

    # stage 1: run() commits the last stage, which finishes the job, and returns
    market_job.accept_stage(1, merged0)
    report = run_within(coordinator)
    assert report.final_status == "finished"
    assert len(report.checkpoints) == 2 and report.checkpoints[0] == cid0
    job = market.job(job_id)
    assert job.status == JobStatus.FINISHED
    assert job.final_model_digest == cid_to_digest(report.checkpoints[1]) == market.checkpoint_digest(job_id, 1)
    final, _ = train_single_process(plan)
    assert result_digest(market_job.ipfs.get_weights(report.checkpoints[1])) == result_digest(final)

    # a restarted coordinator sees the finished job and stops at once, committing nothing
    again = run_within(MarketCoordinator(market_job.settings(), coordinator_account()))
    assert again.final_status == "finished" and again.checkpoints == [] and again.gas_used == 0
