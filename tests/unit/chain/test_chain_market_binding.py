"""The ComputeMarket binding's pure parts: JobParams checks and encoding, view decoding, slot rules (no chain)."""

from __future__ import annotations

import hashlib

import pytest
from web3 import Web3

from fedchain.chain.artifacts import load_artifact
from fedchain.chain.market import (
    ARBITER_SLOT,
    MARKET_CONTRACT,
    MARKET_GAS_LIMITS,
    ZERO_ADDRESS,
    ZERO_DIGEST,
    JobInfo,
    JobParams,
    JobStatus,
    UnitInfo,
    UnitStatus,
    WorkerInfo,
    escrow_required,
    result_commitment,
    result_tag,
    stage_of,
    stage_units,
)

A = Web3.to_checksum_address("0x" + "11" * 20)
B = Web3.to_checksum_address("0x" + "22" * 20)
C = Web3.to_checksum_address("0x" + "33" * 20)


def d(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def params(**overrides) -> JobParams:
    values = {
        "model_spec_digest": d("spec"),
        "initial_checkpoint_digest": d("ckpt"),
        "dataset_digest": d("data"),
        "plan_digest": d("plan"),
        "coordinator": A,
        "num_stages": 2,
        "units_per_stage": 3,
        "price_per_unit": 10**15,
        "claim_duration": 600,
    }
    values.update(overrides)
    return JobParams(**values)


def test_job_params_tuple_follows_the_abi_struct_order() -> None:
    abi = load_artifact(MARKET_CONTRACT).abi
    post = next(e for e in abi if e.get("type") == "function" and e["name"] == "postJob")
    names = [c["name"] for c in post["inputs"][0]["components"]]
    assert names == [
        "modelSpecDigest",
        "initialCheckpointDigest",
        "datasetDigest",
        "planDigest",
        "coordinator",
        "numStages",
        "unitsPerStage",
        "pricePerUnit",
        "claimDuration",
    ]
    t = params().as_tuple()
    assert t[0] == d("spec") and t[3] == d("plan") and t[4] == A and t[5:] == (2, 3, 10**15, 600)


def test_escrow_is_three_prices_per_unit() -> None:
    assert escrow_required(2, 3, 7) == 2 * 3 * 7 * 3
    assert params().escrow() == 6 * 10**15 * 3
    assert params().num_units == 6


@pytest.mark.parametrize(
    "overrides",
    [
        {"plan_digest": ZERO_DIGEST},
        {"dataset_digest": b"\x01" * 31},
        {"coordinator": ZERO_ADDRESS},
        {"coordinator": "not an address"},
        {"num_stages": 0},
        {"units_per_stage": 0},
        {"units_per_stage": True},
        {"price_per_unit": 0},
        {"claim_duration": 0},
        {"num_stages": 2**16, "units_per_stage": 2**16},
    ],
)
def test_job_params_refuse_what_the_contract_would(overrides) -> None:
    with pytest.raises(ValueError):
        params(**overrides)


def test_stage_arithmetic() -> None:
    assert [stage_of(u, 3) for u in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert list(stage_units(1, 3)) == [3, 4, 5]


def test_job_info_decodes_the_view_tuple() -> None:
    values = (A, 1, 1, 3, B, 2, 3, 600, 1234, 10, 170, d("s"), d("c"), d("d"), d("p"), d("latest"), ZERO_DIGEST)
    job = JobInfo.from_tuple(values)
    assert job.status == JobStatus.OPEN and job.current_stage == 1 and job.coordinator == B
    assert job.stage_complete and list(job.current_units()) == [3, 4, 5] and job.num_units == 6
    assert job.latest_checkpoint_digest == d("latest")
    with pytest.raises(ValueError):
        JobInfo.from_tuple(values[:-1])


def unit(status, workers=(ZERO_ADDRESS,) * 3, deadlines=(0, 0, 0), seals=(ZERO_DIGEST,) * 2, draw_block=0) -> UnitInfo:
    revealed = [False, False]
    values = (status, 0, list(workers), list(deadlines), list(seals), revealed, 0, ZERO_DIGEST)
    return UnitInfo.from_tuple((*values, draw_block, 3 if draw_block else 0, 5000 if draw_block else 0))


def test_claimable_slot_mirrors_the_contract() -> None:
    now = 1000
    assert unit(UnitStatus.OPEN).claimable_slot(A, now) == 0
    one = unit(UnitStatus.OPEN, workers=(A, ZERO_ADDRESS, ZERO_ADDRESS), deadlines=(2000, 0, 0))
    assert one.claimable_slot(B, now) == 1
    assert one.claimable_slot(A.lower(), now) is None  # already worked on it
    assert one.slot_of(A) == 0 and one.slot_of(C) is None
    both = unit(UnitStatus.OPEN, workers=(A, B, ZERO_ADDRESS), deadlines=(2000, 2000, 0))
    assert both.claimable_slot(C, now) is None
    # an expired claim without a commitment frees its slot; one with a commitment does not
    expired = unit(UnitStatus.OPEN, workers=(A, B, ZERO_ADDRESS), deadlines=(2000, 900, 0))
    assert expired.claimable_slot(C, now) == 1
    committed = unit(
        UnitStatus.OPEN, workers=(A, B, ZERO_ADDRESS), deadlines=(900, 2000, 0), seals=(d("r"), ZERO_DIGEST)
    )
    assert committed.committed(0) and not committed.committed(1) and not committed.committed(ARBITER_SLOT)
    assert committed.claimable_slot(C, now) is None
    revealing = unit(UnitStatus.REVEALING, workers=(A, B, ZERO_ADDRESS), deadlines=(900, 900, 0), seals=(d("x"),) * 2)
    assert revealing.claimable_slot(C, now) is None
    disputed = unit(
        UnitStatus.DISPUTED, workers=(A, B, ZERO_ADDRESS), deadlines=(2000, 2000, 0), seals=(d("x"), d("y"))
    )
    # issue 13 (H1): a Disputed unit's arbiter is drawn, never claimed
    assert disputed.claimable_slot(C, now) is None
    assert disputed.claimable_slot(A, now) is None
    assert unit(UnitStatus.ACCEPTED).claimable_slot(C, now) is None


def test_draw_and_release_helpers() -> None:
    disputed = unit(
        UnitStatus.DISPUTED,
        workers=(A, B, ZERO_ADDRESS),
        deadlines=(2000, 2000, 0),
        seals=(d("x"), d("y")),
        draw_block=7,
    )
    assert disputed.arbiter is None and disputed.dispute_deadline == 5000 and disputed.draw_pool_size == 3
    assert disputed.draw_ready(7) and disputed.draw_ready(8) and not disputed.draw_ready(6)
    drawn = unit(
        UnitStatus.DISPUTED, workers=(A, B, C), deadlines=(2000, 2000, 2500), seals=(d("x"), d("y")), draw_block=7
    )
    assert drawn.arbiter == C and not drawn.draw_ready(8)
    lonely = unit(
        UnitStatus.OPEN, workers=(A, ZERO_ADDRESS, ZERO_ADDRESS), deadlines=(900, 0, 0), seals=(d("r"), ZERO_DIGEST)
    )
    assert lonely.lonely_since(0, 600) == 1500 and lonely.lonely_since(1, 600) is None
    assert unit(UnitStatus.OPEN).lonely_since(0, 600) is None


def test_tag_and_commitment_bind_unit_attempt_digest_and_worker() -> None:
    tag = result_tag(1, 2, 0, d("r"))
    assert len(tag) == 32 and tag != d("r")
    assert len({tag, result_tag(1, 2, 1, d("r")), result_tag(1, 3, 0, d("r")), result_tag(2, 2, 0, d("r"))}) == 4
    assert result_tag(1, 2, 0, d("s")) != tag
    assert result_commitment(A, tag) != result_commitment(B, tag)
    assert result_commitment(A.lower(), tag) == result_commitment(A, tag)
    with pytest.raises(ValueError):
        result_tag(1, 2, 0, b"short")


def test_worker_info_and_gas_limits() -> None:
    info = WorkerInfo.from_tuple((10**18, 1, 2, 0, True, 12))
    assert info.stake == 10**18 and info.open_claims == 1 and info.registered and info.active_since == 12
    # issue 13 (M3): minStake per open claim
    assert info.can_claim(10**18 // 2) and not info.can_claim(10**18)
    assert MARKET_GAS_LIMITS["drawArbiter"] >= 2 * 150_000
    # about twice the measured maxima of the contract tests
    assert MARKET_GAS_LIMITS["claimUnit"] >= 2 * 85_000
    assert MARKET_GAS_LIMITS["publishResult"] >= 2 * 140_000
    assert MARKET_GAS_LIMITS["submitArbitration"] >= 2 * 160_000
    assert MARKET_GAS_LIMITS["commitResult"] >= 2 * 70_000
    assert MARKET_GAS_LIMITS["commitCheckpoint"] >= 2 * 80_000
    assert MARKET_GAS_LIMITS["postJob"] >= 2 * 270_000
