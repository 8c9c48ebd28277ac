"""`fedchain report`: accuracy, loss and gas per round of one task as a picture (PNG, SVG, PDF via matplotlib) or
a self-contained HTML page (inline SVG charts and the rounds table, nothing loaded from elsewhere)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fedchain.explorer.charts import Series, bar_chart, line_chart

PICTURE_SUFFIXES = (".png", ".svg", ".pdf")


def write_report(task: dict[str, Any], out: Path) -> Path:
    """Write the report for a task (as `Explorer.task` returns it); the suffix of `out` picks the format."""
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix in PICTURE_SUFFIXES:
        _picture(task, out)
    elif suffix in (".html", ".htm"):
        out.write_text(_html(task), encoding="utf-8")
    else:
        raise ValueError(f"cannot write {out.name}: choose a .png, .svg, .pdf or .html file")
    return out


def _picture(task: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = task["rounds"]
    xs = [r["round"] for r in rounds]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    try:
        acc = [(r["round"], r["accuracy"]) for r in rounds if r["accuracy"] is not None]
        loss = [(r["round"], r["loss"]) for r in rounds if r["loss"] is not None]
        axes[0].plot([x for x, _ in acc], [y for _, y in acc], marker="o", color="#2563eb")
        axes[0].set_ylabel("accuracy")
        axes[1].plot([x for x, _ in loss], [y for _, y in loss], marker="o", color="#dc2626")
        axes[1].set_ylabel("loss")
        axes[2].bar(xs, [r["gas"] or 0 for r in rounds], color="#059669")
        axes[2].set_ylabel("gas")
        axes[2].set_xlabel("round")
        for ax in axes:
            ax.grid(True, alpha=0.3)
        if xs and len(xs) <= 30:
            axes[2].set_xticks(xs)
        fig.suptitle(
            f"task {task['address']}\n{task['phase']}, round {task['current_round']}/{task['config']['num_rounds']}; "
            "accuracy and loss evaluated by the aggregator",
            fontsize=9,
        )
        fig.tight_layout()
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)


def _html(task: dict[str, Any]) -> str:
    rounds = task["rounds"]
    acc = line_chart(
        [Series("accuracy", [(float(r["round"]), r["accuracy"]) for r in rounds])], title="Accuracy per round"
    )
    loss = line_chart(
        [Series("loss", [(float(r["round"]), r["loss"]) for r in rounds])], title="Loss per round", y_min=0
    )
    gas = bar_chart([(float(r["round"]), float(r["gas"] or 0)) for r in rounds], title="Gas per round", label="gas")
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                r["round"],
                r["state"],
                f"{r['received']}/{r['required']}",
                "—" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
                "—" if r["loss"] is None else f"{r['loss']:.4f}",
                f"{r['gas']:,}",
                r["model_cid"] or "—",
            )
        )
        + "</tr>"
        for r in rounds
    )
    title = f"fedchain report: task {task['address']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #1f2937; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
table {{ border-collapse: collapse; margin-top: 16px; }} td, th {{ border: 1px solid #e5e7eb; padding: 4px 8px; }}
svg .grid {{ stroke: #e5e7eb; }} svg .axis {{ stroke: #9ca3af; }}
svg .tick, svg .legend {{ font-size: 11px; fill: #6b7280; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(task["phase"])}, round {task["current_round"]} of {task["config"]["num_rounds"]};
total gas {task["totals"]["gas"]:,}. {html.escape(task["metrics_note"])}</p>
<div class="charts">{acc}{loss}{gas}</div>
<table><thead><tr><th>round</th><th>state</th><th>updates</th><th>accuracy</th><th>loss</th><th>gas</th><th>aggregate</th></tr></thead>
<tbody>{rows}</tbody></table>
</body></html>
"""
