"""Atlassian Statuspage (manage API v1): tell customers, but only about what they feel.

Only the configured severities reach the page, and only once an incident has lasted the
hold-off: the outbox holds every status-page message of an incident until
``opened_at + hold_off`` (a durable "not before" time), and an incident resolved before then
is dropped without a word to customers. One status-page incident per incident: the first
message creates it and the id from the answer is remembered (in the store) for the updates
that follow, which the outbox keeps strictly behind the create.

The component's status follows the severity (P1 major outage, P2 partial outage, P3 degraded
performance) and returns to operational on resolve. Texts come from the runbook's external
template, overridable in the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from receiver.config import StatuspageSettings, StatuspageTemplates
from receiver.notify.delivery import Message, PermanentFailure, Sent, http_call
from receiver.notify.snapshot import IncidentSnapshot
from receiver.redaction import Redactor
from receiver.runbook import Severity

__all__ = ["COMPONENT_STATUS", "IMPACT_OVERRIDE", "StatuspageSender", "incident_update"]

COMPONENT_STATUS: dict[Severity, str] = {
    Severity.P1: "major_outage",
    Severity.P2: "partial_outage",
    Severity.P3: "degraded_performance",
    Severity.P4: "operational",
}
IMPACT_OVERRIDE: dict[Severity, str] = {
    Severity.P1: "critical",
    Severity.P2: "major",
    Severity.P3: "minor",
    Severity.P4: "none",
}
MAX_NAME = 255
MAX_BODY = 25_000
DEFAULT_TEMPLATES = StatuspageTemplates()


def incident_update(
    snapshot: IncidentSnapshot, *, templates: StatuspageTemplates, timestamp: str
) -> dict[str, Any]:
    """The status-page state for the incident as it is now (stored, then sent)."""
    phase = snapshot.phase
    impact = templates.impact.get(snapshot.severity) or DEFAULT_TEMPLATES.impact[snapshot.severity]
    body = getattr(templates, phase).format(impact=impact, timestamp=timestamp)
    return {
        "name": templates.name[:MAX_NAME],
        "status": phase,
        "body": body[:MAX_BODY],
        "impact_override": IMPACT_OVERRIDE[snapshot.severity],
        "component_status": (
            "operational" if phase == "resolved" else COMPONENT_STATUS[snapshot.severity]
        ),
        "opened_at": snapshot.opened_at,
        "resolved_at": snapshot.resolved_at,
    }


class StatuspageSender:
    """Creates the status-page incident on the first message, updates it on the others."""

    destination = "statuspage"

    def __init__(self, settings: StatuspageSettings, *, redactor: Redactor) -> None:
        self._settings = settings
        self._redactor = redactor

    def ready_in(self) -> float:
        return 0.0

    async def send(
        self, session: aiohttp.ClientSession, message: Message, state: Mapping[str, str]
    ) -> Sent:
        s = self._settings
        update = message.payload
        incident: dict[str, Any] = {
            "status": update["status"],
            "body": update["body"],
            "components": {s.component_id: update["component_status"]},
            "component_ids": [s.component_id],
            "deliver_notifications": s.deliver_notifications,
        }
        key = s.api_key.secret.get_secret_value()
        headers = {"Authorization": f"OAuth {key}"}
        base = f"{s.api_base}/pages/{quote(s.page_id, safe='')}/incidents"
        existing = state.get("incident_id")
        if existing is None:
            if update["status"] == "resolved":
                return Sent(skipped="no status-page incident to resolve")
            incident["name"] = update["name"]
            incident["impact_override"] = update["impact_override"]
            answer = await http_call(
                session,
                "POST",
                base,
                service="Statuspage",
                json_body={"incident": incident},
                headers=headers,
                timeout_seconds=s.timeout_seconds,
                ok=(200, 201),
                temporary=(420, 429),
                redactor=self._redactor,
            )
            created = answer.json()
            if not isinstance(created, dict) or not isinstance(created.get("id"), str):
                raise PermanentFailure("Statuspage answered without an incident id")
            return Sent(remember={"incident_id": created["id"]})
        await http_call(
            session,
            "PATCH",
            f"{base}/{quote(existing, safe='')}",
            service="Statuspage",
            json_body={"incident": incident},
            headers=headers,
            timeout_seconds=s.timeout_seconds,
            ok=(200,),
            temporary=(420, 429),
            redactor=self._redactor,
        )
        return Sent()
