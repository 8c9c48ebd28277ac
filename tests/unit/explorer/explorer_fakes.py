"""For the explorer unit tests: a fake Ethereum node (raw JSON-RPC results) and a fake IPFS serving one small
FederatedTask history.

The logs are real ABI encodings of FederatedTask's events, so the indexer decodes them as it would a node's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from fedchain.chain.artifacts import load_artifact
from fedchain.explorer.abi import abi_type
from fedchain.explorer.rpc import RpcError
from fedchain.storage import cid_to_digest, compute_cid, digest_to_cid
from fedchain.storage.errors import IpfsUnavailable

TASK = to_checksum_address("0x" + "5f" * 20)
ADMIN = to_checksum_address("0x" + "a0" * 20)
AGGREGATOR = to_checksum_address("0x" + "a1" * 20)
DEVICE_A = to_checksum_address("0x" + "d1" * 20)
DEVICE_B = to_checksum_address("0x" + "d2" * 20)
HONEST_1 = AGGREGATOR
HONEST_2 = to_checksum_address("0x" + "a2" * 20)
LIAR = to_checksum_address("0x" + "a3" * 20)
AGGREGATOR_ROLE = keccak(text="AGGREGATOR_ROLE")
INPUTS = b"\x01" * 20
OTHER = "0x" + "ee" * 20
ZERO32 = b"\x00" * 32


def _event(name: str) -> dict[str, Any]:
    return next(e for e in load_artifact("FederatedTask").abi if e.get("type") == "event" and e["name"] == name)


def encode_log(address: str, name: str, **values: Any) -> dict[str, Any]:
    """A log as a node returns it (without block/tx fields, added by FakeChain)."""
    entry = _event(name)
    signature = f"{name}({','.join(abi_type(p) for p in entry['inputs'])})"
    topics = ["0x" + keccak(text=signature).hex()]
    plain_types, plain_values = [], []
    for p in entry["inputs"]:
        if p["indexed"]:
            topics.append("0x" + abi_encode([p["type"]], [values[p["name"]]]).hex())
        else:
            plain_types.append(abi_type(p))
            plain_values.append(values[p["name"]])
    return {"address": address.lower(), "topics": topics, "data": "0x" + abi_encode(plain_types, plain_values).hex()}


def call_data(signature: str, types: Sequence[str], values: Sequence[Any]) -> str:
    return "0x" + (keccak(text=signature)[:4] + abi_encode(list(types), list(values))).hex()


@dataclass
class FakeTx:
    sender: str
    to: str | None
    data: str
    logs: list[dict[str, Any]]
    gas_used: int = 50_000
    status: int = 1
    created: str | None = None


@dataclass
class FakeChain:
    """Blocks of fake transactions; `calls` counts JSON-RPC methods served."""

    genesis_salt: str = "a"
    blocks: list[list[FakeTx]] = field(default_factory=lambda: [[]])
    chain_id: int = 31337
    calls: dict[str, int] = field(default_factory=dict)
    salts: dict[int, str] = field(default_factory=dict)
    receipts_by_block: bool = True

    def add_block(self, *txs: FakeTx) -> int:
        self.blocks.append(list(txs))
        return len(self.blocks) - 1

    def _hash(self, kind: str, *parts: object) -> str:
        return "0x" + keccak(text=f"{self.genesis_salt}:{kind}:{':'.join(map(str, parts))}").hex()

    def block_hash(self, n: int) -> str:
        return self._hash("block", n, self.salts.get(n, ""))

    def tx_hash(self, n: int, i: int) -> str:
        return self._hash("tx", n, i, self.salts.get(n, ""))

    def _tx(self, n: int, i: int) -> dict[str, Any]:
        tx = self.blocks[n][i]
        return {
            "hash": self.tx_hash(n, i),
            "blockNumber": hex(n),
            "transactionIndex": hex(i),
            "from": tx.sender.lower(),
            "to": tx.to.lower() if tx.to else None,
            "value": "0x0",
            "nonce": hex(n),
            "gas": hex(200_000),
            "gasPrice": hex(10**9),
            "input": tx.data,
        }

    def _receipt(self, n: int, i: int) -> dict[str, Any]:
        tx = self.blocks[n][i]
        logs = []
        base = sum(len(t.logs) for t in self.blocks[n][:i])
        for j, log in enumerate(tx.logs):
            logs.append(
                {
                    **log,
                    "blockNumber": hex(n),
                    "transactionHash": self.tx_hash(n, i),
                    "logIndex": hex(base + j),
                    "blockHash": self.block_hash(n),
                }
            )
        return {
            "transactionHash": self.tx_hash(n, i),
            "blockNumber": hex(n),
            "status": hex(tx.status),
            "gasUsed": hex(tx.gas_used),
            "effectiveGasPrice": hex(10**9),
            "contractAddress": tx.created.lower() if tx.created else None,
            "logs": logs,
        }

    def _block(self, n: int, full: bool) -> dict[str, Any] | None:
        if n >= len(self.blocks):
            return None
        txs = [self._tx(n, i) for i in range(len(self.blocks[n]))]
        return {
            "number": hex(n),
            "hash": self.block_hash(n),
            "parentHash": self.block_hash(n - 1) if n > 0 else "0x" + "00" * 32,
            "timestamp": hex(1_700_000_000 + 2 * n),
            "gasUsed": hex(sum(t.gas_used for t in self.blocks[n])),
            "gasLimit": hex(30_000_000),
            "baseFeePerGas": hex(10**9),
            "miner": "0x" + "00" * 20,
            "transactions": txs if full else [t["hash"] for t in txs],
        }

    def _find(self, tx_hash: str) -> tuple[int, int] | None:
        for n, txs in enumerate(self.blocks):
            for i in range(len(txs)):
                if self.tx_hash(n, i) == tx_hash:
                    return n, i
        return None

    # --- the JsonRpc interface the indexer uses ---

    def call(self, method: str, *params: Any) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_blockNumber":
            return hex(len(self.blocks) - 1)
        if method == "web3_clientVersion":
            return "fake/1.0"
        if method == "eth_getBlockByNumber":
            return self._block(int(params[0], 16), bool(params[1]))
        if method == "eth_getBlockByHash":
            for n in range(len(self.blocks)):
                if self.block_hash(n) == params[0]:
                    return self._block(n, bool(params[1]))
            return None
        if method == "eth_getBlockReceipts":
            if not self.receipts_by_block:
                raise RpcError("method not found", -32601)
            n = int(params[0], 16)
            return [self._receipt(n, i) for i in range(len(self.blocks[n]))]
        if method == "eth_getTransactionReceipt":
            found = self._find(params[0])
            return None if found is None else self._receipt(*found)
        if method == "eth_getTransactionByHash":
            found = self._find(params[0])
            return None if found is None else self._tx(*found)
        if method == "eth_call":
            raise RpcError("execution reverted", 3, "0x")
        raise RpcError(f"method {method} not supported by the fake node", -32601)

    def try_call(self, method: str, *params: Any) -> Any:
        try:
            return self.call(method, *params)
        except RpcError:
            return None

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        return [self.call(m, *p) for m, p in calls]

    def close(self) -> None:
        pass


class FakeIpfs:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.down = False

    def add(self, data: bytes) -> str:
        cid = compute_cid(data)
        self.blobs[cid] = data
        return cid

    def id(self) -> dict[str, Any]:
        return {"ID": "12D3KooWFake", "AgentVersion": "fake/1"}

    def version(self) -> dict[str, Any]:
        return {"Version": "0.0-fake"}

    def pin_ls(self) -> list[str]:
        return sorted(self.blobs)

    def cat(self, cid: str, max_size: int = 1 << 30) -> bytes:
        if self.down:
            raise IpfsUnavailable("fake IPFS is down")
        if cid not in self.blobs:
            raise IpfsUnavailable(f"{cid} not found")
        return self.blobs[cid]


@dataclass
class Scenario:
    chain: FakeChain
    ipfs: FakeIpfs
    spec_cid: str
    model_cids: dict[int, str]
    update_cids: dict[tuple[int, str], str]
    report_cids: dict[int, str]
    # Agreement scenario only: what each aggregator revealed, by (round, aggregator), and where things landed.
    revealed: dict[tuple[int, str], str] = field(default_factory=dict)
    blocks: dict[str, int] = field(default_factory=dict)


def commitment(round_: int, aggregator: str, inputs: bytes, model: bytes, report: bytes, accepted: int) -> bytes:
    """The contract's resultCommitment (epsilonMicro 0: no DP ledger), with a salt derived from the aggregator (as
    real aggregators do)."""
    salt = keccak(text=f"salt {aggregator} {round_}")
    return keccak(
        abi_encode(
            ["address", "uint32", "address", "bytes20", "bytes32", "bytes32", "uint32", "uint64", "bytes32"],
            [TASK, round_, aggregator, inputs, model, report, accepted, 0, salt],
        )
    )


def commit_tx(round_: int, aggregator: str, value: bytes, *extra: dict[str, Any], gas: int = 30_000) -> FakeTx:
    """commitResult: ResultCommitted, plus RevealOpened when it was the last commitment (in `extra`)."""
    logs = [encode_log(TASK, "ResultCommitted", round=round_, aggregator=aggregator, commitment=value), *extra]
    data = call_data("commitResult(uint32,bytes32)", ["uint32", "bytes32"], [round_, value])
    return FakeTx(aggregator, TASK, data, logs, gas_used=gas)


def reveal_tx(
    round_: int, aggregator: str, model: bytes, report: bytes, accepted: int, *extra: dict[str, Any], gas: int = 69_000
) -> FakeTx:
    """revealResult: ResultRevealed, then whatever it set off (AggregateCommitted, faults, the next round)."""
    logs = [
        encode_log(
            TASK,
            "ResultRevealed",
            round=round_,
            aggregator=aggregator,
            modelDigest=model,
            reportDigest=report,
            acceptedUpdates=accepted,
            epsilonMicro=0,
        ),
        *extra,
    ]
    salt = keccak(text=f"salt {aggregator} {round_}")
    data = call_data(
        "revealResult(uint32,bytes20,bytes32,bytes32,uint32,uint64,bytes32)",
        ["uint32", "bytes20", "bytes32", "bytes32", "uint32", "uint64", "bytes32"],
        [round_, INPUTS, model, report, accepted, 0, salt],
    )
    return FakeTx(aggregator, TASK, data, logs, gas_used=gas)


def close_window_tx(round_: int, sender: str, *logs: dict[str, Any], gas: int = 40_000) -> FakeTx:
    return FakeTx(sender, TASK, call_data("closeAggregationWindow(uint32)", ["uint32"], [round_]), list(logs), gas)


def _setup(
    chain: FakeChain,
    ipfs: FakeIpfs,
    rounds: int,
    aggregators: Sequence[str],
    threshold: int,
    strategy_id: int,
) -> tuple[str, str]:
    spec = ipfs.add(b'{"spec": 1}')
    initial = ipfs.add(b"initial-model")
    config = {
        "modelSpecDigest": cid_to_digest(spec),
        "initialModelDigest": cid_to_digest(initial),
        "numRounds": rounds,
        "minUpdates": 1,
        "maxUpdates": 2,
        "roundDuration": 60,
        "strategyId": strategy_id,
        "aggregatorThreshold": threshold,
        "aggregationDuration": 30,
    }
    chain.add_block(
        FakeTx(
            ADMIN,
            None,
            "0x6080",
            [
                encode_log(TASK, "RoleGranted", role=ZERO32, account=ADMIN, sender=ADMIN),
                encode_log(TASK, "TaskConfigured", admin=ADMIN, **config),
            ],
            gas_used=1_500_000,
            created=TASK,
        )
    )
    chain.add_block(
        FakeTx(
            ADMIN,
            TASK,
            call_data("approveDevices(address[])", ["address[]"], [[DEVICE_A, DEVICE_B]]),
            [encode_log(TASK, "DeviceApproved", device=d, round=0) for d in (DEVICE_A, DEVICE_B)],
        )
    )
    chain.add_block(
        *(
            FakeTx(
                ADMIN,
                TASK,
                call_data("grantRole(bytes32,address)", ["bytes32", "address"], [AGGREGATOR_ROLE, aggregator]),
                [encode_log(TASK, "RoleGranted", role=AGGREGATOR_ROLE, account=aggregator, sender=ADMIN)],
            )
            for aggregator in aggregators
        )
    )
    chain.add_block(
        FakeTx(
            ADMIN,
            TASK,
            call_data("start()", [], []),
            [encode_log(TASK, "RoundOpened", round=1, globalModelDigest=cid_to_digest(initial), deadline=1)],
        )
    )
    # An unrelated contract's log and a plain transfer: kept raw, never decoded as task events.
    chain.add_block(FakeTx(DEVICE_A, OTHER, "0x", [{"address": OTHER, "topics": ["0x" + "11" * 32], "data": "0x"}]))
    return spec, initial


def _submissions(chain: FakeChain, ipfs: FakeIpfs, r: int, update_cids: dict[tuple[int, str], str]) -> dict[str, str]:
    """Both devices submit to round r (the second submission closes it for aggregation); their tx hashes."""
    hashes = {}
    for k, device in enumerate((DEVICE_A, DEVICE_B)):
        cid = ipfs.add(f"update {r} {device}".encode())
        update_cids[(r, device)] = cid
        digest = cid_to_digest(cid)
        logs = [encode_log(TASK, "UpdateSubmitted", round=r, device=device, updateDigest=digest, numSamples=40 + k)]
        if k == 1:
            logs.append(
                encode_log(TASK, "RoundReadyForAggregation", round=r, updates=2, totalSamples=81, inputsHash=INPUTS)
            )
        data = call_data(
            "submitUpdate(uint32,bytes32,uint64)", ["uint32", "bytes32", "uint64"], [r, cid_to_digest(cid), 40 + k]
        )
        n = chain.add_block(FakeTx(device, TASK, data, logs, gas_used=38_000 + 5_000 * k))
        hashes[device] = chain.tx_hash(n, 0)
    return hashes


def _report(
    r: int,
    model: str,
    update_cids: dict[tuple[int, str], str],
    hashes: dict[str, str],
    rejected_reason: str | None,
    **extra: Any,
) -> dict[str, Any]:
    """A report in the aggregator's format; with `rejected_reason`, device B's update is rejected."""
    entry_b = {"device": DEVICE_B, "cid": update_cids[(r, DEVICE_B)], "num_samples": 41, "tx_hash": hashes[DEVICE_B]}
    return {
        "round": r,
        "model_cid": model,
        "inputs_hash": "0x" + INPUTS.hex(),
        "accepted": [
            {
                "device": DEVICE_A,
                "cid": update_cids[(r, DEVICE_A)],
                "num_samples": 40,
                "tx_hash": hashes[DEVICE_A],
                "train_seconds": 1.5,
            }
        ]
        + ([] if rejected_reason else [entry_b]),
        "rejected": [{**entry_b, "reason": rejected_reason, "detail": "NaN in layer 0"}] if rejected_reason else [],
        "metrics": {"accuracy": 0.8 + 0.05 * r, "loss": 0.5 - 0.1 * r},
        **extra,
    }


def _next(r: int, rounds: int, model: str) -> dict[str, Any]:
    """What follows a finalised round r: the next round, or the end of the task."""
    if r < rounds:
        return encode_log(TASK, "RoundOpened", round=r + 1, globalModelDigest=cid_to_digest(model), deadline=2)
    return encode_log(TASK, "TaskFinished", finalModelDigest=cid_to_digest(model), rounds=r)


def build_scenario(chain: FakeChain | None = None, ipfs: FakeIpfs | None = None, rounds: int = 2) -> Scenario:
    """A task with two devices and one aggregator (threshold 1); every round both submit; in round 2 device B's
    update is rejected. The aggregator commits (which opens the reveal window at once) and reveals in the next block,
    which finalises the round."""
    chain = chain or FakeChain()
    ipfs = ipfs or FakeIpfs()
    spec, _ = _setup(chain, ipfs, rounds, [AGGREGATOR], threshold=1, strategy_id=0)
    model_cids: dict[int, str] = {}
    update_cids: dict[tuple[int, str], str] = {}
    report_cids: dict[int, str] = {}
    for r in range(1, rounds + 1):
        hashes = _submissions(chain, ipfs, r, update_cids)
        model = ipfs.add(f"model {r}".encode())
        model_cids[r] = model
        rejected = r == 2
        report = _report(r, model, update_cids, hashes, "NonFiniteWeights" if rejected else None)
        report_cid = ipfs.add(json.dumps(report).encode())
        report_cids[r] = report_cid
        accepted = 1 if rejected else 2
        digests = (cid_to_digest(model), cid_to_digest(report_cid))
        value = commitment(r, AGGREGATOR, INPUTS, *digests, accepted)
        opened = encode_log(TASK, "RevealOpened", round=r, deadline=3, commits=1)
        chain.add_block(commit_tx(r, AGGREGATOR, value, opened))
        final = encode_log(
            TASK,
            "AggregateCommitted",
            round=r,
            aggregator=AGGREGATOR,
            modelDigest=digests[0],
            reportDigest=digests[1],
            inputsHash=INPUTS,
            acceptedUpdates=accepted,
            epsilonMicro=0,
        )
        chain.add_block(reveal_tx(r, AGGREGATOR, *digests, accepted, final, _next(r, rounds, model)))
    return Scenario(chain, ipfs, spec, model_cids, update_cids, report_cids)


def build_agreement_scenario(chain: FakeChain | None = None, ipfs: FakeIpfs | None = None) -> Scenario:
    """Three aggregators, threshold 2, Multi-Krum; LIAR reveals a model of its own every time. numRounds 3:

    - round 1: all three commit; the liar reveals first, then HONEST_1, then HONEST_2, whose reveal finalises the
      round and records the liar's fault; device B's update is excluded by the strategy.
    - round 2: HONEST_1 and the liar commit; the commit window is closed by a device (2 >= k commits: reveals
      open); both reveal, they disagree, and the window's close fails the round: round 3 retries it.
    - round 3: all three commit; the honest two reveal and finalise it; round 4 opens.
    - round 4: the liar reveals round 3 late (fault recorded in that later transaction), and does not commit;
      the honest two commit, a device closes the commit window, they reveal: the task finishes.
    """
    chain = chain or FakeChain()
    ipfs = ipfs or FakeIpfs()
    num_rounds = 3
    aggregators = (HONEST_1, HONEST_2, LIAR)
    spec, _ = _setup(chain, ipfs, num_rounds, aggregators, threshold=2, strategy_id=8)
    s = Scenario(chain, ipfs, spec, {}, {}, {})
    faults = 0

    def results(r: int, hashes: dict[str, str]) -> dict[str, tuple[bytes, bytes, int]]:
        """(model digest, report digest, accepted) per aggregator: the honest agree, the liar does not."""
        model = ipfs.add(f"model {r}".encode())
        s.model_cids[r] = model
        params = {"f": 1, "m": 0}
        report = _report(r, model, s.update_cids, hashes, "excluded-by-strategy", strategy="multi-krum")
        report.update(strategy_params=params, server_state_cid="", note="")
        report_cid = ipfs.add(json.dumps(report).encode())
        s.report_cids[r] = report_cid
        lie = ipfs.add(f"lie {r}".encode())
        lie_report = ipfs.add(json.dumps({**report, "model_cid": lie}).encode())
        out = {a: (cid_to_digest(model), cid_to_digest(report_cid), 1) for a in (HONEST_1, HONEST_2)}
        out[LIAR] = (cid_to_digest(lie), cid_to_digest(lie_report), 1)
        for a, (m, _, _) in out.items():
            s.revealed[(r, a)] = digest_to_cid(m)
        return out

    def committed(r: int, a: str, res: dict[str, tuple[bytes, bytes, int]], *extra: dict[str, Any]) -> FakeTx:
        return commit_tx(r, a, commitment(r, a, INPUTS, *res[a]), *extra)

    def final(r: int, a: str, res: dict[str, tuple[bytes, bytes, int]]) -> dict[str, Any]:
        m, rep, acc = res[a]
        return encode_log(
            TASK,
            "AggregateCommitted",
            round=r,
            aggregator=a,
            modelDigest=m,
            reportDigest=rep,
            inputsHash=INPUTS,
            acceptedUpdates=acc,
            epsilonMicro=0,
        )

    def fault(r: int, res: dict[str, tuple[bytes, bytes, int]]) -> dict[str, Any]:
        nonlocal faults
        faults += 1
        return encode_log(
            TASK,
            "AggregatorFault",
            round=r,
            aggregator=LIAR,
            revealedModelDigest=res[LIAR][0],
            finalModelDigest=res[HONEST_1][0],
            faults=faults,
        )

    # Round 1: three commits (the third opens reveals), the liar reveals first, the second honest reveal finalises.
    res = results(1, _submissions(chain, ipfs, 1, s.update_cids))
    chain.add_block(committed(1, HONEST_1, res), committed(1, LIAR, res))
    opened = encode_log(TASK, "RevealOpened", round=1, deadline=100, commits=3)
    chain.add_block(committed(1, HONEST_2, res, opened))
    chain.add_block(reveal_tx(1, LIAR, *res[LIAR]))
    chain.add_block(reveal_tx(1, HONEST_1, *res[HONEST_1]))
    model1 = s.model_cids[1]
    s.blocks["round 1 final"] = chain.add_block(
        reveal_tx(1, HONEST_2, *res[HONEST_2], final(1, HONEST_2, res), fault(1, res), _next(1, 4, model1))
    )

    # Round 2: two commits, the window is closed by a device, the two reveals disagree, the round fails.
    res = results(2, _submissions(chain, ipfs, 2, s.update_cids))
    chain.add_block(committed(2, HONEST_1, res), committed(2, LIAR, res))
    opened = encode_log(TASK, "RevealOpened", round=2, deadline=200, commits=2)
    chain.add_block(close_window_tx(2, DEVICE_A, opened))
    chain.add_block(reveal_tx(2, HONEST_1, *res[HONEST_1]), reveal_tx(2, LIAR, *res[LIAR]))
    failed = encode_log(TASK, "AggregationFailed", round=2, commits=2, reveals=2)
    retry = encode_log(TASK, "RoundOpened", round=3, globalModelDigest=cid_to_digest(model1), deadline=4)
    s.blocks["round 2 failed"] = chain.add_block(close_window_tx(2, DEVICE_B, failed, retry))

    # Round 3: the honest two finalise before the liar reveals.
    res3 = results(3, _submissions(chain, ipfs, 3, s.update_cids))
    opened = encode_log(TASK, "RevealOpened", round=3, deadline=300, commits=3)
    chain.add_block(committed(3, HONEST_1, res3), committed(3, HONEST_2, res3), committed(3, LIAR, res3, opened))
    chain.add_block(reveal_tx(3, HONEST_1, *res3[HONEST_1]))
    model3 = s.model_cids[3]
    chain.add_block(reveal_tx(3, HONEST_2, *res3[HONEST_2], final(3, HONEST_2, res3), _next(3, 4, model3)))

    # Round 4: the liar's late reveal of round 3, then a round without it.
    s.blocks["late reveal"] = chain.add_block(reveal_tx(3, LIAR, *res3[LIAR], fault(3, res3)))
    res = results(4, _submissions(chain, ipfs, 4, s.update_cids))
    chain.add_block(committed(4, HONEST_1, res), committed(4, HONEST_2, res))
    opened = encode_log(TASK, "RevealOpened", round=4, deadline=400, commits=2)
    chain.add_block(close_window_tx(4, DEVICE_A, opened))
    chain.add_block(reveal_tx(4, HONEST_1, *res[HONEST_1]))
    chain.add_block(reveal_tx(4, HONEST_2, *res[HONEST_2], final(4, HONEST_2, res), _next(4, 4, s.model_cids[4])))
    return s


TABLES = ("blocks", "txs", "logs", "tasks", "participants", "rounds", "round_txs", "updates", "round_aggregators")


def dump(conn: Any, tables: Sequence[str] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the index's tables, sorted: equal dumps mean equal indexes."""
    return {t: sorted(tuple(r) for r in conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
