"""Work units: bit-identical in one process and across processes (also with numpy/BLAS pinned to older kernels)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional

from fedchain.learning import exact_cnn, units
from fedchain.learning.model import build_model, get_weights, set_weights
from fedchain.learning.spec import ModelSpec
from fedchain.learning.units import (
    JobPlan,
    check_deterministic_runtime,
    default_ecg_task,
    initial_checkpoint,
    merge_stage,
    result_digest,
    run_unit,
)
from fedchain.protocol.worker_env import WORKER_ENV
from fedchain.storage.codec import encode_weights

REPO = Path(__file__).resolve().parents[3]

WORKER = """
import hashlib, sys
from fedchain.learning.units import JobPlan, check_deterministic_runtime, initial_checkpoint, result_digest, run_unit
from fedchain.storage.codec import encode_weights
plan = JobPlan.from_json(bytes.fromhex(sys.argv[1]))
weights = run_unit(plan, initial_checkpoint(plan), 1, 2)
report = check_deterministic_runtime()
print(result_digest(weights).hex(), hashlib.sha256(encode_weights(weights)).hexdigest(), report.canary_ok,
      report.torch_capability)
"""


@pytest.fixture(scope="module")
def plan() -> JobPlan:
    return JobPlan(task=default_ecg_task(), num_stages=2, units_per_stage=3, steps_per_unit=20, seed=3).pin_data()


def test_unit_repeats_bit_identically_in_process(plan: JobPlan) -> None:
    start = initial_checkpoint(plan)
    first = run_unit(plan, start, 1, 2)
    second = run_unit(plan, {k: v.copy() for k, v in start.items()}, 1, 2)
    assert result_digest(first) == result_digest(second)
    assert all(v.dtype == np.float32 for v in first.values())
    assert result_digest(first) != result_digest(start)  # it did train


def test_unit_bit_identical_across_processes(plan: JobPlan) -> None:
    """Two fresh interpreters: one with WORKER_ENV, one emulating an older CPU for numpy and OpenBLAS
    (baseline SIMD kernels, Prescott BLAS kernels) and torch unpinned. Both agree with this process."""
    expected = run_unit(plan, initial_checkpoint(plan), 1, 2)
    base = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    pinned = {**base, **WORKER_ENV}
    older = {**base, "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Prescott"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, plan.to_json().hex()],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in (pinned, older)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        outputs.append(out.split())
    want = [result_digest(expected).hex(), hashlib.sha256(encode_weights(expected)).hexdigest(), "True"]
    assert outputs[0][:3] == want
    assert outputs[1][:3] == want
    assert outputs[0][3] == "DEFAULT"  # WORKER_ENV pins torch's kernels at start-up


def test_units_differ_by_stage_index_and_seed(plan: JobPlan) -> None:
    start = initial_checkpoint(plan)
    other_seed = JobPlan.from_dict({**plan.to_dict(), "seed": plan.seed + 1})
    digests = {
        result_digest(run_unit(plan, start, 0, 0)),
        result_digest(run_unit(plan, start, 1, 0)),
        result_digest(run_unit(plan, start, 0, 1)),
        result_digest(run_unit(other_seed, start, 0, 0)),
    }
    assert len(digests) == 4


def test_merge_stage_is_the_float64_mean_in_order() -> None:
    checkpoint = {"w": np.zeros(3, dtype=np.float32), "b": np.zeros((), dtype=np.float32)}
    results = [
        {"w": np.array([1.0, 0.1, -2.0], np.float32), "b": np.array(1.0, np.float32)},
        {"w": np.array([2.0, 0.2, 3.0], np.float32), "b": np.array(2.0, np.float32)},
        {"w": np.array([4.0, 0.3, 5.0], np.float32), "b": np.array(4.0, np.float32)},
    ]
    merged = merge_stage(checkpoint, results)
    assert merged["w"].dtype == np.float32 and merged["b"].shape == ()
    assert merged["w"][0] == np.float32(7.0 / 3.0) and merged["w"][2] == np.float32(2.0)
    wide = (np.float64(np.float32(0.1)) + np.float64(np.float32(0.2)) + np.float64(np.float32(0.3))) / 3
    assert merged["w"][1] == np.float32(wide)
    assert float(merged["b"]) == np.float32(7.0 / 3.0)
    again = merge_stage(checkpoint, [{k: v.copy() for k, v in r.items()} for r in results])
    assert result_digest(again) == result_digest(merged)
    with pytest.raises(ValueError):
        merge_stage(checkpoint, [])
    with pytest.raises(ValueError):
        merge_stage(checkpoint, [{"w": np.zeros(4, np.float32), "b": np.zeros((), np.float32)}])
    with pytest.raises(ValueError):
        merge_stage(checkpoint, [{"w": np.zeros(3, np.float64), "b": np.zeros((), np.float32)}])


def test_result_digest_is_canonical() -> None:
    w = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([0.5], np.float32)}
    digest = result_digest(w)
    assert digest == result_digest({"b": w["b"], "a": w["a"]})  # insertion order does not matter
    assert digest == result_digest({"a": np.asfortranarray(w["a"]), "b": w["b"].astype(">f4")})  # layout neither
    assert digest != result_digest({"a": w["a"].reshape(3, 2), "b": w["b"]})
    assert digest != result_digest({"a": w["a"], "c": w["b"]})
    assert digest != result_digest({"a": w["a"].astype(np.float64), "b": w["b"]})
    assert result_digest({"z": np.zeros(1, np.float32)}) != result_digest({"z": -np.zeros(1, np.float32)})
    assert len(digest) == 32


def test_canary_and_runtime_report() -> None:
    report = check_deterministic_runtime()
    assert report.canary_ok and report.ok
    assert report.canary_digest == units.CANARY_DIGEST
    assert report.torch_capability == str(torch.backends.cpu.get_cpu_capability())
    assert report.torch_pinned == (report.torch_capability == "DEFAULT")
    assert WORKER_ENV["ATEN_CPU_CAPABILITY"] == "default"


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(kind="cnn1d", input_dim=40, hidden=(3, 4, 5), num_classes=3),
        ModelSpec(kind="mlp", input_dim=7, hidden=(6, 5), num_classes=2),
    ],
)
def test_engine_matches_torch_autograd(spec: ModelSpec) -> None:
    """The float64 engine is the registered torch model: same logits and gradients (so weights interchange)."""
    model = build_model(spec, seed=1).double()
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((9, spec.input_dim)), rng.integers(0, spec.num_classes, 9)
    engine = exact_cnn.Engine(spec)
    logits, tape = engine.forward(params, x)
    onehot = (y[:, None] == np.arange(spec.num_classes)).astype(np.float64)
    grads = engine.backward(params, tape, (exact_cnn.softmax(logits) - onehot) / len(y))
    torch_logits = model(torch.from_numpy(x))
    functional.cross_entropy(torch_logits, torch.from_numpy(y)).backward()
    np.testing.assert_allclose(logits, torch_logits.detach().numpy(), rtol=0, atol=1e-12)
    for name, param in model.named_parameters():
        assert param.grad is not None
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=0, atol=1e-12)


def test_unit_matches_torch_sgd_closely(plan: JobPlan) -> None:
    """The same unit trained by torch (float32) lands within float32 noise of the reproducible one."""
    start = initial_checkpoint(plan)
    ours = run_unit(plan, start, 0, 1)
    train, _ = units.plan_data(plan)
    shard = units.shards(plan)[1]
    batches = units._batches(units.unit_seed(plan, 0, 1), len(shard), plan.steps_per_unit, plan.batch_size)
    x, y = torch.from_numpy(np.array(train.x[shard])), torch.from_numpy(np.array(train.y[shard]))
    model = build_model(plan.task.model)
    set_weights(model, start)
    optimizer = torch.optim.SGD(model.parameters(), lr=plan.lr, momentum=plan.momentum)
    for batch in batches:
        index = torch.from_numpy(batch)
        optimizer.zero_grad()
        functional.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()
    theirs = get_weights(model)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-4)


def test_exp_matches_libm() -> None:
    z = np.concatenate([np.linspace(-700.0, 0.0, 20001), -np.logspace(-300, 2, 500)])
    got = exact_cnn._exp_nonpositive(z)
    np.testing.assert_allclose(got, np.exp(z), rtol=4e-16, atol=0)
    assert exact_cnn._exp_nonpositive(np.array([0.0]))[0] == 1.0


def test_dot_order_depends_only_on_shapes() -> None:
    rng = np.random.default_rng(1)
    for k in (3, exact_cnn.SEQUENTIAL_SUM_MAX, exact_cnn.SEQUENTIAL_SUM_MAX + 37):
        a, b = rng.standard_normal((5, k)), rng.standard_normal((k, 4))
        np.testing.assert_allclose(exact_cnn._dot(a, b), a @ b, rtol=1e-12, atol=1e-12)
        assert exact_cnn._dot(a, b).tobytes() == exact_cnn._dot(a.copy(order="F"), b.copy(order="F")).tobytes()
