"""Device role: one process per device."""
