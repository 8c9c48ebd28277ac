"""`fedchain bench privacy`: what privacy costs, written to reports/privacy.json.

    python -m fedchain.bench.privacy [--out reports/privacy.json] [--quick] [--seeds 3]

1. Secure aggregation against plain uploads at 10, 50 and 100 devices, for the task's model and for a 100k-parameter
   model: per-device seconds (setup blob, masking) and bytes uploaded (setup + masked update + unmasking shares
   against one safetensors update), and the aggregator's seconds to unmask with no dropout and with 20% of the
   devices dropping out after their setup (their masks rebuilt from the survivors' shares). In process: the
   protocol's own cost, without the chain or IPFS.
2. Accuracy against ε (∞, 8, 4, 1) with client-level DP (`privacy_sim.accuracy_vs_epsilon`: 100 devices, the
   product's IoT scale), and the demo's configuration (10 devices, 10 rounds, clip 0.25, distributed noise with 20%
   dropout) at ∞ and 8.
3. Personalisation for devices with 20 samples: bespoke (FedPer head, fine-tuned global) against the global model
   and against training alone (`privacy_sim.personalisation_table`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedchain.bench.privacy_sim import accuracy_vs_epsilon, personalisation_table, simulate_private
from fedchain.learning.model import build_model, get_weights
from fedchain.learning.spec import default_task_spec
from fedchain.privacy.accountant import noise_multiplier_for_chain
from fedchain.privacy.protocol import account_secret, encryption_key_of, round_context
from fedchain.privacy.secagg import SecAggDevice, unmask_sum

TASK = "0x" + "fc" * 20
DEVICE_COUNTS = (10, 50, 100)


def _safetensors_bytes(params: int) -> int:
    """Size of a plain update of `params` float32 values as safetensors (how plain updates travel)."""
    from safetensors.numpy import save

    return len(save({"w": np.zeros(params, dtype=np.float32)}))


def _finite(value: Any) -> Any:
    """JSON has no infinity: ∞ becomes the string "inf"."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def secagg_cost(devices: int, params: int, dropout: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """One round of secure aggregation in process: per-device seconds and bytes, aggregator seconds."""
    rng = np.random.default_rng(seed)
    accounts = {"0x" + f"{i + 1:040x}": (i + 1).to_bytes(32, "big") for i in range(devices)}
    keys = {a: encryption_key_of(k).public for a, k in accounts.items()}
    ctx = round_context(TASK, 1, keys, 0.6)
    parties = {a: SecAggDevice(account_secret(k), bytes.fromhex(a[2:]), ctx) for a, k in accounts.items()}
    started = time.perf_counter()
    setups = {bytes.fromhex(a[2:]): p.shares_blob() for a, p in parties.items()}
    setup_seconds = (time.perf_counter() - started) / devices
    deltas = {a: rng.normal(scale=0.01, size=params) for a in accounts}
    masked = {}
    started = time.perf_counter()
    for a, p in parties.items():
        masked[a] = p.mask(deltas[a], setups)
    mask_seconds = (time.perf_counter() - started) / devices
    results: dict[str, Any] = {}
    for label, gone in (("no_dropout", 0), (f"dropout_{round(dropout * 100)}", round(dropout * devices))):
        dropped = sorted(accounts)[:gone]
        survivors = [a for a in sorted(accounts) if a not in dropped]
        surv_b = [bytes.fromhex(a[2:]) for a in survivors]
        drop_b = [bytes.fromhex(a[2:]) for a in dropped]
        # Fresh parties: a device reveals once per round, and each case is its own round here.
        fresh = {a: SecAggDevice(account_secret(accounts[a]), bytes.fromhex(a[2:]), ctx) for a in survivors}
        for a in survivors:
            fresh[a].mask(deltas[a], {b: setups[b] for b in surv_b + drop_b})
        reveals = [fresh[a].reveal(setups, surv_b, drop_b) for a in survivors]
        started = time.perf_counter()
        total = unmask_sum(ctx, setups, [masked[a] for a in survivors], reveals).total
        seconds = time.perf_counter() - started
        error = float(np.max(np.abs(total - np.sum([deltas[a] for a in survivors], axis=0))))
        results[label] = {
            "dropped": gone,
            "unmask_seconds": round(seconds, 4),
            "max_abs_error": error,
            "reveal_bytes": len(reveals[0].to_bytes()),
        }
    setup_bytes = len(next(iter(setups.values())))
    masked_bytes = len(next(iter(masked.values())).to_bytes())
    plain = _safetensors_bytes(params)
    upload = setup_bytes + masked_bytes + results["no_dropout"]["reveal_bytes"]
    return {
        "devices": devices,
        "params": params,
        "threshold": ctx.threshold,
        "device_setup_seconds": round(setup_seconds, 5),
        "device_mask_seconds": round(mask_seconds, 5),
        "device_upload_bytes": upload,
        "setup_bytes": setup_bytes,
        "masked_update_bytes": masked_bytes,
        "plain_update_bytes": plain,
        "upload_ratio_vs_plain": round(upload / plain, 3),
        "aggregator": results,
    }


def demo_configuration(seeds: Sequence[int]) -> dict[str, Any]:
    """The demo's private setting (10 devices, 10 rounds, clip 0.25, distributed noise, 20% dropout) at ∞ and 8."""
    rows: dict[str, Any] = {}
    for label, epsilon in (("inf", math.inf), ("8", 8.0)):
        z = noise_multiplier_for_chain(epsilon, 1e-5, 10)
        accs = [
            simulate_private(
                devices=10,
                rounds=10,
                alpha=None,
                seed=s,
                noise_multiplier=z,
                clip_norm=0.25,
                noise="distributed",
                dropout=0.2,
                min_survivors=7,
            ).accuracy
            for s in seeds
        ]
        rows[label] = {"noise_multiplier": z, "accuracy": round(float(np.mean(accs)), 4), "per_seed": accs}
    rows["drop_points"] = round((rows["inf"]["accuracy"] - rows["8"]["accuracy"]) * 100, 2)
    return rows


def run(quick: bool = False, seeds: int = 3) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    spec = default_task_spec()
    model_params = int(sum(v.size for v in get_weights(build_model(spec.model, seed=0)).values()))
    seed_list = tuple(range(1 if quick else seeds))
    counts = (10,) if quick else DEVICE_COUNTS
    secure = {
        "task_model": [secagg_cost(n, model_params) for n in counts],
        "params_100k": [secagg_cost(n, 100_000) for n in counts],
    }
    epsilon_kwargs: dict[str, Any] = {"devices": 20, "rounds": 5} if quick else {}
    accuracy = accuracy_vs_epsilon(seeds=seed_list, **epsilon_kwargs)
    personal = personalisation_table(seeds=seed_list, rounds=5 if quick else 20)
    return {
        "benchmark": "fedchain bench privacy",
        "quick": quick,
        "secure_aggregation": secure,
        "accuracy_vs_epsilon": {("inf" if math.isinf(k) else str(k)): v for k, v in accuracy.items()},
        "demo_configuration": demo_configuration(seed_list),
        "personalisation": personal,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/privacy.json"))
    parser.add_argument("--quick", action="store_true", help="one seed, 10 devices, short runs")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(quick=args.quick, seeds=args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite(result), indent=2, default=float, allow_nan=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
