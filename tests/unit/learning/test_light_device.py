"""Issue 12 (a light device): the numpy-only data split and CSV reader, the Optimizer-free SGD and the warm-up
are bit-identical to what they replace; the device's imports stay light."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from fedchain.learning import train as train_module
from fedchain.learning.data import _breast_cancer, device_partition, load_dataset, stratified_split
from fedchain.learning.model import build_model, get_weights
from fedchain.learning.spec import DatasetSpec, ModelSpec, TrainSpec
from fedchain.learning.train import train_local, warm_up


def test_breast_cancer_csv_is_what_sklearn_loads() -> None:
    x, y = _breast_cancer()
    x_ref, y_ref = load_breast_cancer(return_X_y=True)
    assert x.dtype == x_ref.dtype and y.dtype == y_ref.dtype
    assert np.array_equal(x, x_ref) and np.array_equal(y, y_ref)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1])
@pytest.mark.parametrize("test_fraction", [0.1, 0.2, 0.25, 1 / 3, 0.5, 0.9])
@pytest.mark.parametrize("labels", ["breast_cancer", "three_uneven", "ties"])
def test_stratified_split_matches_sklearn(seed: int, test_fraction: float, labels: str) -> None:
    y = {
        "breast_cancer": load_breast_cancer(return_X_y=True)[1],
        # Uneven classes, shuffled: remainders differ per class.
        "three_uneven": np.random.default_rng(5).permutation(np.repeat([0, 1, 2], [50, 31, 7])),
        # Equal classes: _approximate_mode breaks ties with the RNG.
        "ties": np.tile(np.arange(5), 12),
    }[labels]
    rows = np.arange(len(y))
    train_ref, test_ref = train_test_split(rows, test_size=test_fraction, random_state=seed, stratify=y)
    train, test = stratified_split(y, test_fraction, seed)
    assert np.array_equal(train, train_ref) and np.array_equal(test, test_ref)
    assert train.dtype == np.int64 and test.dtype == np.int64


def test_stratified_split_refuses_what_sklearn_refuses() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        stratified_split(np.array([0, 0, 0, 1]), 0.5, 0)
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(np.array([0, 1] * 5), 1.0, 0)
    with pytest.raises(ValueError, match="classes"):
        stratified_split(np.repeat(np.arange(5), 2), 0.2, 0)


def test_load_dataset_equals_the_sklearn_pipeline() -> None:
    spec = DatasetSpec(test_fraction=0.25, seed=3)
    train, test = load_dataset(spec)
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=3, stratify=y)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    assert np.array_equal(train.x, ((x_train - mean) / std).astype(np.float32))
    assert np.array_equal(test.x, ((x_test - mean) / std).astype(np.float32))
    assert np.array_equal(train.y, y_train) and np.array_equal(test.y, y_test)


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.9, 0.0), (0.0, 0.0), (0.5, 1e-3), (0.0, 1e-2)], ids=str)
def test_sgd_matches_torch_optim_sgd(momentum: float, weight_decay: float) -> None:
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    ours = copy.deepcopy(reference)
    frozen_ref, frozen_ours = reference[0].bias, ours[0].bias  # a parameter without a gradient in some steps
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    opt_ours = train_module._SGD(ours.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        x = torch.randn(8, 6, generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        for model, opt, frozen in ((reference, opt_ref, frozen_ref), (ours, opt_ours, frozen_ours)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if step % 4 == 1:
                frozen.grad = None
            opt.step()
        for a, b in zip(reference.parameters(), ours.parameters(), strict=True):
            assert torch.equal(a, b)


def _small_run(model: torch.nn.Module, spec: TrainSpec, mu: float = 0.0) -> tuple[dict, float]:
    train, _ = load_dataset(DatasetSpec())
    data = device_partition(train, 1, 4, None, 0)
    result = train_local(model, data, spec, seed=77, proximal_mu=mu)
    return get_weights(model), result.loss


@pytest.mark.parametrize("mu", [0.0, 0.05])
def test_warm_up_changes_no_weights_and_no_rng(mu: float) -> None:
    spec = TrainSpec(local_epochs=2)
    model_spec = ModelSpec(dropout=0.2)  # dropout draws from torch's global RNG
    train, _ = load_dataset(DatasetSpec())
    data = device_partition(train, 0, 4, None, 0)

    cold = build_model(model_spec, seed=5)
    torch.manual_seed(123)
    np.random.seed(9)
    cold_weights, cold_loss = _small_run(cold, spec, mu)
    cold_next = torch.rand(4), np.random.random(4)

    warm = build_model(model_spec, seed=5)
    before = {k: v.copy() for k, v in get_weights(warm).items()}
    torch.manual_seed(123)
    np.random.seed(9)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    seconds = warm_up(warm, data, spec, proximal_mu=mu)
    assert seconds >= 0
    assert torch.equal(torch.get_rng_state(), torch_state)
    after_state = np.random.get_state()
    assert np.array_equal(after_state[1], numpy_state[1]) and after_state[2:] == numpy_state[2:]
    assert all(np.array_equal(v, before[k]) for k, v in get_weights(warm).items())
    assert all(p.grad is None for p in warm.parameters())

    warm_weights, warm_loss = _small_run(warm, spec, mu)
    assert warm_loss == cold_loss
    assert all(np.array_equal(warm_weights[k], cold_weights[k]) for k in cold_weights)
    warm_next = torch.rand(4), np.random.random(4)
    assert torch.equal(warm_next[0], cold_next[0]) and np.array_equal(warm_next[1], cold_next[1])


# What a device process never needs: scientific stacks, the explorer's web server, the market's Ray, brownie.
FORBIDDEN = ("sklearn", "scipy", "pandas", "matplotlib", "fastapi", "uvicorn", "opacus", "ray", "brownie", "neurokit2")


def _modules_after(code: str) -> list[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loaded(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(roots))


def test_cli_import_is_light() -> None:
    modules = _modules_after("import fedchain.cli")
    assert _loaded(modules, (*FORBIDDEN, "torch", "web3", "numpy")) == []


def test_device_path_imports_nothing_it_does_not_need() -> None:
    # The device's whole path: its module, then what a round does (dataset, model, a local round).
    modules = _modules_after(
        "import torch\n"
        "import fedchain.device.runner\n"
        "from fedchain.learning.data import load_dataset, device_partition\n"
        "from fedchain.learning.model import build_model\n"
        "from fedchain.learning.spec import default_task_spec\n"
        "from fedchain.learning.train import train_local, warm_up\n"
        "spec = default_task_spec()\n"
        "train, _ = load_dataset(spec.dataset)\n"
        "data = device_partition(train, 0, 5, None, 0)\n"
        "model = build_model(spec.model, seed=spec.seed)\n"
        "warm_up(model, data, spec.train)\n"
        "train_local(model, data, spec.train, seed=1)\n"
    )
    assert _loaded(modules, FORBIDDEN) == []
    # torch.optim.Optimizer would import torch._dynamo (and sympy, mpmath) on its first step.
    assert [m for m in modules if m.startswith(("torch._dynamo", "sympy", "mpmath"))] == []
