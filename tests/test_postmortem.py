"""The postmortem draft follows the runbook's template and fills it from the records."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from receiver.evidence.postmortem import ImpactFigures, render_postmortem
from receiver.evidence.text import literal
from tests.rendered_markdown import HOSTILE, HOSTILE_SHOWN, render

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _incident(**overrides: Any) -> dict[str, Any]:
    incident: dict[str, Any] = {
        "id": "inc-1",
        "status": "resolved",
        "title": "PostHogErrors",
        "openedAt": "2026-01-01T10:02:00Z",
        "resolvedAt": "2026-01-01T11:17:00Z",
        "errorClass": "rate_limited",
        "severity": "P2",
        "decision": {
            "verdict": "our_integration",
            "steps": [
                {
                    "question": "Is PostHog having an incident?",
                    "answer": "no",
                    "finding": "status indicator none",
                    "evidence": {"indicator": "none"},
                },
                {"question": "Is our service healthy?", "answer": "yes"},
            ],
        },
        "alerts": [{"fingerprint": "fp-429"}],
        "timeline": [
            {"at": "2026-01-01T10:02:00Z", "kind": "incident", "message": "incident opened"},
            {
                "at": "2026-01-01T10:02:01Z",
                "kind": "alert_firing",
                "message": "alert PostHogErrors firing",
            },
            {
                "at": "2026-01-01T10:03:00Z",
                "kind": "action",
                "message": "set RATE_LIMIT_MODE=queue on deployment/posthog-integration",
            },
            {"at": "2026-01-01T11:17:00Z", "kind": "incident", "message": "incident resolved"},
        ],
    }
    incident.update(overrides)
    return incident


def _sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_the_template_sections_in_order() -> None:
    """The draft has the runbook template's heading, fields and sections, in its order."""
    text = render_postmortem(_incident(), impact=ImpactFigures(error_count=1234.4), now=NOW)
    assert _sections(text) == [
        "## Incident: PostHog Rate Limited (429)",
        "### Summary",
        "### Timeline",
        "### Root Cause",
        "### Impact",
        "### Action Items",
    ]
    assert "**Date:** 2026-01-01" in text
    assert "**Duration:** 1 hour 15 minutes\n" in text
    assert "**Severity:** P2" in text


def test_the_summary_is_generated_from_the_records() -> None:
    """The summary names the error type, duration, severity, error count and verdict."""
    text = render_postmortem(_incident(), impact=ImpactFigures(error_count=1234.4), now=NOW)
    summary = text.split("### Summary\n", 1)[1].split("###", 1)[0]
    assert "rate limited (429) for 1 hour 15 minutes, P2 (degraded service)" in summary
    assert "1,234 errors" in summary
    assert "our integration" in summary
    assert "1 decision and action recorded" in summary


def test_the_timeline_is_one_hh_mm_line_per_event() -> None:
    """Each timeline entry is a '- HH:MM - event' line, in order."""
    text = render_postmortem(_incident(), impact=ImpactFigures(), now=NOW)
    lines = [line for line in text.splitlines() if re.match(r"- \d\d:\d\d - ", line)]
    assert lines == [
        "- 10:02 - incident opened",
        "- 10:02 - alert PostHogErrors firing",
        "- 10:03 - set RATE_LIMIT_MODE=queue on deployment/posthog-integration",
        "- 11:17 - incident resolved",
    ]


def test_the_root_cause_is_a_hypothesis_from_the_decision_tree() -> None:
    """The root cause is marked as a hypothesis and shows the decision path."""
    text = render_postmortem(_incident(), impact=ImpactFigures(), now=NOW)
    root = text.split("### Root Cause\n", 1)[1].split("###", 1)[0]
    assert root.startswith("**Hypothesis")
    assert "to be confirmed" in root
    assert "PostHog reported no incident" in root
    assert "1. Is PostHog having an incident? → **no** (status indicator none)" in root


def test_impact_from_prometheus_and_placeholders_for_the_rest() -> None:
    """Error count and affected users come from the figures; revenue is left to fill in."""
    text = render_postmortem(
        _incident(),
        impact=ImpactFigures(
            error_count=10,
            error_count_query="sum(increase(posthog_errors_total[4500s]))",
            affected_users=42,
            affected_users_query="count(users)",
        ),
        now=NOW,
    )
    impact = text.split("### Impact\n", 1)[1].split("###", 1)[0]
    assert (
        "- Errors during the incident: 10 (`sum(increase(posthog_errors_total[4500s]))`)" in impact
    )
    assert "- Users affected: 42 (`count(users)`)" in impact
    assert "- Revenue impact: $X (to be filled in)" in impact
    assert "](chart.svg)" in impact


def test_users_affected_is_left_to_fill_in_without_a_query() -> None:
    """Without an affected-users query the draft says N, to be filled in."""
    text = render_postmortem(_incident(), impact=ImpactFigures(), now=NOW)
    assert "- Users affected: N (to be filled in: no affected-users query configured)" in text
    assert "- Errors during the incident: unknown" in text


def test_action_items_suit_the_error_class() -> None:
    """Action items are checkboxes with owner and due date, chosen by the error class."""
    rate = render_postmortem(_incident(), impact=ImpactFigures(), now=NOW)
    auth = render_postmortem(_incident(errorClass="auth"), impact=ImpactFigures(), now=NOW)
    items = [line for line in rate.splitlines() if line.startswith("- [ ] ")]
    assert items
    assert all(
        re.fullmatch(r"- \[ \] .+ - Owner: \(to assign\) - Due: 2026-01-15", line) for line in items
    )
    assert any("rate-limit increase" in line for line in items)
    assert "rate-limit increase" not in auth
    assert "API-key Secret" in auth
    assert "## Incident: PostHog Authentication Errors (401/403)" in auth


