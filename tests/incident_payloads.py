"""Alertmanager notifications for tests that need incidents in a real store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from receiver.alertmanager import WebhookPayload
from receiver.incidents import add_timeline, apply_notification
from receiver.store import Store

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
    error_class: str | None = None,
    severity: str | None = None,
    decision: dict[str, Any] | None = None,
) -> None:
    """Record what triage and remediation would: a timeline entry, and the triage result."""
    import json

    def write(conn: Any) -> None:
        add_timeline(conn, incident_id, kind, message)
        if error_class or severity or decision:
            conn.execute(
                "UPDATE incidents SET error_class = coalesce(?, error_class),"
                " severity = coalesce(?, severity), decision = coalesce(?, decision)"
                " WHERE id = ?",
                (error_class, severity, json.dumps(decision) if decision else None, incident_id),
            )

    await store.write(write)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
