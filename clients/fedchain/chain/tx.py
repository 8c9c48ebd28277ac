"""Sending transactions: local signing, nonce tracking, EIP-1559 fees, receipts, and decoded reverts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted

from fedchain.chain.errors import ChainError, ContractRevert
from fedchain.chain.rawtx import RawSigner

GAS_MARGIN = 1.25


@dataclass(frozen=True)
class TxResult:
    """What a mined transaction cost."""

    tx_hash: str
    block_number: int
    gas_used: int
    effective_gas_price: int


class ErrorDecoder:
    """Maps 4-byte selectors of the ABI's custom errors back to names and arguments."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for entry in abi:
            if entry.get("type") != "error":
                continue
            types = [_abi_type(i) for i in entry.get("inputs", [])]
            selector = function_signature_to_4byte_selector(f"{entry['name']}({','.join(types)})")
            self._errors[selector] = (entry["name"], types)
        # Solidity's built-in Error(string) and Panic(uint256).
        self._errors[bytes.fromhex("08c379a0")] = ("Error", ["string"])
        self._errors[bytes.fromhex("4e487b71")] = ("Panic", ["uint256"])

    def decode(self, data: str | bytes | None) -> ContractRevert:
        raw = data if isinstance(data, bytes) else bytes.fromhex((data or "0x")[2:] if data else "")
        name, types = self._errors.get(raw[:4], ("", []))
        if not name:
            return ContractRevert("", (), "0x" + raw.hex())
        try:
            args = tuple(abi_decode(types, raw[4:]))
        except Exception:  # malformed revert data: keep the raw bytes for the message
            args = ()
        return ContractRevert(name, args, "0x" + raw.hex())


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


def _revert_data(exc: Exception) -> str | None:
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return data
    if isinstance(data, dict):  # some nodes nest it
        inner = data.get("data")
        if isinstance(inner, str):
            return inner
    return None


@dataclass(frozen=True)
class PendingTx:
    """A transaction sent but not yet known to be mined."""

    tx_hash: bytes
    tx: dict[str, Any]
    fn: ContractFunction | None


