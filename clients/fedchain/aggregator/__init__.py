"""Aggregator role: an event-triggered worker per task."""
