"""The postmortem draft, in the runbook's template, rendered from what the service recorded.

Pure: the incident as :func:`receiver.store.incidents.get_incident` returns it (with its timeline
and the triage decision) and the impact figures read from Prometheus go in, Markdown comes
out. The root cause is only ever a hypothesis here: the decision tree says where it ended, a
person confirms or corrects it. Anything the service cannot know (revenue, owners) is left for
a person to fill in, visibly.

Everything that comes from an alert or from outside (titles, labels, reasons, messages,
queries) goes through :mod:`receiver.evidence.text`, so it shows as the text it is and
never as Markdown or HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from receiver.evidence.text import code, literal
from receiver.runbook import ErrorClass, Verdict

__all__ = [
    "ImpactFigures",
    "action_items",
    "is_response_entry",
    "parse_time",
    "render_postmortem",
]

ERROR_TYPE_TITLE: dict[str, str] = {
    ErrorClass.AUTH: "Authentication Errors (401/403)",
    ErrorClass.RATE_LIMITED: "Rate Limited (429)",
    ErrorClass.UPSTREAM_ERROR: "Errors (500/503)",
    ErrorClass.NETWORK: "Network Errors",
    ErrorClass.UNKNOWN: "Errors (unclassified)",
}

SEVERITY_MEANING = {
    "P1": "complete outage",
    "P2": "degraded service",
    "P3": "minor impact",
    "P4": "no user impact",
}

VERDICT_HYPOTHESIS: dict[str, str] = {
    Verdict.VENDOR_INCIDENT: (
        "PostHog itself had an incident (its status page was not operational), so the errors "
        "came from PostHog's side; the runbook's response is to enable the fallback and wait."
    ),
    Verdict.OUR_INTEGRATION: (
        "PostHog reported no incident, so the errors most likely came from our integration: "
        "its credentials or its configuration."
    ),
    Verdict.OUR_INFRASTRUCTURE: (
        "Our own service was unhealthy (pods, memory or network), so the errors most likely "
        "came from our infrastructure."
    ),
    Verdict.INTERMITTENT: (
        "Nothing was found wrong when checked: the errors were likely intermittent, or had "
        "already stopped."
    ),
    Verdict.UNKNOWN: (
        "The decision tree could not conclude: some of its evidence could not be read."
    ),
}

CLASS_HYPOTHESIS: dict[str, str] = {
    ErrorClass.AUTH: (
        "PostHog rejected our API key (401/403): the key was missing, wrong, or rotated "
        "without the running pods picking up the new one."
    ),
    ErrorClass.RATE_LIMITED: (
        "PostHog rate-limited our requests (429): our request volume exceeded the limit."
    ),
    ErrorClass.UPSTREAM_ERROR: "PostHog answered with server errors (5xx).",
    ErrorClass.NETWORK: (
        "Requests to PostHog failed on the network (timeouts, DNS, connection resets or TLS)."
    ),
    ErrorClass.UNKNOWN: "The errors could not be classified from the alerts' labels.",
}

ACTION_ITEMS: dict[str, list[str]] = {
    ErrorClass.AUTH: [
        "Alert when the PostHog API-key Secret changes without a rollout of the integration",
        "Make key rotation one step: update the Secret and restart the deployment together",
        "Check the API key at start-up and fail readiness when PostHog rejects it",
    ],
    ErrorClass.RATE_LIMITED: [
        "Contact PostHog about a rate-limit increase",
        "Make request queuing (RATE_LIMIT_MODE=queue) the default under load",
        "Batch events and add client-side rate limiting before PostHog's limit",
    ],
    ErrorClass.UPSTREAM_ERROR: [
        "Review that the fallback (POSTHOG_FALLBACK) kept users unaffected, and test it regularly",
        "Subscribe the on-call channel to status.posthog.com updates",
        "Buffer events during PostHog outages and replay them afterwards",
    ],
    ErrorClass.NETWORK: [
        "Review timeouts, retries with backoff and connection pooling towards PostHog",
        "Check egress, DNS and proxy health for the integration's namespace",
    ],
    ErrorClass.UNKNOWN: [
        "Label posthog_errors_total with status_code so that errors can be classified",
        "Add a triage rule for this error's labels",
    ],
}

VERDICT_ACTION_ITEMS: dict[str, list[str]] = {
    Verdict.OUR_INFRASTRUCTURE: [
        "Review the integration's resources (memory limits, OOMKilled pods) and its probes",
    ],
    Verdict.UNKNOWN: [
        "Fix what kept the decision tree from reading its evidence (status page, health, cluster)",
    ],
}

DUE_IN: dict[str, timedelta] = {
    "P1": timedelta(days=7),
    "P2": timedelta(days=14),
    "P3": timedelta(days=30),
    "P4": timedelta(days=30),
}

# Timeline kinds that are news about alerts or bookkeeping rather than something decided or
# done; everything else (decisions, actions, reverts, escalations) is a response to the incident.
NOT_RESPONSES = ("alert_", "notification", "evidence")
MESSAGE_LIMIT = 200


@dataclass(frozen=True)
class ImpactFigures:
    """What Prometheus said about the incident's impact; ``None`` where it could not say."""

    error_count: float | None = None
    error_count_query: str | None = None
    affected_users: float | None = None
    affected_users_query: str | None = None
    notes: list[str] = field(default_factory=list)


