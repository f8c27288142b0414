"""Incidents: from stored webhooks to an incident lifecycle, idempotently.

A notification carries the whole alert group, so each one is diffed per fingerprint against
what the open incident of that group already knows. Only differences become timeline entries
and incident events; a resend changes nothing. An alert is resolved only when Alertmanager
says ``resolved`` for its fingerprint; one that is merely absent from a later notification is
left as it was. The incident resolves when every alert it has seen is resolved. An incident's
id is derived from its group key and when its episode started (:mod:`receiver.identity`).

Everything a notification changes, and the inbox row marked done, commit in one transaction:
a crash leaves either nothing or everything, and unprocessed rows are picked up on restart.
Incident events (opened, alerts changed, resolved) are queued in the same transaction for the
responder, which triages, remediates and notifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from receiver.alertmanager import Alert, WebhookPayload
from receiver.identity import Episode, incident_id_for
from receiver.runbook import ErrorClass, Severity
from receiver.store import Connection, Row, now

__all__ = [
    "AlertChange",
    "InboxRow",
    "IncidentEvent",
    "PagerDutyNews",
    "PagerDutyRecorded",
    "PrunedIncidents",
    "ResponseTime",
    "SeverityResponse",
    "StoredBundle",
    "add_timeline",
    "apply_notification",
    "dedup_hash",
    "due_events",
    "enqueue_webhook",
    "enqueue_webhooks",
    "forget_bundles",
    "get_incident",
    "incidents_kept",
    "list_incidents",
    "overdue_acknowledgements",
    "prune_incidents",
    "recent_dedup_keys",
    "record_acknowledgement",
    "record_mitigation",
    "record_pagerduty_news",
    "record_triage",
    "response_times",
    "stored_bundles",
]

EventKind = Literal["opened", "alerts_changed", "resolved"]


@dataclass(frozen=True)
class InboxRow:
    id: int
    payload: bytes
    received_at: float


@dataclass(frozen=True)
class AlertChange:
    """One alert's state change, as recorded on the timeline."""

    fingerprint: str
    status: str
    previous: str | None
    labels: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "previous": self.previous,
            "labels": self.labels,
        }


@dataclass(frozen=True)
class IncidentEvent:
    """Work for the responder, queued durably with the change that caused it."""

    id: int
    incident_id: str
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0


@dataclass(frozen=True)
class NotificationOutcome:
    incident_id: str | None
    changes: list[AlertChange]
    opened: bool
    resolved: bool
    # Time to mitigate, when this notification resolved an incident nothing had mitigated.
    mitigation: ResponseTime | None = None


# -- inbox ----------------------------------------------------------------------------------


_HASH_BITS = (1 << 63) - 1
_HEX = frozenset("0123456789abcdef")


def dedup_hash(dedup_key: str) -> int:
    """The inbox's integer key of a dedup digest: its first 63 bits (a positive SQLite integer).

    Repeats are looked up by this integer (a small index) and confirmed by comparing the full
    digest, so a collision never makes a different notification look like a repeat. A key
    that is not a 64-digit hex digest is digested first.
    """
    if len(dedup_key) != 64 or not _HEX.issuperset(dedup_key):
        dedup_key = hashlib.sha256(dedup_key.encode()).hexdigest()
    return int(dedup_key[:16], 16) & _HASH_BITS


def enqueue_webhook(conn: Connection, *, dedup_key: str, group_key: str, body: bytes) -> bool:
    """Store a received notification; ``False`` if the same news was stored before."""
    return enqueue_webhooks(conn, [(dedup_key, group_key, body)])[0]


# Rows per INSERT statement: 5 parameters each, below SQLite's oldest parameter limit (999).
_ROWS_PER_STATEMENT = 160


