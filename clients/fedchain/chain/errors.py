"""Errors raised by the chain layer, with contract custom errors decoded by name."""

from __future__ import annotations

from typing import Any


class ChainError(Exception):
    """Base class for errors talking to an Ethereum node."""


class ChainUnavailable(ChainError):
    """The RPC endpoint cannot be reached."""


class ArtifactMissing(ChainError):
    """Compiled contract artifacts are not where they should be."""


class ContractRevert(ChainError):
    """A call or transaction reverted; `error` is the decoded custom error name when the ABI knows it."""

    def __init__(self, error: str, args: tuple[Any, ...] = (), raw: str = "") -> None:
        self.error = error
        self.args_ = args
        self.raw = raw
        detail = f"{error}({', '.join(_fmt(a) for a in args)})" if error else f"revert data {raw or '(none)'}"
        super().__init__(f"contract reverted: {detail}")


def _fmt(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value) if isinstance(value, str) else str(value)
