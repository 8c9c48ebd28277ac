"""Aggregator role: an event-triggered worker per task."""

# Exit code of `fedchain aggregator` when the task suspended it (maxAggregatorFaults reached): an expected end (a
# lying aggregator in the demo's evaluation mode reaches it), not a crash.
SUSPENDED_EXIT_CODE = 3
