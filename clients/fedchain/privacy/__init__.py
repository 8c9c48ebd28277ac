"""Privacy layer: secure aggregation (masking, secret sharing, fixed-point quantisation) and sealed updates.

Pure functions and small data classes over numpy arrays and bytes. Like fedchain.learning it knows nothing of the
chain, IPFS, devices or aggregators: callers move the bytes (`ShareSetup.to_bytes`, `MaskedUpdate.to_bytes`,
`Reveal.to_bytes`, `seal`) and decide who survived.

The names below are loaded on first use (PEP 562): importing one submodule does not import the others
(`cryptography` for the keys, for one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedchain._lazy import lazy_exports

# Eager: `quantize` names both a function and its module, and a lazy name would lose to the submodule once any
# import binds `fedchain.privacy.quantize` on the package. Cheap (numpy only).
from fedchain.privacy.quantize import QuantParams, VectorLayout, dequantize, flatten, quantize, unflatten

if TYPE_CHECKING:
    from fedchain.privacy.keys import EncryptionKey, RoundKeys, derive_encryption_key, derive_round_keys
    from fedchain.privacy.sealed import SealedError, open_sealed, seal
    from fedchain.privacy.secagg import (
        RoundContext,
        SecAggDevice,
        Setups,
        UnmaskResult,
        default_threshold,
        load_setups,
        prg,
        unmask_sum,
    )
    from fedchain.privacy.secagg_messages import (
        MalformedMessage,
        MaskedUpdate,
        NotEnoughShares,
        ReconstructionError,
        Reveal,
        RevealConflict,
        SecAggError,
        ShareDecryptionError,
        ShareSetup,
    )

_SOURCES = {
    "fedchain.privacy.keys": ("EncryptionKey", "RoundKeys", "derive_encryption_key", "derive_round_keys"),
    "fedchain.privacy.sealed": ("SealedError", "open_sealed", "seal"),
    "fedchain.privacy.secagg": (
        "RoundContext",
        "SecAggDevice",
        "Setups",
        "UnmaskResult",
        "default_threshold",
        "load_setups",
        "prg",
        "unmask_sum",
    ),
    "fedchain.privacy.secagg_messages": (
        "MalformedMessage",
        "MaskedUpdate",
        "NotEnoughShares",
        "ReconstructionError",
        "Reveal",
        "RevealConflict",
        "SecAggError",
        "ShareDecryptionError",
        "ShareSetup",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)

__all__ = [
    "EncryptionKey",
    "MalformedMessage",
    "MaskedUpdate",
    "NotEnoughShares",
    "QuantParams",
    "ReconstructionError",
    "Reveal",
    "RevealConflict",
    "RoundContext",
    "RoundKeys",
    "SealedError",
    "SecAggDevice",
    "SecAggError",
    "Setups",
    "ShareDecryptionError",
    "ShareSetup",
    "UnmaskResult",
    "VectorLayout",
    "default_threshold",
    "dequantize",
    "derive_encryption_key",
    "derive_round_keys",
    "flatten",
    "load_setups",
    "open_sealed",
    "prg",
    "quantize",
    "seal",
    "unflatten",
    "unmask_sum",
]