def test_an_open_untriaged_incident_says_so() -> None:
    """An incident still open, without triage, is drafted with what is missing made visible."""
    text = render_postmortem(
        _incident(status="open", resolvedAt=None, errorClass=None, severity=None, decision=None),
        impact=ImpactFigures(notes=["prometheus.url is not set"]),
        now=NOW,
    )
    assert "**Duration:** 1 hour 58 minutes so far (still open)" in text
    assert "**Severity:** P? (not triaged: to be filled in)" in text
    assert "## Incident: PostHog Errors (unclassified)" in text
    assert "The incident was not triaged." in text
    assert "- Note: prometheus.url is not set" in text


def test_multi_line_messages_stay_on_one_timeline_line() -> None:
    """A message with newlines cannot break the Markdown structure of the timeline."""
    timeline = [{"at": "2026-01-01T10:02:00Z", "kind": "x", "message": "a\n### Injected\nb"}]
    text = render_postmortem(_incident(timeline=timeline), impact=ImpactFigures(), now=NOW)
    assert "### Injected" not in _sections(text)
    assert "- 10:02 - a ### Injected b" in text


def _hostile_incident(value: str) -> dict[str, Any]:
    """An incident whose every outside text (title, messages, decision) is ``value``."""
    return _incident(
        title=value,
        decision={
            "verdict": "our_integration",
            "explanation": value,
            "steps": [{"question": value, "answer": value, "finding": value}],
        },
        timeline=[
            {"at": "2026-01-01T10:02:00Z", "kind": "incident", "message": value},
            {"at": "2026-01-01T10:03:00Z", "kind": "action", "message": value},
        ],
    )


def _hostile_impact(value: str) -> ImpactFigures:
    return ImpactFigures(
        error_count=3,
        error_count_query=f"sum(x{{code=`{value}`}})",
        affected_users=1,
        affected_users_query="`count(users)`",
        notes=[value],
    )


def test_alert_text_renders_as_literal_text() -> None:
    """Images, links, HTML, code, table cells, headings and control characters in alert data
    render as the text written: the rendered draft has exactly the elements it has without
    them, and shows the text in each place it was used."""
    hostile = render_postmortem(
        _hostile_incident(HOSTILE), impact=_hostile_impact(HOSTILE), now=NOW
    )
    benign = render_postmortem(
        _hostile_incident("benign"), impact=_hostile_impact("benign"), now=NOW
    )
    shown, expected = render(hostile), render(benign)
    assert [tag for tag, _ in shown.elements] == [tag for tag, _ in expected.elements]
    assert [a for _, a in shown.elements] == [a for _, a in expected.elements]
    # Title, two timeline entries, explanation, question, answer, finding, note and query.
    assert shown.text.count(HOSTILE_SHOWN) == 9
    assert "code=`" + HOSTILE_SHOWN + "`" in shown.text
    assert "(`count(users)`)" in shown.text
    # Our own image is still there, and nothing else loads anything.
    assert [a for tag, a in shown.elements if tag == "img"] == [
        [("src", "chart.svg"), ("alt", "Error rate during the incident, with actions marked")]
    ]


def test_alert_text_starting_a_line_cannot_start_a_block() -> None:
    """Text that would start a heading or a list if it began a line is escaped as such."""
    for value, tag in (("# h", "h1"), ("- item", "ul"), ("1. item", "ol"), ("+ x", "ul")):
        rendered = render(literal(value))
        assert [t for t, _ in rendered.elements] == ["p"], tag
        assert rendered.text.strip() == value


def test_lone_surrogates_and_controls_do_not_break_the_draft() -> None:
    """A lone surrogate (valid in JSON) or a NUL in a title still gives UTF-8 text."""
    text = render_postmortem(_incident(title="a\ud800b\x00c"), impact=ImpactFigures(), now=NOW)
    assert "a\ufffdb\ufffdc" in text
    text.encode("utf-8")


def test_the_timeline_opens_with_both_response_times() -> None:
    """Time to acknowledge (who, where, against the runbook's response time) and time to
    mitigate head the timeline; missing ones say so."""
    measured = _incident(
        acknowledgeBy="2026-01-01T11:02:00Z",
        acknowledgedAt="2026-01-01T10:14:00Z",
        acknowledgedBy="Jane *Doe*",
        acknowledgedVia="pagerduty",
        secondsToAcknowledge=720.0,
        mitigatedAt="2026-01-01T10:40:00Z",
        secondsToMitigate=2280.0,
    )
    text = render_postmortem(measured, impact=ImpactFigures(), now=NOW)
    assert (
        "- **Time to acknowledge:** 12 minutes, by Jane \\*Doe\\* in PagerDuty "
        "(within the runbook's P2 response time)"
    ) in text
    assert "- **Time to mitigate:** 38 minutes" in text
    late = render_postmortem(
        {**measured, "acknowledgedAt": "2026-01-01T11:30:00Z", "acknowledgedVia": "approval"},
        impact=ImpactFigures(),
        now=NOW,
    )
    assert "by an approval (later than the runbook's P2 response time)" in late
    none = render_postmortem(
        _incident(acknowledgeBy="2026-01-01T11:02:00Z"), impact=ImpactFigures(), now=NOW
    )
    assert "- **Time to acknowledge:** not acknowledged (due by 11:02)" in none
    assert "- **Time to mitigate:** not mitigated" in none
