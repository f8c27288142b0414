"""The error-rate chart of an incident, as a small self-contained SVG.

Why our own few lines instead of a plotting library: the chart is one line per status code
over a time axis, with the incident's window shaded and its actions marked; an SVG string is
enough for that, renders in any browser and in Markdown viewers, diffs as text, and adds no
heavy dependency to an image that runs in production. Pure: data in, text out.

Labels and titles come from alerts and Prometheus series: every one goes through
:func:`_text` (or :func:`_attribute`), which replaces what XML 1.0 forbids (control
characters, lone surrogates) and escapes the rest, so no label can make the document
unreadable or add markup to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from receiver.evidence.text import printable

__all__ = ["ChartMarker", "ChartSeries", "render_error_rate_chart"]

PALETTE = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
MARKER_LABEL_LIMIT = 40
SERIES_LABEL_LIMIT = 40
MAX_LEGEND = 8


@dataclass(frozen=True)
class ChartSeries:
    """One line: a label (e.g. ``status_code=503``) and (unix time, value) points."""

    label: str
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class ChartMarker:
    """A vertical mark at ``at`` (unix time): an action, a decision, the incident's start or end."""

    at: float
    label: str


def _text(value: str, limit: int | None = None) -> str:
    """``value`` as XML character data: on one line, printable, cut at ``limit``, escaped."""
    shown = printable(value)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return escape(shown)


def _attribute(value: str) -> str:
    """``value`` as a quoted XML attribute value, printable."""
    return quoteattr(printable(value))


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for factor in (1.0, 2.0, 5.0, 10.0):
        candidate = factor * 10.0**exponent
        if candidate >= value:
            return candidate
    return 10.0 ** (exponent + 1)


def _fmt_value(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def render_error_rate_chart(
    *,
    series: list[ChartSeries],
    markers: list[ChartMarker],
    start: float,
    end: float,
    incident_start: float | None = None,
    incident_end: float | None = None,
    title: str = "Error rate",
    unit: str = "errors/s",
    width: int = 800,
    height: int = 320,
) -> str:
    """An SVG document plotting ``series`` over ``[start, end]`` with ``markers``."""
    if end <= start:
        end = start + 1.0
    left, right, top, bottom = 60, 20, 34, 80
    plot_w, plot_h = width - left - right, height - top - bottom
    finite = [v for s in series for _, v in s.points if math.isfinite(v)]
    y_max = _nice_ceiling(max(finite, default=0.0))

    def x(ts: float) -> float:
        return left + (min(max(ts, start), end) - start) / (end - start) * plot_w

    def y(value: float) -> float:
        return top + plot_h - (max(value, 0.0) / y_max) * plot_h

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{_text(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{_text(title)}</text>',
    ]
    if incident_start is not None:
        x0 = x(incident_start)
        x1 = x(incident_end if incident_end is not None else end)
        out.append(
            f'<rect class="incident" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1):.1f}"'
            f' height="{plot_h}" fill="#fdecea"/>'
        )
    # Axes and grid.
    for i in range(5):
        value = y_max * i / 4
        yy = y(value)
        out.append(
            f'<line x1="{left}" y1="{yy:.1f}" x2="{left + plot_w}" y2="{yy:.1f}" stroke="#e0e0e0"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt_value(value)}</text>'
        )
    for i in range(6):
        ts = start + (end - start) * i / 5
        xx = x(ts)
        out.append(
            f'<text x="{xx:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_hhmm(ts)}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"'
        ' stroke="#333"/>'
    )
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>')
    out.append(
        f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle"'
        f' transform="rotate(-90 14 {top + plot_h / 2:.1f})">{_text(unit)}</text>'
    )
    # Lines.
    if not finite:
        out.append(
            f'<text class="no-data" x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}"'
            ' text-anchor="middle" fill="#888">no data</text>'
        )
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = " ".join(
            f"{x(t):.1f},{y(v):.1f}" for t, v in s.points if math.isfinite(v) and start <= t <= end
        )
        if pts:
            out.append(
                f'<polyline class="series" data-label={_attribute(s.label)} fill="none"'
                f' stroke="{color}" stroke-width="1.8" points="{pts}"/>'
            )
    # Markers: a dashed line each, labels numbered to keep the plot readable.
    for n, m in enumerate(sorted(markers, key=lambda m: m.at), start=1):
        if not start <= m.at <= end:
            continue
        xx = x(m.at)
        out.append(
            f'<g class="marker"><title>{_text(f"{_hhmm(m.at)} {m.label}")}</title>'
            f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + plot_h}" stroke="#555"'
            ' stroke-dasharray="4 3"/>'
            f'<text x="{xx + 2:.1f}" y="{top + 10}" fill="#555">{n}</text></g>'
        )
        legend_y = top + plot_h + 30 + 12 * ((n - 1) % 3)
        legend_x = left + 250 * ((n - 1) // 3)
        if n <= 9:
            out.append(
                f'<text x="{legend_x}" y="{legend_y}" fill="#555">'
                f"{n}. {_hhmm(m.at)} {_text(m.label, MARKER_LABEL_LIMIT)}</text>"
            )
    # Legend of the series, top right.
    for i, s in enumerate(series[:MAX_LEGEND]):
        color = PALETTE[i % len(PALETTE)]
        lx = width - right - 130
        ly = top + 12 + 14 * i
        out.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 16}" y2="{ly - 4}" stroke="{color}"'
            ' stroke-width="2"/>'
            f'<text x="{lx + 20}" y="{ly}">{_text(s.label, SERIES_LABEL_LIMIT)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
