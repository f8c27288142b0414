"""The error-rate chart: a well-formed SVG with one line per series and the actions marked."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from receiver.evidence.chart import ChartMarker, ChartSeries, render_error_rate_chart

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_767_261_600.0  # 2026-01-01T10:00:00Z


def _chart(**overrides: object) -> ET.Element:
    options: dict[str, object] = {
        "series": [
            ChartSeries("status_code=503", [(T0 + 60 * i, float(i)) for i in range(30)]),
            ChartSeries("status_code=429", [(T0 + 60 * i, 0.5) for i in range(30)]),
        ],
        "markers": [
            ChartMarker(T0 + 300, "set POSTHOG_FALLBACK=true"),
            ChartMarker(T0 + 1500, "reverted POSTHOG_FALLBACK"),
        ],
        "start": T0,
        "end": T0 + 1800,
        "incident_start": T0 + 120,
        "incident_end": T0 + 1600,
    }
    options.update(overrides)
    svg = render_error_rate_chart(**options)  # type: ignore[arg-type]
    return ET.fromstring(svg)  # noqa: S314 (our own output, parsed to check its structure)


def test_one_line_per_series_within_the_plot() -> None:
    """Each series is a polyline whose points lie inside the drawing."""
    root = _chart()
    lines = root.findall(f"{SVG}polyline")
    assert [line.get("data-label") for line in lines] == ["status_code=503", "status_code=429"]
    width, height = float(root.get("width", 0)), float(root.get("height", 0))
    for line in lines:
        points = [tuple(map(float, p.split(","))) for p in (line.get("points") or "").split()]
        assert len(points) == 30
        assert all(0 <= x <= width and 0 <= y <= height for x, y in points)
    # The rising series ends higher on the page (smaller y) than it starts.
    rising = [tuple(map(float, p.split(","))) for p in (lines[0].get("points") or "").split()]
    assert rising[-1][1] < rising[0][1]


def test_actions_are_marked_with_their_time_and_label() -> None:
    """Every action inside the window is a dashed marker titled with HH:MM and its label."""
    root = _chart()
    markers = [g for g in root.iter(f"{SVG}g") if g.get("class") == "marker"]
    titles = [g.findtext(f"{SVG}title") for g in markers]
    assert titles == ["10:05 set POSTHOG_FALLBACK=true", "10:25 reverted POSTHOG_FALLBACK"]
    assert all(g.find(f"{SVG}line") is not None for g in markers)
    assert any(r.get("class") == "incident" for r in root.iter(f"{SVG}rect"))


def test_without_data_the_chart_says_so() -> None:
    """A chart with no points still renders, saying there is no data."""
    root = _chart(series=[], markers=[])
    assert any(t.get("class") == "no-data" for t in root.iter(f"{SVG}text"))
    assert root.findall(f"{SVG}polyline") == []


def test_labels_from_alerts_cannot_inject_markup() -> None:
    """Markup in a label is escaped: the SVG stays well-formed and gains no elements."""
    root = _chart(
        series=[ChartSeries('x="<script>alert(1)</script>"', [(T0, 1.0), (T0 + 60, 2.0)])],
        markers=[ChartMarker(T0 + 30, "</text><script>bad()</script>")],
    )
    assert not list(root.iter(f"{SVG}script"))
    assert not list(root.iter("script"))


# Every character XML 1.0 forbids in a document (and DEL, which it discourages), a lone
# surrogate (valid in a JSON string, so in a label), and the non-characters U+FFFE and U+FFFF.
UNREADABLE = "".join(chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))
UNREADABLE += "\x7f\ud800\udfff\ufffe\uffff"


def test_control_characters_in_labels_leave_a_readable_svg() -> None:
    """Control characters, lone surrogates and markup in labels and the title still give an
    SVG that encodes as UTF-8 and parses, with each label shown on one line."""
    hostile = f"a\n{UNREADABLE}<b>&\"'z"
    svg = render_error_rate_chart(
        series=[ChartSeries(f"code={hostile}", [(T0, 1.0), (T0 + 60, 2.0)])],
        markers=[ChartMarker(T0 + 30, hostile)],
        start=T0,
        end=T0 + 120,
        title=hostile,
        unit=hostile,
    )
    root = ET.fromstring(svg.encode("utf-8"))  # noqa: S314 (our own output, parsed to check it)
    assert not list(root.iter(f"{SVG}b"))
    label = root.find(f"{SVG}polyline")
    assert label is not None
    shown = label.get("data-label") or ""
    assert shown.startswith("code=a ")
    assert shown.endswith("<b>&\"'z")
    title = root.findtext(f"{SVG}title") or ""
    for text in (shown, title):
        # What cannot be shown became U+FFFD; whitespace (vertical tab, form feed...) a space.
        assert not any(
            c < " " or c in "\x7f\ufffe\uffff" or "\ud800" <= c <= "\udfff" for c in text
        )
        assert text.count("\ufffd") == len(UNREADABLE) - 6
    assert title.startswith("a ")
    assert title.endswith("<b>&\"'z")


def test_very_long_labels_are_cut_in_the_legend() -> None:
    """A very long series label is cut in the legend, so it stays within the drawing."""
    root = _chart(series=[ChartSeries("x" * 10_000, [(T0, 1.0)])], markers=[])
    legend = [t.text or "" for t in root.iter(f"{SVG}text") if (t.text or "").startswith("x")]
    assert legend
    assert all(len(text) <= 40 for text in legend)