class TransactionSender:
    """Signs and sends one account's transactions, tracking its nonce locally.

    One sender per account per process: the nonce is read from the chain once and then counted here, which lets
    callers send without waiting for each receipt.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        decoder: ErrorDecoder,
        receipt_timeout: float = 120.0,
        chain_id: int | None = None,
    ):
        self.w3 = w3
        self.account = account
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self._nonce: int | None = None
        # Known already where many senders share one connection (a pool): one round trip fewer per device.
        self._chain_id = chain_id if chain_id is not None else w3.eth.chain_id
        self._signer = RawSigner(bytes(account.key))

    @property
    def address(self) -> str:
        return self.account.address

    def call(self, fn: ContractFunction) -> Any:
        """A read-only call with custom errors decoded."""
        try:
            return fn.call({"from": self.address})
        except (ContractCustomError, ContractLogicError) as exc:
            raise self.decoder.decode(_revert_data(exc)) from exc

    def transact(
        self, fn: ContractFunction, value: int = 0, gas_limit: int | None = None, preflight: bool = True
    ) -> TxResult:
        """Sign, send and wait; a revert raises ContractRevert naming the contract's custom error.

        With `gas_limit` the gas is not estimated: a preflight eth_call still surfaces reverts. Hot paths pass
        one because concurrent eth_estimateGas calls sometimes hang on Ganache 7. `preflight=False` skips that
        call too, for calls that depend on time: nodes evaluate calls at the latest block's timestamp, which on an
        idle devnet lags the clock, while the transaction's own block carries the current time.
        """
        try:
            if gas_limit is None:
                gas = int(fn.estimate_gas({"from": self.address, "value": value}) * GAS_MARGIN)
            else:
                if preflight:
                    fn.call({"from": self.address, "value": value})
                gas = gas_limit
        except (ContractCustomError, ContractLogicError) as exc:
            raise self.decoder.decode(_revert_data(exc)) from exc
        tx = fn.build_transaction(
            {
                "from": self.address,
                "value": value,
                "gas": gas,
                "nonce": self._next_nonce(),
                "chainId": self._chain_id,
                **self._fees(),
            }
        )
        return self._send(tx, fn)

    def deploy(self, abi: list[dict[str, Any]], bytecode: str, *args: Any) -> tuple[str, TxResult]:
        """Deploy a contract; returns its address and the receipt summary."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        ctor = factory.constructor(*args)
        try:
            gas = ctor.estimate_gas({"from": self.address})
        except (ContractCustomError, ContractLogicError) as exc:
            raise self.decoder.decode(_revert_data(exc)) from exc
        tx = ctor.build_transaction(
            {
                "from": self.address,
                "gas": int(gas * GAS_MARGIN),
                "nonce": self._next_nonce(),
                "chainId": self._chain_id,
                **self._fees(),
            }
        )
        result = self._send(tx, None)
        receipt = self.w3.eth.get_transaction_receipt(result.tx_hash)
        return receipt["contractAddress"], result

    def send(self, fn: ContractFunction, gas_limit: int, fees: dict[str, int] | None = None) -> PendingTx:
        """Sign and send without waiting for the receipt (no preflight call): for many accounts sending at once,
        e.g. a pool of virtual devices. `fees` (from `fees()`) saves two calls per transaction when shared."""
        tx, raw = self.sign(fn, gas_limit, fees)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(raw)
        except Exception:
            self._nonce = None
            raise
        return PendingTx(bytes(tx_hash), tx, fn)

    def sign(
        self, fn: ContractFunction, gas_limit: int, fees: dict[str, int] | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """Build and sign the next transaction of this account (its nonce is taken); returns it and its raw bytes,
        for `send_raw_batch`. The call data is encoded directly: web3's build_transaction validation costs more
        than the signature, and a pool signs one transaction per device per round."""
        return self.sign_data(fn.address, fn._encode_transaction_data(), gas_limit, fees)

    def sign_data(
        self, to: str, data: bytes | str, gas_limit: int, fees: dict[str, int] | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """`sign` for call data encoded by the caller (a hot path's own ABI encoding, see `TaskClient`)."""
        tx = {
            "to": to,
            "data": data,
            "value": 0,
            "gas": gas_limit,
            "nonce": self._next_nonce(),
            "chainId": self._chain_id,
            **(fees if fees is not None else self._fees()),
        }
        return tx, self._signer.sign(tx)

    def set_nonce(self, nonce: int) -> None:
        """The account's next nonce, read elsewhere (e.g. many accounts' at once with `read_nonces`)."""
        self._nonce = nonce

    def forget_nonce(self) -> None:
        """Re-read the nonce from the chain next time (after a send whose fate is unknown)."""
        self._nonce = None

    def estimate(self, fn: ContractFunction, value: int = 0) -> int:
        """The gas limit `transact` gives `fn` (the estimate with GAS_MARGIN); a revert raises ContractRevert."""
        try:
            return int(fn.estimate_gas({"from": self.address, "value": value}) * GAS_MARGIN)
        except (ContractCustomError, ContractLogicError) as exc:
            raise self.decoder.decode(_revert_data(exc)) from exc

    def transact_many(self, calls: Sequence[tuple[ContractFunction, int]]) -> list[TxResult]:
        """Sign `calls` ((function, gas limit), in order: consecutive nonces), send them in one JSON-RPC batch and
        wait for all their receipts in batches: one round trip and one receipt wait instead of one per transaction.
        No preflight: a revert is explained (ContractRevert) from its receipt, after every receipt is in."""
        if not calls:
            return []
        fees = self._fees()
        signed = [self.sign(fn, gas, fees) for fn, gas in calls]
        sent = send_raw_batch(self.w3, [raw for _, raw in signed])
        refused = [answer for answer in sent if not isinstance(answer, bytes)]
        hashes = [answer for answer in sent if isinstance(answer, bytes)]
        receipts = wait_receipts(self.w3, hashes, timeout=self.receipt_timeout) if hashes else []
        if refused:
            self._nonce = None  # some nonces were not used: read it again next time
            raise refused[0]
        results = []
        for (fn, _), (tx, _), receipt in zip(calls, signed, receipts, strict=True):
            block = int(receipt["blockNumber"], 16)
            if int(receipt["status"], 16) != 1:
                raise self.explain_failure({**tx, "from": self.address}, block, fn)
            price = receipt.get("effectiveGasPrice")
            results.append(
                TxResult(str(receipt["transactionHash"]), block, int(receipt["gasUsed"], 16), int(price or "0x0", 16))
            )
        return results

    def wait(self, pending: PendingTx) -> TxResult:
        """The receipt of a transaction sent with `send`; a revert raises ContractRevert."""
        return self._receipt(pending.tx_hash, pending.tx, pending.fn)

    def fees(self) -> dict[str, int]:
        """Fee fields for the next transactions (EIP-1559 where the chain has a base fee)."""
        return self._fees()

    def _send(self, tx: dict[str, Any], fn: ContractFunction | None) -> TxResult:
        return self._receipt(self._sign_and_send(tx), tx, fn)

    def _sign_and_send(self, tx: dict[str, Any]) -> bytes:
        raw = self._signer.sign(tx)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(raw)
        except ValueError as exc:
            # A retried send whose first attempt did reach the node: the transaction is already known.
            if "known" not in str(exc).lower() and "nonce too low" not in str(exc).lower():
                self._nonce = None  # re-read the nonce next time: the node rejected it
                raise
            tx_hash = keccak(raw)
        except Exception:
            self._nonce = None
            raise
        return bytes(tx_hash)

    def _receipt(self, tx_hash: bytes, tx: dict[str, Any], fn: ContractFunction | None) -> TxResult:
        try:
            # Anvil's automine answers before the receipt exists: always wait for it.
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout, poll_latency=0.05)
        except TimeExhausted as exc:
            self._nonce = None
            raise ChainError(f"transaction {tx_hash.hex()} not mined within {self.receipt_timeout:.0f}s") from exc
        if receipt["status"] != 1:
            raise self.explain_failure(tx, receipt["blockNumber"], fn)
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=receipt["blockNumber"],
            gas_used=receipt["gasUsed"],
            effective_gas_price=receipt.get("effectiveGasPrice", 0),
        )

    def explain_failure(self, tx: dict[str, Any], block: int, fn: ContractFunction | None) -> ContractRevert:
        """The state changed between estimate and mining: replay the call at that block for the reason."""
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.w3.eth.call(call, block - 1 if block > 0 else "latest")
            self.w3.eth.call(call, block)
        except (ContractCustomError, ContractLogicError) as exc:
            return self.decoder.decode(_revert_data(exc))
        except Exception as exc:
            return ContractRevert("", (), str(exc))
        return ContractRevert("", (), "reverted on chain (reason not reproducible)")

    def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
        nonce = self._nonce
        self._nonce += 1
        return nonce

    def _fees(self) -> dict[str, int]:
        block = self.w3.eth.get_block("latest")
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": self.w3.eth.gas_price}
        try:
            tip = self.w3.eth.max_priority_fee
        except Exception:  # not every node implements eth_maxPriorityFeePerGas
            tip = Web3.to_wei(1, "gwei")
        tip = max(tip, 1)
        return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}


