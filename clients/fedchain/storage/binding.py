"""Binding an update file to where it may be counted: (chain id, task address, round, device address).

A device writes these four values into the safetensors `__metadata__` of every update it uploads, so the file's
content (and therefore its CID, the digest the chain records) names the one submission it belongs to. The
aggregator compares them with the submission the chain recorded: a file submitted by another account (a copied
digest) or in another round (a replayed digest), on another task or chain, does not match and is left out. The
binding costs no gas: the chain keeps only the digest, the check is off chain and deterministic (the same verdict in
every aggregator, whatever the order it reads the files in).

Pure: no chain, no IPFS. Addresses compare case-insensitively (checksummed or not), numbers as canonical decimal
strings (no sign, no leading zeros), so there is exactly one spelling of a valid binding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The metadata keys of the binding (the device also writes fedchain.kind, fedchain.num_samples and timings).
CHAIN_ID_KEY = "fedchain.chain_id"
TASK_KEY = "fedchain.task"
ROUND_KEY = "fedchain.round"
DEVICE_KEY = "fedchain.device"
BINDING_KEYS = (CHAIN_ID_KEY, TASK_KEY, ROUND_KEY, DEVICE_KEY)

# Why an update's binding is refused (the reason recorded in the round's report).
REASON_BINDING_MISSING = "binding-missing"
REASON_BINDING_MISMATCH = "binding-mismatch"


@dataclass(frozen=True)
class UpdateBinding:
    """The one submission an update file may be counted for."""

    chain_id: int
    task: str
    round: int
    device: str

    def __post_init__(self) -> None:
        for name in ("chain_id", "round"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"UpdateBinding.{name} must be a non-negative integer, got {value!r}")
        for name in ("task", "device"):
            value = getattr(self, name)
            if not _is_address(value):
                raise ValueError(f"UpdateBinding.{name} must be a 0x-prefixed 20-byte hex address, got {value!r}")

    def metadata(self) -> dict[str, str]:
        """The binding as safetensors metadata entries (addresses as given: checksummed by the device)."""
        return {
            CHAIN_ID_KEY: str(self.chain_id),
            TASK_KEY: self.task,
            ROUND_KEY: str(self.round),
            DEVICE_KEY: self.device,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> UpdateBinding:
        """The binding a file claims; BindingError(binding-missing) if a key is absent or not well-formed."""
        absent = [key for key in BINDING_KEYS if key not in metadata]
        if absent:
            raise BindingError(
                REASON_BINDING_MISSING,
                f"the update's safetensors metadata lacks {absent}: every update must name the chain, task, round "
                "and device it was made for (devices of this version write them)",
            )
        chain_id, round_index = metadata[CHAIN_ID_KEY], metadata[ROUND_KEY]
        task, device = metadata[TASK_KEY], metadata[DEVICE_KEY]
        for key, text in ((CHAIN_ID_KEY, chain_id), (ROUND_KEY, round_index)):
            if not _is_decimal(text):
                raise BindingError(REASON_BINDING_MISSING, f"{key} must be a canonical decimal integer, got {text!r}")
        for key, text in ((TASK_KEY, task), (DEVICE_KEY, device)):
            if not _is_address(text):
                raise BindingError(REASON_BINDING_MISSING, f"{key} must be a 0x-prefixed hex address, got {text!r}")
        return cls(int(chain_id), task, int(round_index), device)

    def mismatches(self, expected: UpdateBinding) -> list[str]:
        """The fields in which this binding differs from `expected` (empty when they match)."""
        out = []
        if self.chain_id != expected.chain_id:
            out.append(f"chain id {self.chain_id} (expected {expected.chain_id})")
        if self.task.lower() != expected.task.lower():
            out.append(f"task {self.task} (expected {expected.task})")
        if self.round != expected.round:
            out.append(f"round {self.round} (expected {expected.round})")
        if self.device.lower() != expected.device.lower():
            out.append(f"device {self.device} (submitted by {expected.device})")
        return out


class BindingError(ValueError):
    """An update whose binding is absent or names another submission; `reason` is the report's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_binding(metadata: Mapping[str, str], expected: UpdateBinding) -> UpdateBinding:
    """The file's binding if it is exactly `expected`; BindingError (binding-missing / binding-mismatch) otherwise."""
    claimed = UpdateBinding.from_metadata(metadata)
    differences = claimed.mismatches(expected)
    if differences:
        raise BindingError(
            REASON_BINDING_MISMATCH,
            "the update is bound to another submission: " + "; ".join(differences),
        )
    return claimed


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0")) and len(text) <= 78


def _is_address(text: object) -> bool:
    if not isinstance(text, str) or len(text) != 42 or not text.startswith("0x"):
        return False
    return all(c in "0123456789abcdefABCDEF" for c in text[2:])


__all__ = [
    "BINDING_KEYS",
    "CHAIN_ID_KEY",
    "DEVICE_KEY",
    "REASON_BINDING_MISMATCH",
    "REASON_BINDING_MISSING",
    "ROUND_KEY",
    "TASK_KEY",
    "BindingError",
    "UpdateBinding",
    "check_binding",
]
