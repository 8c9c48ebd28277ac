"""Chain layer: contract artifacts, typed bindings over web3.py, transactions and events."""

from fedchain.chain.accounts import devnet_account, resolve_account
from fedchain.chain.connection import connect
from fedchain.chain.errors import ArtifactMissing, ChainError, ChainUnavailable, ContractRevert
from fedchain.chain.events import ChainEvent, EventFollower
from fedchain.chain.inputs import fold_inputs_hash, initial_inputs_hash, inputs_hash
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
from fedchain.chain.task import (
    GAS_LIMITS,
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

__all__ = [
    "GAS_LIMITS",
    "MARKET_GAS_LIMITS",
    "AggregationState",
    "AggregatorInfo",
    "ArtifactMissing",
    "ChainError",
    "ChainEvent",
    "ChainUnavailable",
    "ContractRevert",
    "DeviceInfo",
    "EventFollower",
    "JobInfo",
    "JobParams",
    "JobStatus",
    "MarketClient",
    "MarketTotals",
    "Phase",
    "PrivacyLedger",
    "RoundInfo",
    "TaskClient",
    "TaskConfig",
    "UnitInfo",
    "UnitStatus",
    "WorkerInfo",
    "connect",
    "deploy_market",
    "deploy_task",
    "devnet_account",
    "epsilon_to_micro",
    "escrow_required",
    "fold_inputs_hash",
    "initial_inputs_hash",
    "inputs_hash",
    "resolve_account",
    "result_commitment",
    "result_key",
]
