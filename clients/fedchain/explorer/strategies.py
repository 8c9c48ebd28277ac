"""The on-chain aggregation strategy ids as the explorer names them, without importing the learning stack.

STRATEGY_NAMES are the canonical names (fedchain.learning.aggregation.registry.STRATEGY_IDS): a report naming
another strategy than its task's is flagged. STRATEGIES are the names pages show.
"""

from __future__ import annotations

STRATEGY_NAMES = {
    0: "fedavg",
    1: "fedavgm",
    2: "fedadam",
    3: "fedyogi",
    4: "fedprox",
    5: "median",
    6: "trimmed-mean",
    7: "krum",
    8: "multi-krum",
    9: "bulyan",
}
STRATEGIES = {
    0: "FedAvg",
    1: "FedAvgM",
    2: "FedAdam",
    3: "FedYogi",
    4: "FedProx",
    5: "Median",
    6: "Trimmed mean",
    7: "Krum",
    8: "Multi-Krum",
    9: "Bulyan",
}
