"""Alertmanager notifications for tests that need incidents in a real store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from receiver.alertmanager import WebhookPayload
from receiver.runbook import ErrorClass, Severity
from receiver.store import Store
from receiver.store.incidents import add_timeline, apply_notification, record_triage

__all__ = ["notification", "open_incident", "record", "resolve_incident"]

GROUP_KEY = '{}:{alertname="PostHogErrors"}'


def notification(
    status: str, *, status_code: str = "429", group_key: str = GROUP_KEY
) -> dict[str, Any]:
    """A version-4 notification with one PostHog error alert, firing or resolved."""
    starts = "2026-01-01T10:00:00Z"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "posthog-receiver",
        "groupLabels": {"alertname": "PostHogErrors"},
        "commonLabels": {"alertname": "PostHogErrors", "severity": "error"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "PostHogErrors",
                    "status_code": status_code,
                    "severity": "error",
                },
                "annotations": {"summary": "PostHog API errors"},
                "startsAt": starts,
                "endsAt": "2026-01-01T11:00:00Z" if status == "resolved" else None,
                "generatorURL": "http://prometheus.example:9090/graph",
                "fingerprint": f"fp-{status_code}",
            }
        ],
    }


async def open_incident(store: Store, *, status_code: str = "429") -> str:
    """Open an incident through the real notification path; returns its id."""
    payload = WebhookPayload.model_validate(notification("firing", status_code=status_code))
    outcome = await store.write(lambda c: apply_notification(c, payload))
    assert outcome.incident_id is not None
    return outcome.incident_id


async def resolve_incident(store: Store, *, status_code: str = "429") -> None:
    payload = WebhookPayload.model_validate(notification("resolved", status_code=status_code))
    outcome = await store.write(lambda c: apply_notification(c, payload))
    assert outcome.resolved


async def record(
    store: Store,
    incident_id: str,
    kind: str,
    message: str,
    *,
    error_class: ErrorClass | None = None,
    severity: Severity = Severity.P2,
    decision: dict[str, Any] | None = None,
) -> None:
    """Record what triage and remediation would: the triage result (when ``error_class`` is
    given, through the same function triage uses), and a timeline entry."""

    def write(conn: Any) -> None:
        if error_class is not None:
            record_triage(
                conn,
                incident_id,
                error_class=error_class,
                severity=severity,
                acknowledge_by=datetime.now(UTC),
                decision=decision or {},
            )
        add_timeline(conn, incident_id, kind, message)

    await store.write(write)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