def _batch(w3: Web3, method: str, params: Sequence[list[Any]]) -> list[dict[str, Any]]:
    """One JSON-RPC batch; the raw responses ({"result": ...} or {"error": ...}) in request order."""
    responses = w3.provider.make_batch_request([(method, p) for p in params])  # type: ignore[attr-defined]
    if not isinstance(responses, list):  # the node refused the batch as a whole
        raise ChainError(f"the node refused a batch of {method}: {responses.get('error')}")
    return list(responses)


def send_raw_batch(w3: Web3, raws: Sequence[bytes], chunk: int = 500) -> list[bytes | ContractRevert | ChainError]:
    """Send signed transactions in JSON-RPC batches (one HTTP request per `chunk`); per transaction, its hash or
    the node's refusal. Many accounts' transactions reach the node at close to its own throughput this way."""
    results: list[bytes | ContractRevert | ChainError] = []
    for start in range(0, len(raws), chunk):
        part = raws[start : start + chunk]
        for response in _batch(w3, "eth_sendRawTransaction", [["0x" + raw.hex()] for raw in part]):
            if "error" in response:
                results.append(ChainError(f"transaction refused: {response['error']}"))
            else:
                results.append(bytes.fromhex(str(response["result"])[2:]))
    return results


def sign_and_send(
    w3: Web3, count: int, sign: Callable[[int], tuple[dict[str, Any], bytes]], first: int = 128, step: int = 64
) -> tuple[list[dict[str, Any]], list[bytes | ContractRevert | ChainError]]:
    """Sign `count` transactions (`sign(i)`: the transaction dict and its raw bytes, in this thread) while a sender
    thread sends what is signed so far in JSON-RPC batches; the dicts and, per transaction, its hash or the node's
    refusal, in order.

    Why a thread: signing 1,000 transactions costs ~85 ms of Python, 15-20% of the node's own time for them, so
    signing all first and sending after reached ~0.83 of the node's ceiling (bench throughput). Sending while
    signing hides it (~0.96). The first batch is `first` transactions; after that the sender takes everything
    signed while its previous batch was in flight, so the batches grow as the node falls behind, and an automining
    devnet (one block per arrival) still sees a few large batches rather than many small ones, which it packs into
    more blocks (measured ~2x slower with fixed batches of 100)."""
    signed: list[tuple[dict[str, Any], bytes]] = []
    answers: list[bytes | ContractRevert | ChainError] = []
    ready = threading.Condition()
    finished = False
    failure: list[BaseException] = []

    def sender() -> None:
        sent = 0
        try:
            while True:
                with ready:
                    while len(signed) == sent and not finished:
                        ready.wait()
                    part = [raw for _, raw in signed[sent:]]
                    if not part:
                        return
                sent += len(part)
                answers.extend(send_raw_batch(w3, part))
        except BaseException as exc:  # handed to the signing thread, which raises it
            failure.append(exc)

    thread = threading.Thread(target=sender, name="fedchain-send", daemon=True)
    thread.start()
    try:
        done = 0
        while done < count and not failure:
            upto = min(count, done + (first if done == 0 else step))
            part = [sign(i) for i in range(done, upto)]
            with ready:
                signed.extend(part)
                ready.notify()
            done = upto
    finally:
        with ready:
            finished = True
            ready.notify()
        thread.join()
    if failure:
        raise failure[0]
    return [tx for tx, _ in signed], answers


