"""The app level: what a person runs on one machine, composed from the parts. `devnet` (a local chain and IPFS
service, supervised), `deploy` (publish a task and open its rounds), `launch` (the hand-over file that tells
waiting device and aggregator processes which task to join), `demo` (a whole federated run) and `market_demo`
(a compute-market job end to end).

It may import every part; no part imports it (the CLI and the benchmarks do).
"""
