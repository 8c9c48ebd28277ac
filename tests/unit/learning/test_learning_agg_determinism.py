"""Bit-identical aggregation across separate processes, input orders and CPU code paths.

Each process builds the same inputs, shuffles them differently, runs every strategy for three rounds (feeding
weights and server state back) and prints a sha256 per strategy. The second process stands in for another x86-64
CPU: numpy's AVX2/AVX-512 kernels are switched off (NPY_DISABLE_CPU_FEATURES, so it runs its SSE baseline and
another sort), OpenBLAS is forced onto its Nehalem kernels with two threads, and the hash seed differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import hashlib, json, sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__, __cpu_dispatch__
from fedchain.learning import attacks
from fedchain.learning.aggregation import ServerState, StrategySpec, Update, build_strategy
from fedchain.learning.aggregation.krum import exact_sq_distances, multi_krum_select

rng = np.random.default_rng(1234)
shapes = {"hidden.0.weight": (48, 30), "hidden.0.bias": (48,), "output.weight": (2, 48), "output.bias": (2,)}
g0 = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
g0["hidden.0.bias"][:5] = -0.0
updates = []
for i in range(15):
    w = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in g0.items()}
    if i in (2, 9):
        w = attacks.sign_flip(g0, w, 10.0)
    elif i == 5:
        w = attacks.scale(g0, w)
    elif i == 11:
        w = attacks.constant(g0, 0.5)
    elif i == 13:
        w = attacks.gaussian_noise(w, 0.2, seed=i)
    device = ("0x%040X" if i % 2 else "0x%040x") % int(rng.integers(0, 2**62))
    updates.append(Update(device, w, int(rng.integers(5, 100))))
updates.append(Update("0x" + "f" * 40, {k: v.copy() for k, v in updates[3].weights.items()}, 7))  # a duplicate
perm = np.random.default_rng(int(sys.argv[1])).permutation(len(updates))
updates = [updates[i] for i in perm]

specs = {name: StrategySpec(name) for name in
         ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedprox", "median")}
specs["trimmed-mean"] = StrategySpec("trimmed-mean", {"beta": 0.2})
specs["krum"] = StrategySpec("krum", {"f": 3})
specs["multi-krum"] = StrategySpec("multi-krum", {"f": 3})
specs["bulyan"] = StrategySpec("bulyan", {"f": 3})
specs["fedadam+clip"] = StrategySpec("fedadam", {"clip_norm": 2.0})
specs["multi-krum+clip"] = StrategySpec("multi-krum", {"f": 3, "m": 6, "clip_norm": 2.0})
out = {}
for label, spec in specs.items():
    strategy, g, state, h = build_strategy(spec), g0, ServerState(), hashlib.sha256()
    for _ in range(3):
        r = strategy.aggregate(g, updates, state)
        g, state = r.weights, r.state
        for k in sorted(g):
            h.update(k.encode() + g[k].tobytes())
        for k, v in state.to_tensors().items():
            h.update(k.encode() + v.tobytes())
        h.update(json.dumps([r.accepted, sorted(r.excluded.items()), r.clipped]).encode())
    out[label] = h.hexdigest()
ordered = sorted(updates, key=lambda u: u.device.lower())
weights = [u.weights for u in ordered]
sel = multi_krum_select(g0, weights, f=3, m=7, method="exact")
out["exact-distances"] = hashlib.sha256(exact_sq_distances(weights).tobytes() + repr(sel.indices).encode()).hexdigest()
out["_x86_v3_dispatch"] = bool(__cpu_features__.get("X86_V3")) and "X86_V3" in __cpu_dispatch__
print(json.dumps(out, sort_keys=True))
"""

OTHER_CPU = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Nehalem",
    "OPENBLAS_NUM_THREADS": "2",
    "PYTHONHASHSEED": "7",
}


def _start(order_seed: int, extra_env: dict[str, str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in OTHER_CPU}
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(order_seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _result(process: subprocess.Popen[str]) -> dict[str, object]:
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_every_strategy_is_bit_identical_across_processes_and_cpu_paths() -> None:
    processes = [_start(1, {"OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}), _start(2, OTHER_CPU)]
    first, second = (_result(p) for p in processes)
    assert second["_x86_v3_dispatch"] is False  # the second process really ran numpy's baseline kernels
    first.pop("_x86_v3_dispatch")
    second.pop("_x86_v3_dispatch")
    assert len(first) == 13
    differing = sorted(k for k in first if first[k] != second[k])
    assert not differing, f"results differ between processes for {differing}"
