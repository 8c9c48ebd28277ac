"""Aggregation strategies, one per module."""

from fedchain.learning.aggregation.fedavg import StreamingFedAvg, fedavg

__all__ = ["StreamingFedAvg", "fedavg"]
