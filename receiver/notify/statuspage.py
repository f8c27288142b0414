"""Atlassian Statuspage (manage API v1): tell customers, once, about what they feel.

Only the configured severities reach the page, and only once an incident has lasted the
hold-off: the outbox holds every status-page message of an incident until
``opened_at + hold_off`` (a durable "not before" time), and an incident resolved before then
is dropped without a word to customers.

Customers see one status-page incident for the PostHog integration (per page and component),
not one per incident of ours: every incident's messages share one outbox queue, and each
message is news of one incident that :mod:`receiver.notify.public_incident` folds into the one
public story. The first news that counts opens the status-page incident (created with our key
in its ``metadata``), later news updates it only when what customers see changes (the highest
severity raises impact and component status), and it resolves when the last qualifying
incident resolves. If the memory of it is lost (an empty state directory), the next news finds
it again among the page's unresolved incidents by that key instead of opening a second one.

Texts come from the runbook's external template, overridable in the configuration; nothing
from an alert's labels reaches them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import aiohttp

from receiver.config import StatuspageSettings, StatuspageTemplates
from receiver.notify.delivery import (
    Answer,
    Message,
    PermanentFailure,
    Sent,
    TemporaryFailure,
    http_call,
)
from receiver.notify.public_incident import (
    COMPONENT_STATUS,
    IMPACT_OVERRIDE,
    METADATA_NAMESPACE,
    PHASES,
    Contribution,
    Phase,
    PublicIncident,
    Told,
    changes,
    story_key,
)
from receiver.notify.snapshot import IncidentSnapshot
from receiver.redaction import Redactor
from receiver.runbook import Severity

__all__ = [
    "COMPONENT_STATUS",
    "IMPACT_OVERRIDE",
    "StatuspageSender",
    "incident_update",
    "story_scope",
]

MAX_NAME = 255
MAX_BODY = 25_000
# Statuspage lists at most 100 incidents a page; more unresolved ones than this are not ours
# to search through.
PER_PAGE = 100
MAX_PAGES = 5
DEFAULT_TEMPLATES = StatuspageTemplates()
TEMPORARY = (420, 429)  # Statuspage's rate limit answers 420 as well as 429


def story_scope(settings: StatuspageSettings) -> str:
    """The outbox scope every status-page message shares: one queue, one memory."""
    return "public:" + story_key(settings.component_id)


def render(
    templates: StatuspageTemplates, *, phase: Phase, severity: Severity, timestamp: str
) -> str:
    """The customer-facing text for a phase, with the impact text of a severity."""
    impact = templates.impact.get(severity) or DEFAULT_TEMPLATES.impact[severity]
    body: str = getattr(templates, phase).format(impact=impact, timestamp=timestamp)
    return body[:MAX_BODY]


def incident_update(
    snapshot: IncidentSnapshot, *, templates: StatuspageTemplates, timestamp: str
) -> dict[str, Any]:
    """One incident's news for the status page, as stored (and shown by the log destination
    when Statuspage is not configured)."""
    phase = snapshot.phase
    return {
        "name": templates.name[:MAX_NAME],
        "status": phase,
        "severity": snapshot.severity.value,
        "body": render(templates, phase=phase, severity=snapshot.severity, timestamp=timestamp),
        "impact_override": IMPACT_OVERRIDE[snapshot.severity],
        "component_status": (
            "operational" if phase == "resolved" else COMPONENT_STATUS[snapshot.severity]
        ),
        "opened_at": snapshot.opened_at,
        "resolved_at": snapshot.resolved_at,
    }


def _news(message: Message) -> Contribution:
    payload = message.payload
    status = payload.get("status")
    if status not in PHASES:
        raise PermanentFailure("a status-page message without a valid status")
    severity = str(payload.get("severity") or "")
    if not severity:  # stored by an earlier version: its impact names the severity
        by_impact = {impact: s.value for s, impact in IMPACT_OVERRIDE.items()}
        severity = by_impact.get(str(payload.get("impact_override")), "")
    if severity not in Severity.__members__:
        raise PermanentFailure("a status-page message without a valid severity")
    return Contribution(Severity(severity), cast(Phase, status), message.id)


class StatuspageSender:
    """Keeps the one status-page incident in step with the news of every incident."""

    destination = "statuspage"

    def __init__(
        self,
        settings: StatuspageSettings,
        *,
        redactor: Redactor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._redactor = redactor
        self._clock = clock
        self._key = story_key(settings.component_id)

    def ready_in(self) -> float:
        return 0.0

    async def send(
        self, session: aiohttp.ClientSession, message: Message, state: Mapping[str, str]
    ) -> Sent:
        before = PublicIncident.from_state(state)
        story = before.with_news(message.incident_id, _news(message))
        if story is None:
            return Sent(skipped="older than what the status page has for this incident")
        api = _Api(session, self._settings, self._redactor)
        severities = self._settings.severities
        shown_impact = before.shown.impact if before.shown is not None else None
        told = story.telling(severities, shown_impact=shown_impact)
        if story.statuspage_id is not None:
            if told == before.shown:
                return self._sent(state, story, story.statuspage_id, told, "customers see this")
            if await api.update(story.statuspage_id, self._incident(told, create=False)):
                return self._sent(state, story, story.statuspage_id, told)
            # Deleted on the page by someone: the story is told afresh.
            story = dataclasses.replace(story, statuspage_id=None, shown=None)
        if told.status == "resolved":
            return Sent(remember=changes(state, {}), skipped="nothing on the status page to change")
        found = await api.find_unresolved(self._key)
        if found is None:
            told = story.telling(severities, shown_impact=None)
            return self._sent(
                state, story, await api.create(self._incident(told, create=True)), told
            )
        statuspage_id, shown_impact = found
        told = story.telling(severities, shown_impact=shown_impact)
        if not await api.update(statuspage_id, self._incident(told, create=False)):
            raise TemporaryFailure("Statuspage no longer has the incident it listed")
        return self._sent(state, story, statuspage_id, told)

    @staticmethod
    def _sent(
        state: Mapping[str, str],
        story: PublicIncident,
        statuspage_id: str,
        told: Told,
        skipped: str | None = None,
    ) -> Sent:
        after = story.state(statuspage_id=statuspage_id, shown=told)
        return Sent(remember=changes(state, after), skipped=skipped)

    def _incident(self, told: Told, *, create: bool) -> dict[str, Any]:
        s = self._settings
        timestamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d %H:%M UTC")
        incident: dict[str, Any] = {
            "status": told.status,
            "body": render(
                s.templates, phase=told.status, severity=told.severity, timestamp=timestamp
            ),
            "components": {s.component_id: told.component_status},
            "component_ids": [s.component_id],
            "deliver_notifications": s.deliver_notifications,
        }
        if told.status != "resolved":
            incident["impact_override"] = told.impact
        if create:
            incident["name"] = s.templates.name[:MAX_NAME]
            incident["metadata"] = {METADATA_NAMESPACE: {"key": self._key}}
        return incident


class _Api:
    """The three calls the public incident needs, with the key and its redaction."""

    def __init__(
        self, session: aiohttp.ClientSession, settings: StatuspageSettings, redactor: Redactor
    ) -> None:
        self._session = session
        self._settings = settings
        self._redactor = redactor
        self._secret = settings.api_key.secret.get_secret_value()
        self._base = f"{settings.api_base}/pages/{quote(settings.page_id, safe='')}/incidents"

    async def _call(
        self, method: str, url: str, body: dict[str, Any] | None, ok: tuple[int, ...]
    ) -> Answer:
        return await http_call(
            self._session,
            method,
            url,
            service="Statuspage",
            json_body=body,
            headers={"Authorization": f"OAuth {self._secret}"},
            timeout_seconds=self._settings.timeout_seconds,
            ok=ok,
            temporary=TEMPORARY,
            redactor=self._redactor,
        )

    async def find_unresolved(self, key: str) -> tuple[str, str] | None:
        """The oldest unresolved incident of the page carrying our key, with its impact."""
        matches: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            answer = await self._call(
                "GET", f"{self._base}/unresolved?page={page}&per_page={PER_PAGE}", None, (200,)
            )
            listed = answer.json()
            if not isinstance(listed, list):
                raise PermanentFailure("Statuspage listed unresolved incidents as no list")
            for incident in listed:
                if not isinstance(incident, dict) or not isinstance(incident.get("id"), str):
                    continue
                metadata = incident.get("metadata")
                ours = metadata.get(METADATA_NAMESPACE) if isinstance(metadata, dict) else None
                if isinstance(ours, dict) and ours.get("key") == key:
                    matches.append(incident)
            if len(listed) < PER_PAGE:
                break
        if not matches:
            return None
        oldest = min(matches, key=lambda i: str(i.get("created_at") or ""))
        return oldest["id"], str(oldest.get("impact") or "none")

    async def create(self, incident: dict[str, Any]) -> str:
        answer = await self._call("POST", self._base, {"incident": incident}, (200, 201))
        created = answer.json()
        if not isinstance(created, dict) or not isinstance(created.get("id"), str):
            raise PermanentFailure("Statuspage answered without an incident id")
        return str(created["id"])

    async def update(self, statuspage_id: str, incident: dict[str, Any]) -> bool:
        """Whether the incident was there to update (someone may have deleted it)."""
        url = f"{self._base}/{quote(statuspage_id, safe='')}"
        answer = await self._call("PATCH", url, {"incident": incident}, (200, 404))
        return answer.status == 200
