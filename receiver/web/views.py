"""What the pages show, in the runbook's words: stored records turned into view objects.

Pure: no store, no HTTP. Values from alerts stay plain strings here and are escaped by the
templates (autoescape is on everywhere), so a label holding markup is shown as text.

Action states, as the incident page names them (``ACTION_STATES``): planned (the journal's
intent, about to be applied), awaiting approval (an action waiting for a person; the approval
flow writes that journal state), applied, verified (applied, and the rollout finished and the
error rate fell), dry run, skipped (with the guard that stopped it), failed, escalated,
reverted, revert skipped, handed over (another open incident still needs the value), and held
(already as wanted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from receiver.evidence.collector import BundleRecord
from receiver.store.approvals import Approval
from receiver.store.journal import JournalEntry
from receiver.web.queries import IncidentDetail, IncidentRow

__all__ = [
    "ACTION_STATES",
    "ActionView",
    "AlertView",
    "IncidentPage",
    "ListRow",
    "NotificationView",
    "StepView",
    "TriageView",
    "action_views",
    "duration",
    "incident_page",
    "list_row",
    "notification_views",
    "parse_time",
    "when",
]

ACTION_STATES: dict[str, str] = {
    "planned": "planned",
    "awaiting_approval": "awaiting approval",
    "applied": "applied",
    "verified": "verified",
    "dry_run": "dry run",
    "skipped": "skipped",
    "failed": "failed",
    "escalated": "escalated",
    "reverted": "reverted",
    "revert_skipped": "revert skipped",
    "handed_over": "handed over",
    "held": "already as wanted",
    "approved": "approved",
    "denied": "denied",
}

# Journal states that say more than the last outcome: the action is waiting, in flight, or
# its change was undone (or deliberately kept).
_JOURNAL_STATES = {
    "intent": "planned",
    "awaiting_approval": "awaiting_approval",
    "reverted": "reverted",
    "revert_skipped": "revert_skipped",
    "handed_over": "handed_over",
}


def when(ts: float | None) -> str:
    """A time as people read it here: UTC, to the second."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """``seconds`` as "2d 3h", "3h 12m", "4m 10s" or "9s"."""
    s = int(abs(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def parse_time(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# -- the list -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListRow:
    """One incident in the list, with its age and acknowledge-by countdown."""

    id: str
    status: str
    title: str
    severity: str
    error_class: str
    verdict: str
    age: str
    opened: str
    acknowledge_by: str
    countdown: str
    overdue: bool


def list_row(row: IncidentRow, *, now: float) -> ListRow:
    overdue = False
    countdown = ""
    if row.acknowledge_by is not None and row.status == "open":
        left = row.acknowledge_by - now
        overdue = left < 0
        countdown = f"overdue by {duration(left)}" if overdue else f"in {duration(left)}"
    end = row.resolved_at if row.resolved_at is not None else now
    return ListRow(
        id=row.id,
        status=row.status,
        title=row.title,
        severity=row.severity or "untriaged",
        error_class=row.error_class or "not yet classified",
        verdict=(row.verdict or "pending").replace("_", " "),
        age=duration(end - row.opened_at),
        opened=when(row.opened_at),
        acknowledge_by=when(row.acknowledge_by),
        countdown=countdown,
        overdue=overdue,
    )


# -- the incident page ----------------------------------------------------------------------


@dataclass(frozen=True)
class AlertView:
    fingerprint: str
    status: str
    labels: list[tuple[str, str]]
    since: str
    ended: str


@dataclass(frozen=True)
class StepView:
    """One step of the decision tree."""

    question: str
    answer: str
    finding: str
    evidence: str
    duration: str


@dataclass(frozen=True)
class TriageView:
    error_class: str
    severity: str
    severity_why: str
    verdict: str
    summary: str
    acknowledge_by: str
    acknowledged: str  # the runbook's response time: who, how, after how long, in time or not
    mitigated: str
    steps: list[StepView]


@dataclass(frozen=True)
class ActionStep:
    """One recorded outcome of an action, from the timeline."""

    at: str
    state: str
    label: str
    reason: str
    before: str
    after: str


@dataclass(frozen=True)
class ActionView:
    """One runbook action of the incident: where it stands, and how it got there."""

    action: str
    target: str
    state: str
    label: str
    reason: str
    before: str
    after: str
    history: list[ActionStep] = field(default_factory=list)
    # The approval it waits for (Approve/Deny on the page), and until when.
    approval_id: str = ""
    approval_expires: str = ""


@dataclass(frozen=True)
class NotificationView:
    kind: str
    state: str
    label: str
    attempts: int
    detail: str
    at: str


@dataclass(frozen=True)
class BundleView:
    phase: str
    created: str
    size: str
    sha256: str
    failed_sources: list[str]


@dataclass(frozen=True)
class IncidentPage:
    id: str
    title: str
    status: str
    opened: str
    age: str
    resolved: str
    alerts: list[AlertView]
    triage: TriageView | None
    actions: list[ActionView]
    notifications: dict[str, list[NotificationView]]
    bundles: list[BundleView]
    timeline_entries: int


def _alert(alert: Mapping[str, Any]) -> AlertView:
    labels = alert.get("labels") or {}
    return AlertView(
        fingerprint=str(alert.get("fingerprint", "")),
        status=str(alert.get("status", "")),
        labels=sorted((str(k), str(v)) for k, v in labels.items()),
        since=when(parse_time(alert.get("startsAt"))),
        ended=when(parse_time(alert.get("endsAt"))) if alert.get("status") == "resolved" else "",
    )


def _evidence_text(evidence: object) -> str:
    if evidence in (None, {}, []):
        return ""
    if isinstance(evidence, str):
        return evidence
    return json.dumps(evidence, sort_keys=True, ensure_ascii=False)


def _triage(incident: Mapping[str, Any], timeline: list[dict[str, Any]]) -> TriageView | None:
    decision = incident.get("decision")
    if not isinstance(decision, dict):
        return None
    last = next((t for t in reversed(timeline) if t.get("kind") == "triage"), None)
    data = last.get("data", {}) if last else {}
    severity = str(incident.get("severity") or "")
    assessed = data.get("assessed_severity")
    why = "the highest severity among the incident's alerts (labels and the class's rules)"
    if assessed and assessed != severity:
        why = f"assessed {assessed} now; kept {severity}: a severity only rises"
    raised = [t for t in timeline if t.get("kind") == "severity_raised"]
    if raised:
        why += f"; raised {len(raised)} time(s) since the incident opened"
    steps = [
        StepView(
            question=str(step.get("question", "")),
            answer=str(step.get("answer", "")),
            finding=str(step.get("finding") or ""),
            evidence=_evidence_text(step.get("evidence")),
            duration=f"{float(step.get('duration_ms') or 0):.0f} ms",
        )
        for step in decision.get("steps") or []
        if isinstance(step, dict)
    ]
    return TriageView(
        error_class=str(incident.get("errorClass") or decision.get("error_class") or ""),
        severity=severity,
        severity_why=why,
        verdict=str(decision.get("verdict", "")).replace("_", " "),
        summary=str(decision.get("summary") or ""),
        acknowledge_by=when(parse_time(incident.get("acknowledgeBy"))),
        acknowledged=_acknowledged(incident),
        mitigated=_mitigated(incident),
        steps=steps,
    )


def _acknowledged(incident: Mapping[str, Any]) -> str:
    seconds = incident.get("secondsToAcknowledge")
    if seconds is None:
        return "not yet"
    due = parse_time(incident.get("acknowledgeBy"))
    at = parse_time(incident.get("acknowledgedAt"))
    in_time = "in time" if due is None or (at is not None and at <= due) else "late"
    by = incident.get("acknowledgedBy") or "someone"
    via = incident.get("acknowledgedVia") or ""
    return f"by {by}{f' ({via})' if via else ''} after {duration(float(seconds))}, {in_time}"


def _mitigated(incident: Mapping[str, Any]) -> str:
    seconds = incident.get("secondsToMitigate")
    return "not yet" if seconds is None else f"after {duration(float(seconds))}"


def _env_text(value: Mapping[str, Any] | None) -> str:
    if not value:
        return ""
    if not value.get("present"):
        return "unset"
    if value.get("from_reference"):
        return "set from a reference"
    return str(value.get("value") or "")


def _outcome_state(data: Mapping[str, Any]) -> str:
    status = str(data.get("status", ""))
    if status == "applied" and data.get("verified"):
        return "verified"
    return status


def action_views(
    journal: Iterable[JournalEntry],
    timeline: Iterable[Mapping[str, Any]],
    approvals: Iterable[Approval] = (),
) -> list[ActionView]:
    """Each action of the incident, in the order first seen: awaiting approval while a person
    may still decide, else its current state from the journal (waiting, in flight, undone) or
    its latest outcome, with every outcome."""
    waiting = {a.action: a for a in approvals if a.is_awaiting}
    history: dict[str, list[ActionStep]] = {}
    targets: dict[str, str] = {}
    for item in timeline:
        data = item.get("data") or {}
        if item.get("kind") != "remediation" or not data.get("action"):
            continue
        name = str(data["action"])
        state = _outcome_state(data)
        targets.setdefault(name, str(data.get("target") or ""))
        history.setdefault(name, []).append(
            ActionStep(
                at=when(parse_time(item.get("at"))),
                state=state,
                label=ACTION_STATES.get(state, state.replace("_", " ")),
                reason=str(data.get("reason") or ""),
                before=str(data.get("before") or ""),
                after=str(data.get("after") or ""),
            )
        )
    entries = {e.action: e for e in journal}
    names = list(dict.fromkeys([*history, *entries, *waiting]))
    views: list[ActionView] = []
    for name in names:
        steps = history.get(name, [])
        latest = steps[-1] if steps else None
        entry = entries.get(name)
        pending = waiting.get(name)
        in_journal = _JOURNAL_STATES.get(entry.state) if entry is not None else None
        state = (
            "awaiting_approval"
            if pending is not None
            else in_journal or (latest.state if latest else (entry.state if entry else "planned"))
        )
        before = latest.before if latest and latest.before else ""
        after = latest.after if latest and latest.after else ""
        reason = latest.reason if latest else ""
        if entry is not None:
            before = before or _env_text(entry.before)
            after = after or _env_text(entry.after)
            if entry.reason and (entry.state in _JOURNAL_STATES or not reason):
                reason = entry.reason
        views.append(
            ActionView(
                action=name,
                target=targets.get(name) or (entry.target if entry else ""),
                state=state,
                label=ACTION_STATES.get(state, state.replace("_", " ")),
                reason=reason,
                before=before,
                after=after,
                history=steps,
                approval_id=pending.id if pending is not None else "",
                approval_expires=when(pending.expires_at) if pending is not None else "",
            )
        )
    return views


def _notification(message: Mapping[str, Any], *, now: float) -> NotificationView:
    state = str(message.get("state", ""))
    attempts = int(message.get("attempts") or 0)
    error = str(message.get("last_error") or "")
    detail = ""
    if state == "sent":
        state, detail = "delivered", ""
        at = when(message.get("sent_at"))
    elif state == "pending":
        not_before = float(message.get("not_before") or 0)
        next_at = float(message.get("next_attempt_at") or 0)
        if attempts:
            state = "retrying"
            detail = f"next attempt {when(next_at)}" + (f" (last error: {error})" if error else "")
        elif not_before > now:
            state = "queued"
            detail = f"held until {when(not_before)}"
        else:
            state = "queued"
        at = when(message.get("created_at"))
    elif state == "skipped":
        detail = error or "superseded: not needed any more"
        at = when(message.get("sent_at") or message.get("created_at"))
    else:
        detail = error
        at = when(message.get("created_at"))
    return NotificationView(
        kind=str(message.get("kind", "")),
        state=state,
        label=state,
        attempts=attempts,
        detail=detail,
        at=at,
    )


def notification_views(
    messages: Iterable[Mapping[str, Any]], *, now: float
) -> dict[str, list[NotificationView]]:
    """The incident's messages per destination, oldest first."""
    grouped: dict[str, list[NotificationView]] = {}
    for message in messages:
        grouped.setdefault(str(message.get("destination", "")), []).append(
            _notification(message, now=now)
        )
    return grouped


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1048576:.1f} MiB"


def _bundle(record: BundleRecord) -> BundleView:
    return BundleView(
        phase=record.phase,
        created=when(record.created_at),
        size=_size(record.size_bytes),
        sha256=record.sha256,
        failed_sources=list(record.failed_sources),
    )


def incident_page(detail: IncidentDetail, *, now: float) -> IncidentPage:
    incident = detail.incident
    timeline: list[dict[str, Any]] = incident.get("timeline") or []
    resolved = parse_time(incident.get("resolvedAt"))
    return IncidentPage(
        id=str(incident["id"]),
        title=str(incident.get("title", "")),
        status=str(incident.get("status", "")),
        opened=when(detail.opened_at),
        age=duration((resolved or now) - detail.opened_at),
        resolved=when(resolved),
        alerts=[_alert(a) for a in incident.get("alerts") or []],
        triage=_triage(incident, timeline),
        actions=action_views(detail.journal, timeline, detail.approvals),
        notifications=notification_views(detail.messages, now=now),
        bundles=[_bundle(b) for b in detail.bundles],
        timeline_entries=len(timeline),
    )
