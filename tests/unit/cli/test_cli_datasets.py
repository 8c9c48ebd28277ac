"""`fedchain datasets [--json]`: every dataset a task can name, with its source, licence and counts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedchain.cli import app
from fedchain.learning.data import LOADERS
from fedchain.learning.wearables import TASKS

FIELDS = {"name", "source", "licence", "records", "subjects", "windows", "classes", "citation"}


def test_datasets_json_lists_every_dataset_with_its_provenance() -> None:
    result = CliRunner().invoke(app, ["datasets", "--json"])
    assert result.exit_code == 0, result.output
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert set(entries) == set(LOADERS) | set(TASKS)
    for entry in entries.values():
        assert set(entry) >= FIELDS, entry["name"]
        assert entry["source"] and entry["licence"] and entry["citation"]
    motions = entries["basic_motions"]
    assert motions["records"] == 80 and motions["windows"] == 640 and motions["recorded_records"] == 80
    assert motions["classes"] == ["Standing", "Walking", "Running", "Badminton"]
    ecg = entries["mitdb_rate"]
    assert ecg["recorded_records"] == 1 and ecg["synthetic_records"] == 24
    assert "SYNTHETIC" in ecg["notes"] and "Moody" in " ".join(ecg["citation"])


def test_datasets_table_names_every_task() -> None:
    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    for name in [*LOADERS, *TASKS]:
        assert name[:6] in result.output  # rich folds long cells: the start of each name is on one line


def test_demo_refuses_an_unknown_dataset_and_streaming_virtual_devices() -> None:
    from fedchain.app.demo import DemoOptions

    result = CliRunner().invoke(app, ["demo", "--dataset", "nope"])
    assert result.exit_code == 2 and "unknown dataset" in result.output
    DemoOptions(devices=2, stream_buffer=40).check()
    with pytest.raises(ValueError, match="--no-virtual"):
        DemoOptions(devices=2, stream_buffer=40, virtual=True).check()
    with pytest.raises(ValueError, match="stream-speed"):
        DemoOptions(devices=2, stream_buffer=40, stream_speed=0).check()
