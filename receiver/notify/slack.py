"""Slack incoming webhook: the runbook's internal incident message, kept current.

Posted when an incident opens, on each remediation action and when it resolves, in the
runbook's own shape (severity, status, impact, current action, next update, incident
commander). The webhook URL is the credential: it comes from a secret and never appears in
logs or errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from receiver.config import SlackSettings
from receiver.notify.delivery import Message, Sent, http_call
from receiver.notify.snapshot import IMPACT, IncidentSnapshot, action_summary
from receiver.redaction import Redactor
from receiver.runbook import Severity

__all__ = ["SlackSender", "incident_message"]

MARK: dict[Severity, str] = {
    Severity.P1: "🔴",
    Severity.P2: "🟠",
    Severity.P3: "🟡",
    Severity.P4: "🔵",
}
MAX_TEXT = 40_000  # Slack truncates longer messages
DEFAULTS = SlackSettings.model_fields


def incident_message(
    snapshot: IncidentSnapshot,
    *,
    settings: SlackSettings | None,
    at: float,
    incident_url: str,
    current_action: str | None = None,
) -> dict[str, Any]:
    """The internal message for the incident as it is now."""
    commander = settings.incident_commander if settings else DEFAULTS["incident_commander"].default
    minutes = settings.next_update_minutes if settings else DEFAULTS["next_update_minutes"].default
    resolved = snapshot.status == "resolved"
    mark = "✅" if resolved else MARK[snapshot.severity]
    if current_action is None:
        if snapshot.actions:
            current_action = action_summary(snapshot.actions[-1])
        else:
            current_action = snapshot.decision_summary or "Triage in progress"
    next_update = (
        "none (resolved)"
        if resolved
        else datetime.fromtimestamp(at + minutes * 60, UTC).strftime("%H:%M UTC")
    )
    lines = [
        f"{mark} {snapshot.severity} INCIDENT: PostHog Integration",
        f"Status: {snapshot.phase.upper()}",
        f"Impact: {IMPACT[snapshot.severity]}",
        f"Current action: {current_action}",
        f"Next update: {next_update}",
        f"Incident commander: @{commander.lstrip('@')}",
        f"Incident: {snapshot.title} <{incident_url}>",
    ]
    return {"text": "\n".join(lines)[:MAX_TEXT]}


class SlackSender:
    """Posts messages to the configured incoming webhook."""

    destination = "slack"

    def __init__(self, settings: SlackSettings, *, redactor: Redactor) -> None:
        self._settings = settings
        self._redactor = redactor

    def ready_in(self) -> float:
        return 0.0

    async def send(
        self, session: aiohttp.ClientSession, message: Message, state: Mapping[str, str]
    ) -> Sent:
        url = self._settings.webhook_url.secret.get_secret_value()
        await http_call(
            session,
            "POST",
            url,
            service="Slack",
            json_body=message.payload,
            timeout_seconds=self._settings.timeout_seconds,
            ok=(200,),
            redactor=self._redactor,
        )
        return Sent()
