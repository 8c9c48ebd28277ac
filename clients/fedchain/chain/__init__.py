"""Chain layer: contract artifacts, typed bindings over web3.py, transactions and events.

The names below are loaded on first use (PEP 562): `from fedchain.chain import connect` imports the connection
module only, not the market's and the task's bindings with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedchain._lazy import lazy_exports

if TYPE_CHECKING:
    from fedchain.chain.accounts import devnet_account, resolve_account
    from fedchain.chain.batch import EntryVerdict, SignedUpdate, UpdateBatch, batch_mismatch, make_batch, screen_batch
    from fedchain.chain.connection import connect
    from fedchain.chain.errors import ArtifactMissing, ChainError, ChainUnavailable, ContractRevert
    from fedchain.chain.events import ChainEvent, EventFollower
    from fedchain.chain.inputs import (
        BatchSubmission,
        fold_batch_inputs_hash,
        fold_inputs_hash,
        initial_inputs_hash,
        inputs_hash,
    )
    from fedchain.chain.market import (
        MARKET_GAS_LIMITS,
        JobInfo,
        JobParams,
        JobStatus,
        MarketClient,
        MarketTotals,
        UnitInfo,
        UnitStatus,
        WorkerInfo,
        deploy_market,
        escrow_required,
    )
    from fedchain.chain.merkle import batch_leaf, merkle_proof, merkle_root
    from fedchain.chain.signing import recover_update_signer, sign_update, update_hash
    from fedchain.chain.task import (
        GAS_LIMITS,
        RELAYER_ROLE,
        AggregationState,
        AggregatorInfo,
        DeviceInfo,
        Phase,
        PrivacyLedger,
        RoundInfo,
        TaskClient,
        TaskConfig,
        deploy_task,
        epsilon_to_micro,
        result_commitment,
        result_key,
    )

_SOURCES = {
    "fedchain.chain.accounts": ("devnet_account", "resolve_account"),
    "fedchain.chain.connection": ("connect",),
    "fedchain.chain.errors": ("ArtifactMissing", "ChainError", "ChainUnavailable", "ContractRevert"),
    "fedchain.chain.events": ("ChainEvent", "EventFollower"),
    "fedchain.chain.batch": (
        "EntryVerdict",
        "SignedUpdate",
        "UpdateBatch",
        "batch_mismatch",
        "make_batch",
        "screen_batch",
    ),
    "fedchain.chain.inputs": (
        "BatchSubmission",
        "fold_batch_inputs_hash",
        "fold_inputs_hash",
        "initial_inputs_hash",
        "inputs_hash",
    ),
    "fedchain.chain.merkle": ("batch_leaf", "merkle_proof", "merkle_root"),
    "fedchain.chain.signing": ("recover_update_signer", "sign_update", "update_hash"),
    "fedchain.chain.market": (
        "MARKET_GAS_LIMITS",
        "JobInfo",
        "JobParams",
        "JobStatus",
        "MarketClient",
        "MarketTotals",
        "UnitInfo",
        "UnitStatus",
        "WorkerInfo",
        "deploy_market",
        "escrow_required",
    ),
    "fedchain.chain.task": (
        "GAS_LIMITS",
        "RELAYER_ROLE",
        "AggregationState",
        "AggregatorInfo",
        "DeviceInfo",
        "Phase",
        "PrivacyLedger",
        "RoundInfo",
        "TaskClient",
        "TaskConfig",
        "deploy_task",
        "epsilon_to_micro",
        "result_commitment",
        "result_key",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)

__all__ = [
    "GAS_LIMITS",
    "MARKET_GAS_LIMITS",
    "RELAYER_ROLE",
    "AggregationState",
    "AggregatorInfo",
    "ArtifactMissing",
    "BatchSubmission",
    "ChainError",
    "ChainEvent",
    "ChainUnavailable",
    "ContractRevert",
    "DeviceInfo",
    "EntryVerdict",
    "EventFollower",
    "JobInfo",
    "JobParams",
    "JobStatus",
    "MarketClient",
    "MarketTotals",
    "Phase",
    "PrivacyLedger",
    "RoundInfo",
    "SignedUpdate",
    "TaskClient",
    "TaskConfig",
    "UnitInfo",
    "UnitStatus",
    "UpdateBatch",
    "WorkerInfo",
    "batch_leaf",
    "batch_mismatch",
    "connect",
    "deploy_market",
    "deploy_task",
    "devnet_account",
    "epsilon_to_micro",
    "escrow_required",
    "fold_batch_inputs_hash",
    "fold_inputs_hash",
    "initial_inputs_hash",
    "inputs_hash",
    "make_batch",
    "merkle_proof",
    "merkle_root",
    "recover_update_signer",
    "resolve_account",
    "result_commitment",
    "result_key",
    "screen_batch",
    "sign_update",
    "update_hash",
]
