"""Every dataset a task can name, with where it comes from: what `fedchain datasets` lists."""

from __future__ import annotations

from typing import Any

from fedchain.learning import ecg
from fedchain.learning.data import LOADERS
from fedchain.learning.spec import TaskSpec, default_task_spec
from fedchain.learning.wearables import TASKS, describe, wearable_task_spec

# The tables and simulations of fedchain.learning.data.LOADERS (wearable tasks describe themselves).
TABLES: dict[str, dict[str, Any]] = {
    "breast_cancer": {
        "title": "breast mass malignant or benign from 30 features of a fine-needle aspirate image (tabular)",
        "source": "Breast Cancer Wisconsin (Diagnostic), UCI Machine Learning Repository, bundled with scikit-learn",
        "licence": "CC BY 4.0 (UCI)",
        "citation": [
            "Wolberg WH, Street WN, Mangasarian OL. Breast Cancer Wisconsin (Diagnostic). UCI Machine Learning "
            "Repository, 1995. doi:10.24432/C5DW2B"
        ],
        "records": 569,
        "subjects": 569,
        "windows": None,
        "classes": ["malignant", "benign"],
    },
    "ecg": {
        "title": "rhythm class from 2.5 s single-lead ECG segments (SIMULATED, no recorded signal)",
        "source": "neurokit2 ECGSYN beats (McSharry et al. 2003), shipped as fedchain/learning/ecg_beats.npz",
        "licence": "fedchain's own simulation (neurokit2 is MIT)",
        "citation": [
            "McSharry PE, Clifford GD, Tarassenko L, Smith LA. A dynamical model for generating synthetic "
            "electrocardiogram signals. IEEE Trans Biomed Eng 50(3):289-294 (2003)."
        ],
        "records": 4 * ecg.EcgConfig().per_class,
        "subjects": None,
        "windows": 4 * ecg.EcgConfig().per_class,
        "classes": list(ecg.CLASSES),
    },
}


def dataset_catalog() -> list[dict[str, Any]]:
    """One entry per dataset name (name, source, licence, records, subjects, windows, classes, ...)."""
    missing = sorted(set(LOADERS) - set(TABLES))
    if missing:
        raise RuntimeError(f"datasets without a catalog entry: {missing}")  # one home per fact: add them above
    entries = [
        {"name": name, "kind": "table" if name == "breast_cancer" else "simulated", **TABLES[name]} for name in LOADERS
    ]
    entries += [{"kind": "wearable", **describe(name)} for name in TASKS]
    return entries


def task_spec_for(name: str) -> TaskSpec:
    """The task description a demo or deployment uses for dataset `name`: the default task for breast_cancer
    (its description, and so every CID that follows from it, unchanged), the compute market's for ecg, and each
    wearable task's own (its 1-D CNN and training settings)."""
    if name == "breast_cancer":
        return default_task_spec()
    if name == "ecg":
        from fedchain.learning.units import default_ecg_task  # the market's task module: only when asked for

        return default_ecg_task()
    if name in TASKS:
        return wearable_task_spec(name)
    raise ValueError(f"unknown dataset {name!r}; known: {sorted([*LOADERS, *TASKS])}")


__all__ = ["TABLES", "dataset_catalog", "task_spec_for"]
