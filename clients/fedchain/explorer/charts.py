"""Tiny server-side SVG charts (no JavaScript, no external library): line charts and bar charts per round."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706")


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float | None]]  # (x, y); None y values are gaps


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def _default_format(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


class _Frame:
    def __init__(self, width: int, height: int, xs: Sequence[float], ys: Sequence[float], y_min: float | None) -> None:
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = 56, 12, 12, 30
        x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
        if x_hi == x_lo:
            x_lo, x_hi = x_lo - 1, x_hi + 1
        self.x_lo, self.x_hi = x_lo, x_hi
        lo = min(ys) if ys else 0.0
        hi = max(ys) if ys else 1.0
        if y_min is not None:
            lo = min(lo, y_min)
        self.y_ticks = nice_ticks(lo, hi)
        self.y_lo, self.y_hi = self.y_ticks[0], self.y_ticks[-1]

    def x(self, value: float) -> float:
        span = self.width - self.left - self.right
        return self.left + (value - self.x_lo) / (self.x_hi - self.x_lo) * span

    def y(self, value: float) -> float:
        span = self.height - self.top - self.bottom
        return self.top + (1 - (value - self.y_lo) / ((self.y_hi - self.y_lo) or 1.0)) * span

    def axes(self, x_ticks: Sequence[float], y_format: Callable[[float], str], title: str) -> list[str]:
        out = [f"<title>{escape(title)}</title>"]
        for t in self.y_ticks:
            y = self.y(t)
            out.append(
                f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(y_format(t))}</text>'
            )
        for t in x_ticks:
            x = self.x(t)
            out.append(
                f'<text x="{x:.1f}" y="{self.height - self.bottom + 16}" text-anchor="middle" class="tick">{t:g}</text>'
            )
        base = self.height - self.bottom
        out.append(f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{base}" y2="{base}" class="axis"/>')
        return out


def _x_ticks(xs: Sequence[float], max_ticks: int = 12) -> list[float]:
    ordered = sorted(set(xs))
    if len(ordered) <= max_ticks:
        return ordered
    stride = math.ceil(len(ordered) / max_ticks)
    return ordered[::stride]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    width: int = 560,
    height: int = 220,
    y_min: float | None = None,
    y_format: Callable[[float], str] = _default_format,
) -> str:
    """An SVG line chart with a point (and tooltip) per value."""
    xs = [x for s in series for x, y in s.points if y is not None]
    ys = [y for s in series for _, y in s.points if y is not None]
    if not ys:
        return _empty(title, width, height)
    frame = _Frame(width, height, xs, ys, y_min)
    parts = frame.axes(_x_ticks(xs), y_format, title)
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        segment: list[str] = []
        for x, y in [*s.points, (math.nan, None)]:
            if y is None:
                if len(segment) > 1:
                    parts.append(
                        f'<polyline points="{" ".join(segment)}" fill="none" stroke="{color}" stroke-width="2"/>'
                    )
                segment = []
                continue
            segment.append(f"{frame.x(x):.1f},{frame.y(y):.1f}")
        for x, y in s.points:
            if y is not None:
                parts.append(
                    f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3" fill="{color}">'
                    f"<title>{escape(s.label)} round {x:g}: {y:.4g}</title></circle>"
                )
    parts.append(_legend(series, width))
    return _svg(parts, width, height, title)


def bar_chart(
    points: Sequence[tuple[float, float | None]],
    *,
    title: str,
    label: str,
    width: int = 560,
    height: int = 220,
    y_format: Callable[[float], str] = _default_format,
) -> str:
    """An SVG bar chart, one bar per x (round)."""
    values = [(x, y) for x, y in points if y is not None]
    if not values:
        return _empty(title, width, height)
    xs = [x for x, _ in values]
    frame = _Frame(width, height, [min(xs) - 0.5, max(xs) + 0.5], [y for _, y in values], 0.0)
    parts = frame.axes(_x_ticks(xs), y_format, title)
    slot = (frame.x(1) - frame.x(0)) if len(xs) > 0 else 10.0
    bar = max(1.0, slot * 0.7)
    base = frame.y(frame.y_lo)
    for x, y in values:
        top = frame.y(y)
        parts.append(
            f'<rect x="{frame.x(x) - bar / 2:.1f}" y="{top:.1f}" width="{bar:.1f}" height="{max(0.0, base - top):.1f}" '
            f'fill="{PALETTE[2]}"><title>{escape(label)} round {x:g}: {y:,.0f}</title></rect>'
        )
    return _svg(parts, width, height, title)


def _legend(series: Sequence[Series], width: int) -> str:
    items = []
    x = width - 12
    for i, s in reversed(list(enumerate(series))):
        text_width = 7 * len(s.label) + 18
        x -= text_width
        color = PALETTE[i % len(PALETTE)]
        items.append(
            f'<rect x="{x}" y="4" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="13" class="legend">{escape(s.label)}</text>'
        )
    return "".join(items)


def _svg(parts: list[str], width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">' + "".join(parts) + "</svg>"
    )


def _empty(title: str, width: int, height: int) -> str:
    return _svg(
        [
            f"<title>{escape(title)}</title>",
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="tick">no data yet</text>',
        ],
        width,
        height,
        title,
    )
