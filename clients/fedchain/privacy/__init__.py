"""Privacy layer: secure aggregation (masking, secret sharing, fixed-point quantisation) and sealed updates.

Pure functions and small data classes over numpy arrays and bytes. Like fedchain.learning it knows nothing of the
chain, IPFS, devices or aggregators: callers move the bytes (`ShareSetup.to_bytes`, `MaskedUpdate.to_bytes`,
`Reveal.to_bytes`, `seal`) and decide who survived.
"""

from fedchain.privacy.keys import EncryptionKey, RoundKeys, derive_encryption_key, derive_round_keys
from fedchain.privacy.quantize import QuantParams, VectorLayout, dequantize, flatten, quantize, unflatten
from fedchain.privacy.sealed import SealedError, open_sealed, seal
from fedchain.privacy.secagg import (
    MalformedMessage,
    MaskedUpdate,
    NotEnoughShares,
    ReconstructionError,
    Reveal,
    RevealConflict,
    RoundContext,
    SecAggDevice,
    SecAggError,
    Setups,
    ShareDecryptionError,
    ShareSetup,
    UnmaskResult,
    default_threshold,
    load_setups,
    prg,
    unmask_sum,
)

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
