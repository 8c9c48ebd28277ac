"""`fedchain datasets`: every dataset a task can name, where it comes from and what it holds."""

from __future__ import annotations

import json

from fedchain.cli.common import console
from fedchain.cli.options import AsJson


def datasets(as_json: AsJson = False) -> None:
    """List the datasets and wearable tasks: name, source, licence, records, subjects, windows, classes."""
    from rich.table import Table

    from fedchain.learning.catalog import dataset_catalog
    from fedchain.learning.sensors import MissingPackageData

    try:
        entries = dataset_catalog()
    except MissingPackageData as exc:
        console.print(f"[red]{exc}[/]")
        raise SystemExit(2) from None
    if as_json:
        print(json.dumps(entries))
        return
    table = Table(title="datasets")
    for column in ("name", "kind", "source", "licence", "records", "subjects", "windows", "classes"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            entry["name"],
            entry["kind"],
            entry["source"],
            entry["licence"],
            str(entry["records"]),
            "-" if entry["subjects"] is None else str(entry["subjects"]),
            "-" if entry["windows"] is None else str(entry["windows"]),
            ", ".join(entry["classes"]),
        )
    console.print(table)
