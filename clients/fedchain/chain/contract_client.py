"""What every typed contract binding shares: the compiled contract's ABI and error decoder, deployment, a client per
account, and sending a transaction with the contract's per-call gas limit. TaskClient, BufferedTaskClient and
MarketClient add their contract's views and calls on top."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from fedchain.chain.artifacts import load_artifact
from fedchain.chain.tx import ErrorDecoder, TransactionSender, TxResult

AGGREGATOR_ROLE = Web3.keccak(text="AGGREGATOR_ROLE")


@functools.cache
def error_decoder(contract_name: str) -> ErrorDecoder:
    """The custom-error decoder of a compiled contract (one per contract and process)."""
    return ErrorDecoder(load_artifact(contract_name).abi)


class ContractClient:
    """One deployed contract seen by one account (read-only when `sender` is None)."""

    CONTRACT_NAME: ClassVar[str]
    # Gas limits per function name, so the hot path needs no estimate (TransactionSender.transact); others estimate.
    GAS_LIMITS: ClassVar[Mapping[str, int]] = {}

    def __init__(
        self, w3: Web3, address: str, sender: TransactionSender | None = None, *, contract: Contract | None = None
    ) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.abi = load_artifact(self.CONTRACT_NAME).abi
        self.contract: Contract = (
            contract if contract is not None else w3.eth.contract(address=self.address, abi=self.abi)
        )
        self.sender = sender

    @classmethod
    def decoder(cls) -> ErrorDecoder:
        return error_decoder(cls.CONTRACT_NAME)

    @classmethod
    def for_account(cls, w3: Web3, address: str, account: LocalAccount) -> Self:
        return cls(w3, address, TransactionSender(w3, account, cls.decoder()))

    @classmethod
    def deploy(cls, w3: Web3, admin: LocalAccount, *constructor_args: Any) -> tuple[Self, TxResult]:
        """Deploy the contract from `admin` with these constructor arguments; the client sends as `admin`."""
        artifact = load_artifact(cls.CONTRACT_NAME)
        sender = TransactionSender(w3, admin, cls.decoder())
        address, result = sender.deploy(artifact.abi, artifact.bytecode, *constructor_args)
        return cls(w3, address, sender), result

    def _send(self, fn: Any, *, value: int = 0, preflight: bool = True, gas_limit: int | None = None) -> TxResult:
        if self.sender is None:
            raise RuntimeError(
                f"this {type(self).__name__} is read-only: create it with an account to send transactions"
            )
        limit = gas_limit if gas_limit is not None else self.GAS_LIMITS.get(fn.fn_name)
        return self.sender.transact(fn, value=value, gas_limit=limit, preflight=preflight)


class RoleTaskClient(ContractClient):
    """The administration both task contracts share (AccessControl roles, approved devices, start and cancel)."""

    def is_aggregator(self, account: str) -> bool:
        return bool(self.contract.functions.hasRole(AGGREGATOR_ROLE, Web3.to_checksum_address(account)).call())

    def approve_devices(self, devices: list[str]) -> TxResult:
        return self._send(self.contract.functions.approveDevices([Web3.to_checksum_address(d) for d in devices]))

    def remove_device(self, device: str) -> TxResult:
        return self._send(self.contract.functions.removeDevice(Web3.to_checksum_address(device)))

    def grant_aggregator(self, account: str) -> TxResult:
        return self._send(self.contract.functions.grantRole(AGGREGATOR_ROLE, Web3.to_checksum_address(account)))

    def start(self) -> TxResult:
        return self._send(self.contract.functions.start())

    def cancel(self) -> TxResult:
        return self._send(self.contract.functions.cancel())
