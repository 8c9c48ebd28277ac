"""Types shared across the learning package."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np

# A model's parameters: state_dict name -> float32 array. The one representation used everywhere.
Weights: TypeAlias = dict[str, np.ndarray]

__all__ = ["Weights"]
