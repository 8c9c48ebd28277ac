"""Benchmarks and experiment harnesses: they measure the parts, no part imports them (only the demo, for the
non-private reference accuracy of a private run, simulates with `simulation`).

Each module is run by `fedchain bench <name>` (or `python -m fedchain.bench.<module>`) and writes reports/*.json:
rounds (gas and seconds per round), explorer, aggregation (robust-rule speed), attacks (+ attacks_report),
privacy (+ privacy_sim), market, flower (+ flower_app, flower_report, process_meter), throughput, device_footprint.
simulation is the in-process federated run (strategies under attack) the attack and privacy harnesses build on.
Nothing is imported here: `flower_app` also runs in Flower's own virtual environment.
"""
