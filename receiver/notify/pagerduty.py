"""PagerDuty Events API v2: page people for an incident, keep the alert current, resolve it.

One alert per incident, keyed by a stable ``dedup_key``: ``trigger`` opens it and, sent again
with the same key, updates it as the incident changes; ``acknowledge`` (optional) marks that
a remediation is in place; ``resolve`` closes it. Every remediation applied or reverted is
also sent as a change event (``/v2/change/enqueue``), so responders see what the service
changed next to the incident.

Messages are rendered when the notification is stored, without the routing key; the key is
added only when sending, so it is never written to the store or a log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp

from receiver.config import PagerDutySettings
from receiver.notify.delivery import Message, Sent, http_call
from receiver.notify.snapshot import IncidentSnapshot, action_summary, iso_utc
from receiver.redaction import Redactor
from receiver.runbook import Severity

__all__ = [
    "PD_SEVERITY",
    "PagerDutySender",
    "RateLimit",
    "alert_event",
    "change_event",
    "dedup_key",
]

PD_SEVERITY: dict[Severity, str] = {
    Severity.P1: "critical",
    Severity.P2: "error",
    Severity.P3: "warning",
    Severity.P4: "info",
}
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
CLIENT = "posthog-incident-receiver"
DEFAULTS = PagerDutySettings.model_fields


def dedup_key(incident_id: str) -> str:
    """The alert's key: the same for every event of one incident."""
    return f"posthog-receiver/{incident_id}"[:MAX_DEDUP_KEY]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _setting(settings: PagerDutySettings | None, name: str) -> Any:
    return getattr(settings, name) if settings is not None else DEFAULTS[name].default


def _link(href: str | None, text: str) -> list[dict[str, str]]:
    if href and href.startswith(("http://", "https://")):
        return [{"href": href, "text": text}]
    return []


def incident_url(public_url: str, incident_id: str) -> str:
    return f"{public_url.rstrip('/')}/api/incidents/{incident_id}"


def alert_event(
    snapshot: IncidentSnapshot,
    *,
    action: Literal["trigger", "acknowledge", "resolve"],
    settings: PagerDutySettings | None,
    public_url: str,
) -> dict[str, Any]:
    """An alert event (without ``routing_key``) for the incident as it is now."""
    key = dedup_key(snapshot.id)
    if action != "trigger":
        return {"event_action": action, "dedup_key": key}
    url = incident_url(public_url, snapshot.id)
    error_class = snapshot.error_class.value if snapshot.error_class else "unknown"
    verdict = snapshot.verdict.value if snapshot.verdict else "pending"
    summary = f"[{snapshot.severity}] PostHog integration: {snapshot.title} ({error_class})"
    payload: dict[str, Any] = {
        "summary": _cut(summary, MAX_SUMMARY),
        "source": _setting(settings, "source"),
        "severity": PD_SEVERITY[snapshot.severity],
        "timestamp": iso_utc(snapshot.opened_at),
        "class": error_class,
        "custom_details": {
            "class": error_class,
            "severity": snapshot.severity.value,
            "status": snapshot.phase,
            "verdict": verdict,
            "decision": snapshot.decision_summary,
            "decision_path": list(snapshot.decision_steps),
            "actions": [action_summary(a) for a in snapshot.actions],
            "labels": dict(snapshot.labels),
            "incident": url,
        },
    }
    for name in ("component", "group"):
        if value := _setting(settings, name):
            payload[name] = value
    links = [
        *_link(_setting(settings, "runbook_url"), "Runbook"),
        *_link(snapshot.generator_url, "Alert source (Prometheus)"),
        *_link(snapshot.external_url, "Alertmanager"),
        *_link(_setting(settings, "dashboard_url"), "Dashboard"),
        *_link(url, "Incident in posthog-receiver"),
    ]
    return {
        "event_action": "trigger",
        "dedup_key": key,
        "payload": payload,
        "client": CLIENT,
        "client_url": url,
        "links": links,
    }


def change_event(
    snapshot: IncidentSnapshot,
    action: Mapping[str, Any],
    *,
    settings: PagerDutySettings | None,
    public_url: str,
    at: float,
) -> dict[str, Any]:
    """A change event (without ``routing_key``) for one remediation applied or reverted."""
    url = incident_url(public_url, snapshot.id)
    summary = f"{action_summary(action)} — incident {snapshot.id}: {snapshot.title}"
    return {
        "payload": {
            "summary": _cut(summary, MAX_SUMMARY),
            "source": _setting(settings, "source"),
            "timestamp": iso_utc(at),
            "custom_details": {
                "incident": url,
                "severity": snapshot.severity.value,
                "action": {k: v for k, v in action.items() if isinstance(v, str | int | float)},
            },
        },
        "links": _link(url, "Incident in posthog-receiver"),
    }


class RateLimit:
    """Token bucket per routing key, sized so no 60-second window exceeds ``per_minute``.

    PagerDuty counts events over a sliding minute; a bucket of ``burst`` tokens refilled at
    ``(per_minute - burst) / 60`` per second can never let more than ``per_minute`` through
    in any 60 seconds.
    """

    def __init__(self, per_minute: int, *, burst: int | None = None) -> None:
        self.capacity = float(burst if burst is not None else max(1, per_minute // 6))
        self.rate = max(per_minute - self.capacity, 1.0) / 60.0
        self._tokens = self.capacity
        self._at: float | None = None

    def take(self, now: float) -> float:
        """Take a token: 0.0 if one was free, otherwise the seconds until one will be."""
        if self._at is not None and now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class PagerDutySender:
    """Sends alert and change events with the configured routing key."""

    destination = "pagerduty"

    def __init__(
        self, settings: PagerDutySettings, *, redactor: Redactor, clock: Any = time.time
    ) -> None:
        self._settings = settings
        self._redactor = redactor
        self._limit = RateLimit(settings.rate_limit_per_minute)
        self._clock = clock

    def ready_in(self) -> float:
        """0.0 when an event may go now (and counts it), else seconds to wait."""
        return self._limit.take(self._clock())

    async def send(
        self, session: aiohttp.ClientSession, message: Message, state: Mapping[str, str]
    ) -> Sent:
        path = "/v2/change/enqueue" if message.kind == "pagerduty.change" else "/v2/enqueue"
        key = self._settings.routing_key.secret.get_secret_value()
        body = {"routing_key": key, **message.payload}
        await http_call(
            session,
            "POST",
            self._settings.events_url + path,
            service="PagerDuty",
            json_body=body,
            timeout_seconds=self._settings.timeout_seconds,
            ok=(200, 201, 202),
            redactor=self._redactor,
        )
        return Sent()
