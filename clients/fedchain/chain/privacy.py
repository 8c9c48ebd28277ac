"""Reading a task's privacy state from the chain: who takes part in a round's secure aggregation, the round's
published setups, masked updates and unmasking shares, and the aggregators' encryption keys.

Every party must see the same sets, so they are read from the chain at fixed points: the participants of round r
are the approved devices with a registered encryption key in the block that opened r (a key set later counts from
the next round); setups, updates and shares are the round's events in chain order. The setups of a round are its
frozen setup set: the chain accepts them only in the round's setup window, and masked updates only after it.
"""

from __future__ import annotations

from web3 import Web3

from fedchain.chain.events import EventFollower
from fedchain.chain.task import AGGREGATOR_ROLE, TaskClient

ZERO_KEY = b"\x00" * 32


def _events(task: TaskClient) -> EventFollower:
    return EventFollower(task.w3, task.address, task.abi)


def round_opened_block(task: TaskClient, round_index: int) -> int:
    """The block of the round's RoundOpened event; LookupError before it exists."""
    event = next(_events(task).history("RoundOpened", round=round_index), None)
    if event is None:
        raise LookupError(f"round {round_index} of task {task.address} has not opened")
    return int(event.block_number)


def secagg_participants(task: TaskClient, round_index: int) -> dict[str, bytes]:
    """Approved devices holding a registered encryption key when the round opened: {address: X25519 public key}."""
    block = round_opened_block(task, round_index)
    candidates = {Web3.to_checksum_address(e.args["device"]) for e in _events(task).history("DeviceApproved")}
    functions = task.contract.functions
    out: dict[str, bytes] = {}
    for device in sorted(candidates, key=str.lower):
        approved = functions.deviceInfo(device).call(block_identifier=block)[0]
        key = bytes(functions.encryptionKey(device).call(block_identifier=block))
        if approved and key != ZERO_KEY:
            out[device] = key
    return out


def _per_device(task: TaskClient, event: str, round_index: int, field: str) -> dict[str, bytes]:
    return {
        Web3.to_checksum_address(e.args["device"]): bytes(e.args[field])
        for e in _events(task).history(event, round=round_index)
    }


def round_setups(task: TaskClient, round_index: int) -> dict[str, bytes]:
    """{device: setup digest} of the round, in chain order."""
    return _per_device(task, "SetupSubmitted", round_index, "setupDigest")


def setup_set_frozen(task: TaskClient, round_index: int) -> int | None:
    """The size of the round's frozen setup set once a masked update announced it (SetupSetFrozen), else None.
    Its presence proves the chain's time passed the round's setup deadline: no further setup can land."""
    event = next(_events(task).history("SetupSetFrozen", round=round_index), None)
    return None if event is None else int(event.args["setups"])


def round_updates(task: TaskClient, round_index: int) -> dict[str, bytes]:
    """{device: update digest} of the round, in chain order."""
    return _per_device(task, "UpdateSubmitted", round_index, "updateDigest")


def round_unmask_shares(task: TaskClient, round_index: int) -> dict[str, bytes]:
    """{device: unmasking-shares digest} of the round, in chain order."""
    return _per_device(task, "UnmaskSharesSubmitted", round_index, "revealDigest")


def aggregator_keys(task: TaskClient) -> dict[str, bytes]:
    """Current aggregators with a registered encryption key: {address: X25519 public key}, sorted by address."""
    events = _events(task)
    holders = {
        Web3.to_checksum_address(e.args["account"])
        for e in events.history("RoleGranted")
        if bytes(e.args["role"]) == bytes(AGGREGATOR_ROLE)
    }
    out: dict[str, bytes] = {}
    for account in sorted(holders, key=str.lower):
        if not task.is_aggregator(account):
            continue
        key = bytes(task.contract.functions.encryptionKey(account).call())
        if key != ZERO_KEY:
            out[account] = key
    return out


__all__ = [
    "aggregator_keys",
    "round_opened_block",
    "round_setups",
    "round_unmask_shares",
    "round_updates",
    "secagg_participants",
    "setup_set_frozen",
]
