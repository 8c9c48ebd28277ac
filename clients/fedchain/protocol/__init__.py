"""Protocol facts every part shares, each with one home: canonical JSON, loopback checks, ε's on-chain encoding,
the deterministic worker environment and retry backoff.

Standard library only, and nothing imported here: a role, the explorer or a worker process started before torch is
configured can import any of these modules for the cost of the module itself.
"""