def parse_time(value: str | None) -> datetime | None:
    """An ISO time as the store renders it (``...Z``), as an aware datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def is_response_entry(kind: str) -> bool:
    """Whether a timeline entry is a decision or action (marked on the chart, counted)."""
    return kind != "incident" and not kind.startswith(NOT_RESPONSES)


def _duration(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    h = f"{hours} hour{'s' if hours != 1 else ''}"
    m = f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{h} {m}" if hours else m


def _one_line(text: object) -> str:
    """Outside text as literal Markdown on one line, cut at ``MESSAGE_LIMIT`` characters."""
    return literal(str(text), limit=MESSAGE_LIMIT)


def _response_times(incident: dict[str, Any], severity: str | None) -> list[str]:
    """Time to acknowledge (against the runbook's response time) and time to mitigate, as
    the receiver measured them; a line each, and a blank line after."""
    target = f"the runbook's {severity} response time" if severity else "the response time"
    to_ack = incident.get("secondsToAcknowledge")
    deadline = parse_time(incident.get("acknowledgeBy"))
    acked = parse_time(incident.get("acknowledgedAt"))
    if to_ack is None or acked is None:
        ack = "**Time to acknowledge:** not acknowledged"
        if deadline is not None:
            ack += f" (due by {deadline.strftime('%H:%M')})"
    else:
        ack = f"**Time to acknowledge:** {_duration(float(to_ack))}"
        if incident.get("acknowledgedBy"):
            ack += f", by {_one_line(incident['acknowledgedBy'])}"
        via = {"pagerduty": "in PagerDuty", "approval": "by an approval"}
        if where := via.get(str(incident.get("acknowledgedVia"))):
            ack += f" {where}"
        if deadline is not None:
            ack += f" ({'within' if acked <= deadline else 'later than'} {target})"
    to_mitigate = incident.get("secondsToMitigate")
    mitigated = (
        "**Time to mitigate:** not mitigated"
        if to_mitigate is None
        else f"**Time to mitigate:** {_duration(float(to_mitigate))}"
    )
    return [f"- {ack}", f"- {mitigated}", ""]


def _count(value: float) -> str:
    return f"{round(value):,}"


def _decision(incident: dict[str, Any]) -> dict[str, Any]:
    decision = incident.get("decision")
    return decision if isinstance(decision, dict) else {}


def _error_class(incident: dict[str, Any]) -> str:
    raw = incident.get("errorClass") or _decision(incident).get("error_class") or "unknown"
    return raw if raw in set(ErrorClass) else ErrorClass.UNKNOWN


def _severity(incident: dict[str, Any]) -> str | None:
    raw = incident.get("severity") or _decision(incident).get("severity")
    return raw if raw in SEVERITY_MEANING else None


def _verdict(incident: dict[str, Any]) -> str | None:
    decision = _decision(incident)
    raw = decision.get("verdict") or decision.get("decision")
    return raw if isinstance(raw, str) and raw in set(Verdict) else None


def action_items(*, error_class: str, verdict: str | None) -> list[str]:
    """Suggested preventive measures for this kind of incident."""
    items = list(ACTION_ITEMS.get(error_class, ACTION_ITEMS[ErrorClass.UNKNOWN]))
    if verdict is not None:
        items += VERDICT_ACTION_ITEMS.get(verdict, [])
    return items


def _step_lines(decision: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    steps = decision.get("steps")
    if not isinstance(steps, list):
        return lines
    for n, step in enumerate(steps, start=1):
        if not isinstance(step, dict):
            continue
        question = _one_line(step.get("question") or step.get("name") or "step")
        answer = _one_line(step.get("answer") or step.get("result") or "?")
        # What the step found, in words; raw evidence only when that is all there is.
        finding = step.get("finding") or step.get("evidence")
        line = f"{n}. {question} → **{answer}**"
        if isinstance(finding, str) and finding.strip():
            line += f" ({_one_line(finding)})"
        lines.append(line)
    return lines


def render_postmortem(
    incident: dict[str, Any],
    *,
    impact: ImpactFigures,
    chart_path: str | None = "chart.svg",
    now: datetime | None = None,
) -> str:
    """The runbook's postmortem template, filled in from ``incident`` and ``impact``."""
    now = now or datetime.now(UTC)
    opened = parse_time(incident.get("openedAt")) or now
    resolved = parse_time(incident.get("resolvedAt"))
    ongoing = resolved is None or incident.get("status") != "resolved"
    end = now if ongoing or resolved is None else resolved
    error_class = _error_class(incident)
    severity = _severity(incident)
    verdict = _verdict(incident)
    decision = _decision(incident)
    # The service's own bookkeeping (evidence collected) is not part of the incident's story.
    timeline = [
        t
        for t in incident.get("timeline") or []
        if isinstance(t, dict) and not str(t.get("kind", "")).startswith("evidence")
    ]
    responses = [t for t in timeline if is_response_entry(str(t.get("kind", "")))]
    alerts = incident.get("alerts") or []

    duration = _duration((end - opened).total_seconds())
    out: list[str] = [f"## Incident: PostHog {ERROR_TYPE_TITLE[error_class]}"]
    out.append(f"**Date:** {opened.strftime('%Y-%m-%d')}")
    out.append(f"**Duration:** {duration}" + (" so far (still open)" if ongoing else ""))
    if severity:
        out.append(f"**Severity:** {severity}")
    else:
        out.append("**Severity:** P? (not triaged: to be filled in)")
    out.append("")

    # Summary: what, how long, how bad, where the decision tree ended, what was done.
    out.append("### Summary")
    what = f"The PostHog integration saw {ERROR_TYPE_TITLE[error_class].lower()}"
    sev = f", {severity} ({SEVERITY_MEANING[severity]})" if severity else ""
    sentence = f"{what} for {duration}{sev}"
    if impact.error_count is not None:
        sentence += f", with {_count(impact.error_count)} errors counted"
    sentence += "."
    second = f" Alert: {_one_line(incident.get('title') or 'unknown')}"
    second += f" ({len(alerts)} alert{'s' if len(alerts) != 1 else ''})"
    if verdict:
        second += f"; the decision tree concluded **{verdict.replace('_', ' ')}**"
    second += f"; {len(responses)} decision{'s' if len(responses) != 1 else ''} and action"
    second += f"{'s' if len(responses) != 1 else ''} recorded."
    out.append(sentence + second)
    out.append("")

    out.append("### Timeline")
    out.append("_Times in UTC._")
    out.append("")
    out.extend(_response_times(incident, severity))
    day0 = opened.date()
    for entry in timeline:
        at = parse_time(entry.get("at"))
        if at is None:
            continue
        stamp = at.strftime("%H:%M")
        days = (at.date() - day0).days
        if days:
            stamp += f" (+{days}d)"
        out.append(f"- {stamp} - {_one_line(entry.get('message') or entry.get('kind') or '')}")
    if not timeline:
        out.append("- (no events recorded)")
    out.append("")

    out.append("### Root Cause")
    out.append(
        "**Hypothesis (prefilled from the decision tree; to be confirmed by the responder):** "
        + CLASS_HYPOTHESIS[error_class]
        + (" " + VERDICT_HYPOTHESIS[verdict] if verdict else " The incident was not triaged.")
    )
    explanation = decision.get("explanation") or decision.get("summary")
    if isinstance(explanation, str) and explanation.strip():
        out.append("")
        out.append(f"Triage said: {_one_line(explanation)}")
    steps = _step_lines(decision)
    if steps:
        out.append("")
        out.append("Decision path:")
        out.extend(steps)
    out.append("")

    out.append("### Impact")
    if impact.error_count is not None:
        query = f" ({code(impact.error_count_query)})" if impact.error_count_query else ""
        out.append(f"- Errors during the incident: {_count(impact.error_count)}{query}")
    else:
        out.append("- Errors during the incident: unknown")
    if impact.affected_users is not None:
        query = f" ({code(impact.affected_users_query)})" if impact.affected_users_query else ""
        out.append(f"- Users affected: {_count(impact.affected_users)}{query}")
    elif impact.affected_users_query:
        out.append("- Users affected: unknown (the affected-users query returned nothing)")
    else:
        out.append("- Users affected: N (to be filled in: no affected-users query configured)")
    out.append("- Revenue impact: $X (to be filled in)")
    out.extend(f"- Note: {_one_line(n)}" for n in impact.notes)
    if chart_path:
        out.append("")
        out.append(f"![Error rate during the incident, with actions marked]({chart_path})")
    out.append("")

    out.append("### Action Items")
    due = (end + DUE_IN.get(severity or "P4", timedelta(days=30))).strftime("%Y-%m-%d")
    out.extend(
        f"- [ ] {item} - Owner: (to assign) - Due: {due}"
        for item in action_items(error_class=error_class, verdict=verdict)
    )
    return "\n".join(out) + "\n"