def enqueue_webhooks(
    conn: Connection,
    webhooks: Sequence[tuple[str, str, bytes]],
    *,
    received_at: Sequence[float] | None = None,
) -> list[bool]:
    """Store many received notifications ``(dedup_key, group_key, body)`` at once.

    Returns, in order, whether each was stored (``False``: the same news was stored before,
    or earlier in this same call). ``received_at`` gives when each was received (default:
    now). One SELECT and one multi-row INSERT per 160 webhooks,
    instead of a statement each: every sqlite3 call hands the interpreter lock to the event
    loop and waits to get it back, and that wait, not SQLite, is what a commit costs under
    load. Repeats are found by :func:`dedup_hash` and confirmed by the full digest. Run inside
    the store's write transaction (one writer), so nothing can slip in between the check and
    the insert.
    """
    results: list[bool] = []
    for start in range(0, len(webhooks), _ROWS_PER_STATEMENT):
        chunk = webhooks[start : start + _ROWS_PER_STATEMENT]
        hashes = [dedup_hash(key) for key, _, _ in chunk]
        wanted = list(dict.fromkeys(hashes))
        marks = ",".join("?" * len(wanted))
        seen = {
            row[0]
            for row in conn.execute(
                f"SELECT dedup_key FROM inbox WHERE dedup_hash IN ({marks})",
                wanted,
            )
        }
        received = (
            received_at[start : start + _ROWS_PER_STATEMENT]
            if received_at is not None
            else [now()] * len(chunk)
        )
        values: list[Any] = []
        for (key, group_key, body), key_hash, at in zip(chunk, hashes, received, strict=True):
            if key in seen:
                results.append(False)
                continue
            seen.add(key)
            values.extend((key_hash, key, group_key, at, body))
            results.append(True)
        if values:
            rows = ",".join(["(?, ?, ?, ?, ?)"] * (len(values) // 5))
            conn.execute(
                "INSERT INTO inbox (dedup_hash, dedup_key, group_key, received_at, payload)"
                f" VALUES {rows}",
                values,
            )
    return results


def recent_dedup_keys(conn: Connection, limit: int) -> list[str]:
    """The dedup keys of the ``limit`` newest inbox rows, oldest first."""
    rows = conn.execute("SELECT dedup_key FROM inbox ORDER BY id DESC LIMIT ?", (limit,))
    return [row[0] for row in rows][::-1]


def pending_inbox(conn: Connection, limit: int = 100) -> list[InboxRow]:
    rows = conn.execute(
        "SELECT id, payload, received_at FROM inbox WHERE state = 'pending' ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    return [InboxRow(r["id"], r["payload"], r["received_at"]) for r in rows]


def inbox_depth(conn: Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()[0])


def mark_inbox(conn: Connection, row_id: int, *, state: str, error: str | None) -> None:
    conn.execute(
        "UPDATE inbox SET state = ?, processed_at = ?, error = ?, attempts = attempts + 1"
        " WHERE id = ?",
        (state, now(), error, row_id),
    )


def prune_inbox(conn: Connection, *, older_than: float) -> int:
    cur = conn.execute(
        "DELETE FROM inbox WHERE state != 'pending' AND received_at < ?", (older_than,)
    )
    return cur.rowcount


# -- timeline and events --------------------------------------------------------------------


def add_timeline(
    conn: Connection,
    incident_id: str,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
    *,
    at: float | None = None,
) -> None:
    """Record one event in an incident's history (alerts, decisions, actions, notifications)."""
    conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, message, data) VALUES (?, ?, ?, ?, ?)",
        (incident_id, at if at is not None else now(), kind, message, json.dumps(data or {})),
    )


def _queue_event(conn: Connection, incident_id: str, kind: EventKind, data: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO incident_events (incident_id, kind, data, created_at) VALUES (?, ?, ?, ?)",
        (incident_id, kind, json.dumps(data), now()),
    )


def due_events(
    conn: Connection, limit: int = 50, *, busy: Collection[str] = ()
) -> list[IncidentEvent]:
    """Pending events whose retry time has come, in order; an incident whose earliest pending
    event is still backing off contributes nothing, so each incident's events stay in order.
    Incidents in ``busy`` (being handled right now) are left out."""
    skip = list(busy)
    rows = conn.execute(
        "SELECT id, incident_id, kind, data, attempts, next_attempt_at FROM incident_events"
        " WHERE state = 'pending'"
        # An empty "NOT IN ()" is SQLite's only: PostgreSQL refuses it.
        + (f" AND incident_id NOT IN ({', '.join('?' * len(skip))})" if skip else "")
        + " ORDER BY id LIMIT ?",
        (*skip, limit * 4),
    ).fetchall()
    blocked: set[str] = set()
    due: list[IncidentEvent] = []
    current = now()
    for r in rows:
        if r["incident_id"] in blocked:
            continue
        if r["next_attempt_at"] > current:
            blocked.add(r["incident_id"])
            continue
        due.append(
            IncidentEvent(
                r["id"], r["incident_id"], r["kind"], json.loads(r["data"]), r["attempts"]
            )
        )
        if len(due) >= limit:
            break
    return due


def retry_event(
    conn: Connection, event_id: int, *, error: str, give_up: bool, backoff: float
) -> None:
    """Record a failed attempt: try again after ``backoff`` seconds, or give up."""
    conn.execute(
        "UPDATE incident_events SET attempts = attempts + 1, error = ?, next_attempt_at = ?,"
        " state = ? WHERE id = ?",
        (error, now() + backoff, "failed" if give_up else "pending", event_id),
    )


def mark_event(conn: Connection, event_id: int, *, state: str, error: str | None) -> None:
    conn.execute(
        "UPDATE incident_events SET state = ?, error = ?, attempts = attempts + 1 WHERE id = ?",
        (state, error, event_id),
    )


# -- applying a notification ----------------------------------------------------------------


def _title(payload: WebhookPayload) -> str:
    name = payload.common_labels.get("alertname") or payload.alerts[0].alertname or "alert"
    extra = ", ".join(
        f"{k}={v}" for k, v in sorted(payload.group_labels.items()) if k != "alertname"
    )
    return f"{name} ({extra})" if extra else name


def _id_taken(conn: Connection, incident_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return row is not None


def _open_incident(conn: Connection, payload: WebhookPayload, episode: Episode) -> str:
    # Derived, not random (receiver.identity): the same episode maps to the same id after the
    # state is lost. An id already taken (the episode re-opened) gets the next suffix.
    incident_id = incident_id_for(episode, taken=lambda candidate: _id_taken(conn, candidate))
    ts = now()
    conn.execute(
        "INSERT INTO incidents (id, group_key, status, title, group_labels, external_url,"
        " opened_at, updated_at) VALUES (?, ?, 'open', ?, ?, ?, ?, ?)",
        (
            incident_id,
            payload.group_key,
            _title(payload),
            json.dumps(payload.group_labels),
            payload.external_url,
            ts,
            ts,
        ),
    )
    add_timeline(conn, incident_id, "incident", f"incident opened: {_title(payload)}")
    return incident_id


def _upsert_alert(conn: Connection, incident_id: str, alert: Alert) -> AlertChange | None:
    row = conn.execute(
        "SELECT status, starts_at, ends_at FROM alerts WHERE incident_id = ? AND fingerprint = ?",
        (incident_id, alert.fingerprint),
    ).fetchone()
    starts = alert.starts_at.isoformat()
    ends = alert.ended_at.isoformat() if alert.ended_at else None
    values = (
        alert.status,
        json.dumps(alert.labels, sort_keys=True),
        json.dumps(alert.annotations, sort_keys=True),
        starts,
        ends,
        alert.generator_url,
        now(),
    )
    if row is None:
        conn.execute(
            "INSERT INTO alerts (status, labels, annotations, starts_at, ends_at, generator_url,"
            " updated_at, incident_id, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, incident_id, alert.fingerprint),
        )
        previous = None
    elif (row["status"], row["starts_at"], row["ends_at"]) == (alert.status, starts, ends):
        return None
    else:
        conn.execute(
            "UPDATE alerts SET status = ?, labels = ?, annotations = ?, starts_at = ?, ends_at = ?,"
            " generator_url = ?, updated_at = ? WHERE incident_id = ? AND fingerprint = ?",
            (*values, incident_id, alert.fingerprint),
        )
        previous = row["status"]
        if previous == alert.status:
            # Same status with new times: a new episode (re-fired) or a corrected end time.
            previous = None if alert.status == "firing" else previous
    change = AlertChange(alert.fingerprint, alert.status, previous, alert.labels)
    add_timeline(
        conn,
        incident_id,
        f"alert_{alert.status}",
        f"alert {alert.alertname or alert.fingerprint} {alert.status}",
        {**change.as_dict(), "startsAt": starts, "endsAt": ends},
    )
    return change


def apply_notification(conn: Connection, payload: WebhookPayload) -> NotificationOutcome:
    """Diff one notification into incidents; run inside the store's write transaction."""
    open_row = conn.execute(
        "SELECT id FROM incidents WHERE group_key = ? AND status = 'open'", (payload.group_key,)
    ).fetchone()
    opened = False
    if open_row is None:
        episode = Episode.of(payload)
        if episode is None:
            # News of resolution for a group with no open incident: already resolved, or
            # never seen firing. Nothing to resolve.
            return NotificationOutcome(None, [], opened=False, resolved=False)
        incident_id = _open_incident(conn, payload, episode)
        opened = True
    else:
        incident_id = open_row["id"]

    changes = [c for a in payload.alerts if (c := _upsert_alert(conn, incident_id, a)) is not None]
    still_firing = conn.execute(
        "SELECT count(*) FROM alerts WHERE incident_id = ? AND status = 'firing'", (incident_id,)
    ).fetchone()[0]
    resolved = still_firing == 0
    ts = now()
    conn.execute(
        "UPDATE incidents SET updated_at = ?, status = ?, resolved_at = ? WHERE id = ?",
        (ts, "resolved" if resolved else "open", ts if resolved else None, incident_id),
    )
    if opened:
        _queue_event(conn, incident_id, "opened", {"changes": [c.as_dict() for c in changes]})
    elif changes:
        _queue_event(
            conn, incident_id, "alerts_changed", {"changes": [c.as_dict() for c in changes]}
        )
    mitigation = None
    if resolved:
        add_timeline(conn, incident_id, "incident", "incident resolved: every alert resolved")
        _queue_event(conn, incident_id, "resolved", {})
        # Recovery mitigates an incident that no verified action had mitigated before.
        mitigation = record_mitigation(conn, incident_id, at=ts, how="recovered")
    return NotificationOutcome(
        incident_id, changes, opened=opened, resolved=resolved, mitigation=mitigation
    )


# -- triage --------------------------------------------------------------------------------


def record_triage(
    conn: Connection,
    incident_id: str,
    *,
    error_class: ErrorClass,
    severity: Severity,
    acknowledge_by: datetime,
    decision: dict[str, Any],
) -> None:
    """Store a triage result on the incident, and say so on its timeline.

    Severity only rises: a lower one than recorded is kept as it was (a rise is its own
    timeline entry). The acknowledge-by deadline only comes closer: a resend or a rise never
    pushes it later. The class and the decision are the latest ones. Raises ``LookupError``
    for an unknown incident.
    """
    row = conn.execute(
        "SELECT severity, error_class, acknowledge_by FROM incidents WHERE id = ?", (incident_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no incident {incident_id}")
    previous = Severity(row["severity"]) if row["severity"] else None
    kept = previous if previous is not None and previous.is_higher_than(severity) else severity
    deadline = acknowledge_by.timestamp()
    if row["acknowledge_by"] is not None:
        deadline = min(deadline, float(row["acknowledge_by"]))
    verdict = decision.get("verdict", "unknown")
    conn.execute(
        "UPDATE incidents SET error_class = ?, severity = ?, acknowledge_by = ?, decision = ?,"
        " updated_at = ? WHERE id = ?",
        (error_class.value, kept.value, deadline, json.dumps(decision), now(), incident_id),
    )
    if previous is not None and severity.is_higher_than(previous):
        add_timeline(
            conn,
            incident_id,
            "severity_raised",
            f"severity raised {previous.value} → {severity.value}",
            {"from": previous.value, "to": severity.value},
        )
    add_timeline(
        conn,
        incident_id,
        "triage",
        f"triaged: {error_class.value}, {kept.value}, verdict {verdict}",
        {
            "error_class": error_class.value,
            "previous_error_class": row["error_class"],
            "severity": kept.value,
            "assessed_severity": severity.value,
            "acknowledge_by": _iso(deadline),
            "verdict": verdict,
            "summary": decision.get("summary"),
        },
    )


# -- response times -------------------------------------------------------------------------

AcknowledgedVia = Literal["pagerduty", "approval"]


@dataclass(frozen=True)
class ResponseTime:
    """One response measured: from the incident's opening to its first acknowledgement, or to
    its mitigation, at the incident's severity then (``None``: not triaged yet).

    ``in_time`` says whether an acknowledgement came by the incident's acknowledge-by time
    (the runbook's response time for its severity); ``None`` where there is no such target.
    """

    incident_id: str
    severity: Severity | None
    seconds: float
    in_time: bool | None = None


def _duration(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def record_acknowledgement(
    conn: Connection, incident_id: str, *, by: str, at: float, via: AcknowledgedVia
) -> ResponseTime | None:
    """The incident's first acknowledgement: who (``by``), when (``at``) and through what
    (``via``), with its time to acknowledge on the timeline. ``None`` when the incident was
    acknowledged before: the first one is the response. Raises ``LookupError`` for an
    unknown incident."""
    row = conn.execute(
        "SELECT opened_at, severity, acknowledge_by, acknowledged_at FROM incidents WHERE id = ?",
        (incident_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"no incident {incident_id}")
    if row["acknowledged_at"] is not None:
        return None
    conn.execute(
        "UPDATE incidents SET acknowledged_at = ?, acknowledged_by = ?, acknowledged_via = ?,"
        " updated_at = ? WHERE id = ?",
        (at, by, via, now(), incident_id),
    )
    deadline = row["acknowledge_by"]
    measured = ResponseTime(
        incident_id,
        Severity(row["severity"]) if row["severity"] else None,
        max(0.0, at - row["opened_at"]),
        in_time=None if deadline is None else at <= deadline,
    )
    verdict = {True: ", in time", False: ", later than the runbook's response time"}
    add_timeline(
        conn,
        incident_id,
        "acknowledged",
        f"acknowledged by {by} after {_duration(measured.seconds)}"
        f"{verdict.get(measured.in_time, '') if measured.in_time is not None else ''}",
        {
            "by": by,
            "via": via,
            "seconds_to_acknowledge": measured.seconds,
            "in_time": measured.in_time,
            "acknowledge_by": _iso(deadline),
        },
        at=at,
    )
    return measured


def record_mitigation(
    conn: Connection, incident_id: str, *, at: float, how: str
) -> ResponseTime | None:
    """The incident's first mitigation (a remediation that verified, or recovery), with its
    time to mitigate on the timeline; ``None`` when it was mitigated before."""
    row = conn.execute(
        "SELECT opened_at, severity, mitigated_at FROM incidents WHERE id = ?", (incident_id,)
    ).fetchone()
    if row is None or row["mitigated_at"] is not None:
        return None
    conn.execute(
        "UPDATE incidents SET mitigated_at = ?, mitigated_by = ? WHERE id = ?",
        (at, how, incident_id),
    )
    measured = ResponseTime(
        incident_id,
        Severity(row["severity"]) if row["severity"] else None,
        max(0.0, at - row["opened_at"]),
    )
    add_timeline(
        conn,
        incident_id,
        "mitigated",
        f"mitigated ({how}) after {_duration(measured.seconds)}",
        {"how": how, "seconds_to_mitigate": measured.seconds},
        at=at,
    )
    return measured


def overdue_acknowledgements(conn: Connection, *, at: float) -> dict[Severity, int]:
    """Open incidents not acknowledged whose acknowledge-by time has passed at ``at``, by
    severity (every severity present, 0 when none)."""
    overdue = dict.fromkeys(Severity, 0)
    for row in conn.execute(
        "SELECT severity, count(*) FROM incidents WHERE status = 'open'"
        " AND acknowledged_at IS NULL AND acknowledge_by < ? AND severity IS NOT NULL"
        " GROUP BY severity",
        (at,),
    ):
        overdue[Severity(row[0])] = int(row[1])
    return overdue


@dataclass(frozen=True)
class SeverityResponse:
    """How one severity's incidents opened in a period were answered.

    ``met``: acknowledged by their acknowledge-by time; ``missed``: acknowledged later, or not
    acknowledged and past it; ``pending``: neither yet (open, not acknowledged, still in time).
    ``share_met`` is ``met / (met + missed)``, ``None`` when nothing was decided.
    """

    severity: Severity
    incidents: int
    met: int
    missed: int
    pending: int
    median_seconds_to_acknowledge: float | None
    median_seconds_to_mitigate: float | None

    @property
    def share_met(self) -> float | None:
        decided = self.met + self.missed
        return self.met / decided if decided else None


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def response_times(conn: Connection, *, since: float, at: float) -> list[SeverityResponse]:
    """Per severity (P1 first, every one present), how the incidents opened since ``since``
    were acknowledged and mitigated, as of ``at``. Untriaged incidents have no target and are
    left out."""
    rows = conn.execute(
        "SELECT severity, opened_at, acknowledge_by, acknowledged_at, mitigated_at"
        " FROM incidents WHERE opened_at >= ? AND severity IS NOT NULL",
        (since,),
    ).fetchall()
    report = []
    for severity in Severity:
        mine = [r for r in rows if r["severity"] == severity.value]
        met = missed = pending = 0
        for r in mine:
            deadline, acked = r["acknowledge_by"], r["acknowledged_at"]
            if deadline is None:
                pending += 1
            elif acked is not None:
                if acked <= deadline:
                    met += 1
                else:
                    missed += 1
            elif deadline < at:
                missed += 1
            else:
                pending += 1
        report.append(
            SeverityResponse(
                severity,
                incidents=len(mine),
                met=met,
                missed=missed,
                pending=pending,
                median_seconds_to_acknowledge=_median(
                    [
                        max(0.0, r["acknowledged_at"] - r["opened_at"])
                        for r in mine
                        if r["acknowledged_at"] is not None
                    ]
                ),
                median_seconds_to_mitigate=_median(
                    [
                        max(0.0, r["mitigated_at"] - r["opened_at"])
                        for r in mine
                        if r["mitigated_at"] is not None
                    ]
                ),
            )
        )
    return report


# -- PagerDuty webhooks -----------------------------------------------------------------------


@dataclass(frozen=True)
class PagerDutyNews:
    """One PagerDuty webhook event about an incident, as it is recorded.

    ``incident_id`` is our incident its alert's dedup key names (``None``: the event did not
    carry one); ``pagerduty_id`` is PagerDuty's incident, remembered once matched, so that an
    event that names only the PagerDuty incident (an annotation) still finds ours.
    ``message`` is the line for the timeline, already written for people.
    """

    event_id: str
    event_type: str
    occurred_at: float
    agent: str | None
    pagerduty_id: str
    incident_id: str | None
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PagerDutyRecorded:
    """What recording one event did: which incident of ours (``None``: not ours), whether it
    had been recorded before, and the acknowledgement it measured (if it was the first)."""

    incident_id: str | None
    repeat: bool = False
    acknowledgement: ResponseTime | None = None


def record_pagerduty_news(conn: Connection, news: PagerDutyNews) -> PagerDutyRecorded:
    """Record ``news`` on our incident's timeline, once per PagerDuty event id.

    An event for an incident that is not ours (no such incident, and no PagerDuty incident
    matched to one before) records nothing. An acknowledgement is also the incident's first
    acknowledgement, if it is the first.
    """
    incident_id = news.incident_id
    if incident_id is not None and not _id_taken(conn, incident_id):
        incident_id = None
    if incident_id is None:
        row = conn.execute(
            "SELECT incident_id FROM pagerduty_incidents WHERE pagerduty_id = ?",
            (news.pagerduty_id,),
        ).fetchone()
        if row is None:
            return PagerDutyRecorded(None)
        incident_id = str(row[0])
    else:
        conn.execute(
            "INSERT INTO pagerduty_incidents (pagerduty_id, incident_id) VALUES (?, ?)"
            " ON CONFLICT (pagerduty_id) DO NOTHING",
            (news.pagerduty_id, incident_id),
        )
    seen = conn.execute(
        "INSERT INTO pagerduty_events (event_id, incident_id, event_type, received_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        (news.event_id, incident_id, news.event_type, now()),
    )
    if seen.rowcount == 0:
        return PagerDutyRecorded(incident_id, repeat=True)
    add_timeline(
        conn,
        incident_id,
        "pagerduty",
        news.message,
        {
            "event_id": news.event_id,
            "event_type": news.event_type,
            "by": news.agent,
            "pagerduty_incident": news.pagerduty_id,
            **news.data,
        },
        at=news.occurred_at,
    )
    acknowledgement = None
    if news.event_type == "incident.acknowledged":
        acknowledgement = record_acknowledgement(
            conn,
            incident_id,
            by=news.agent or "someone in PagerDuty",
            at=news.occurred_at,
            via="pagerduty",
        )
    return PagerDutyRecorded(incident_id, acknowledgement=acknowledgement)


# -- reading incidents ----------------------------------------------------------------------


def _incident_summary(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "title": row["title"],
        "groupKey": row["group_key"],
        "groupLabels": json.loads(row["group_labels"]),
        "openedAt": _iso(row["opened_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "resolvedAt": _iso(row["resolved_at"]),
        "errorClass": row["error_class"],
        "severity": row["severity"],
        "acknowledgeBy": _iso(row["acknowledge_by"]),
        "acknowledgedAt": _iso(row["acknowledged_at"]),
        "acknowledgedBy": row["acknowledged_by"],
        "acknowledgedVia": row["acknowledged_via"],
        "secondsToAcknowledge": _since_opened(row, row["acknowledged_at"]),
        "mitigatedAt": _iso(row["mitigated_at"]),
        "secondsToMitigate": _since_opened(row, row["mitigated_at"]),
    }


def _since_opened(row: Row, ts: float | None) -> float | None:
    return None if ts is None else round(max(0.0, ts - row["opened_at"]), 3)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def list_incidents(
    conn: Connection, *, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    if status is None:
        rows = conn.execute(
            "SELECT * FROM incidents ORDER BY opened_at DESC LIMIT ?", (limit,)
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT * FROM incidents WHERE status = ? ORDER BY opened_at DESC LIMIT ?",
            (status, limit),
        ).fetchall()
    return [_incident_summary(r) for r in rows]


def get_incident(conn: Connection, incident_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        return None
    incident = _incident_summary(row)
    incident["externalURL"] = row["external_url"]
    incident["decision"] = json.loads(row["decision"]) if row["decision"] else None
    incident["alerts"] = [
        {
            "fingerprint": a["fingerprint"],
            "status": a["status"],
            "labels": json.loads(a["labels"]),
            "annotations": json.loads(a["annotations"]),
            "startsAt": a["starts_at"],
            "endsAt": a["ends_at"],
            "generatorURL": a["generator_url"],
        }
        for a in conn.execute(
            "SELECT * FROM alerts WHERE incident_id = ? ORDER BY starts_at, fingerprint",
            (incident_id,),
        )
    ]
    incident["timeline"] = [
        {
            "at": _iso(t["at"]),
            "kind": t["kind"],
            "message": t["message"],
            "data": json.loads(t["data"]),
        }
        for t in conn.execute(
            "SELECT * FROM timeline WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
    ]
    return incident


# -- retention ------------------------------------------------------------------------------

# The tables whose rows belong to one incident, emptied before the incident's own row (the
# first four and the PagerDuty ones refer to it with a foreign key).
_INCIDENT_TABLES = (
    "alerts",
    "timeline",
    "incident_events",
    "evidence_bundles",
    "outbox",
    "notify_state",
    "remediation_actions",
    "remediation_reverts",
    "pagerduty_events",
    "pagerduty_incidents",
)

# A resolved incident that still has work to do is kept whatever its age: an event not yet
# handled, a notification not yet delivered, or a change of ours that a revert still has to
# look at (scheduled or not: the same condition as ``journal.revertible``).
_PRUNABLE = (
    "SELECT id FROM incidents i WHERE status = 'resolved' AND resolved_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM incident_events e"
    "  WHERE e.incident_id = i.id AND e.state = 'pending')"
    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id AND o.state = 'pending')"
    " AND NOT EXISTS (SELECT 1 FROM remediation_reverts r"
    "  WHERE r.incident_id = i.id AND r.state = 'pending')"
    " AND NOT EXISTS (SELECT 1 FROM remediation_actions a WHERE a.incident_id = i.id"
    "  AND a.kind = 'set_env' AND a.state IN ('intent', 'done', 'reverting'))"
    " ORDER BY resolved_at LIMIT ?"
)


@dataclass(frozen=True)
class PrunedIncidents:
    """Incidents deleted in one batch, and the evidence files that were theirs."""

    ids: list[str]
    bundle_paths: list[str]


def prune_incidents(conn: Connection, *, resolved_before: float, limit: int) -> PrunedIncidents:
    """Delete at most ``limit`` incidents resolved before ``resolved_before`` (oldest first)
    with every row that belongs to them; an incident with work left is kept (``_PRUNABLE``).

    The bundle files are the caller's to delete, after the commit: a crash in between leaves
    files that no row names, which retention finds by their names later.
    """
    ids = [r[0] for r in conn.execute(_PRUNABLE, (resolved_before, limit))]
    if not ids:
        return PrunedIncidents([], [])
    marks = ",".join("?" * len(ids))
    paths = [
        r[0]
        for r in conn.execute(
            f"SELECT path FROM evidence_bundles WHERE incident_id IN ({marks})", ids
        )
    ]
    for table in _INCIDENT_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE incident_id IN ({marks})", ids)
    conn.execute(f"DELETE FROM incidents WHERE id IN ({marks})", ids)
    return PrunedIncidents(ids, paths)


def incidents_kept(conn: Connection) -> dict[str, int]:
    """How many incidents the store holds, by status (open, resolved)."""
    kept = {"open": 0, "resolved": 0}
    for row in conn.execute("SELECT status, count(*) FROM incidents GROUP BY status"):
        kept[row[0]] = int(row[1])
    return kept


@dataclass(frozen=True)
class StoredBundle:
    """An evidence bundle the store knows, with when its incident resolved (``None``: open)."""

    id: int
    incident_id: str
    phase: str
    path: str
    resolved_at: float | None


def stored_bundles(conn: Connection) -> list[StoredBundle]:
    """Every evidence bundle recorded, with its incident's resolution time."""
    rows = conn.execute(
        "SELECT b.id, b.incident_id, b.phase, b.path,"
        " CASE WHEN i.status = 'resolved' THEN i.resolved_at END AS resolved_at"
        " FROM evidence_bundles b JOIN incidents i ON i.id = b.incident_id ORDER BY b.id"
    ).fetchall()
    return [
        StoredBundle(r["id"], r["incident_id"], r["phase"], r["path"], r["resolved_at"])
        for r in rows
    ]


def forget_bundles(conn: Connection, bundles: Sequence[StoredBundle], why: str) -> None:
    """Delete the records of bundles whose files are being deleted, and say so on each
    incident's timeline (``why``: the reason, for a person)."""
    for bundle in bundles:
        cur = conn.execute("DELETE FROM evidence_bundles WHERE id = ?", (bundle.id,))
        if cur.rowcount:
            add_timeline(
                conn,
                bundle.incident_id,
                "evidence",
                f"evidence bundle ({bundle.phase}) deleted: {why}",
                {"phase": bundle.phase, "path": bundle.path},
            )