def wait_receipts(
    w3: Web3, tx_hashes: Sequence[bytes], timeout: float = 120.0, poll: float = 0.02, chunk: int = 500
) -> list[dict[str, Any]]:
    """Receipts (raw JSON: hex quantities) of many transactions, asked for in JSON-RPC batches until all are
    mined."""
    receipts: dict[bytes, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        missing = [h for h in tx_hashes if h not in receipts]
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            answers = _batch(w3, "eth_getTransactionReceipt", [["0x" + h.hex()] for h in part])
            for h, response in zip(part, answers, strict=True):
                if response.get("result"):
                    receipts[h] = response["result"]
        if len(receipts) == len(set(tx_hashes)):
            return [receipts[h] for h in tx_hashes]
        if time.monotonic() > deadline:
            raise ChainError(f"{len(set(tx_hashes)) - len(receipts)} transactions not mined within {timeout:.0f}s")
        time.sleep(poll)


def call_batch(w3: Web3, to: str, calls: Sequence[bytes], chunk: int = 500) -> list[bytes]:
    """`eth_call`s of one contract (call data encoded by the caller) at the latest block, in JSON-RPC batches;
    their return data in order. A call the node refuses raises ChainError."""
    results: list[bytes] = []
    for start in range(0, len(calls), chunk):
        part = calls[start : start + chunk]
        for response in _batch(w3, "eth_call", [[{"to": to, "data": "0x" + data.hex()}, "latest"] for data in part]):
            if "error" in response:
                raise ChainError(f"eth_call refused: {response['error']}")
            results.append(bytes.fromhex(str(response["result"])[2:]))
    return results


def read_nonces(w3: Web3, addresses: Sequence[str], chunk: int = 500) -> list[int]:
    """Pending nonces of many accounts, in JSON-RPC batches."""
    nonces: list[int] = []
    for start in range(0, len(addresses), chunk):
        part = addresses[start : start + chunk]
        for response in _batch(w3, "eth_getTransactionCount", [[a, "pending"] for a in part]):
            if "error" in response:
                raise ChainError(f"cannot read a nonce: {response['error']}")
            nonces.append(int(str(response["result"]), 16))
    return nonces
