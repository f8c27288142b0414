"""``POST /webhook/pagerduty``: what people do in PagerDuty, on our incidents' timelines.

PagerDuty webhooks (v3) sign the raw body: ``X-PagerDuty-Signature`` carries one or more
``v1=<hex HMAC-SHA256 of the body with the subscription's secret>``, comma-separated (several
while PagerDuty rotates a secret). Any one that matches any configured secret (several while
we rotate ours) lets the request in; each comparison is constant-time. Anything else is 401,
before the body is parsed. The body is bounded (413) and a signed body that is not a v3
event is 400 (PagerDuty does not redeliver a 4xx).

The envelope is ``{"event": {id, event_type, resource_type, occurred_at, agent, data}}``.
``incident.acknowledged``, ``resolved``, ``reassigned``, ``escalated`` and ``annotated`` are
recorded on the incident they concern, with the person (``agent``). Which incident is ours:
an incident created through the Events API v2 carries the alert's ``dedup_key`` as its
``incident_key``, and ours names our incident (:func:`receiver.notify.pagerduty.dedup_key`).
PagerDuty's incident id is remembered once matched, because an annotation's data names only
the PagerDuty incident (a reference without ``incident_key``). Events about other incidents,
of other types, or about incidents we cannot match are answered 200 and ignored: they are
not ours, and an error would only make PagerDuty retry them.

Each event is recorded once by its id, in the same transaction as its effect: a redelivery
changes nothing. The first acknowledgement is the incident's time to acknowledge
(:mod:`receiver.response_times`), and it stops re-paging (:class:`receiver.notify.Notifier`).
Agent names and notes are data from PagerDuty users: kept on one line and bounded.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from receiver.api import error
from receiver.config import PagerDutyWebhookSettings
from receiver.keys import METRICS, SETTINGS, STORE
from receiver.notify.pagerduty import incident_of
from receiver.notify.untrusted import cut, one_line
from receiver.store import StoreUnavailable
from receiver.store.incidents import PagerDutyNews, record_pagerduty_news

__all__ = [
    "RECORDED_TYPES",
    "SIGNATURE_HEADER",
    "PagerDutyEvent",
    "news_of",
    "receive_pagerduty",
    "signature_valid",
]

logger = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-PagerDuty-Signature"
# PagerDuty lists one signature per active secret; more than this is not PagerDuty.
MAX_SIGNATURES = 8
# What happened, in the words a timeline reads.
RECORDED_TYPES: dict[str, str] = {
    "incident.acknowledged": "acknowledged",
    "incident.resolved": "resolved",
    "incident.reassigned": "reassigned",
    "incident.escalated": "escalated",
    "incident.annotated": "annotated",
}
DEFAULT_MAX_BODY: int = PagerDutyWebhookSettings.model_fields["max_body_bytes"].default
MAX_NAME = 200
MAX_NOTE = 1000
MAX_ID = 256


def signature_valid(header: str | None, body: bytes, secrets: Sequence[bytes]) -> bool:
    """Whether ``header`` holds a ``v1=`` signature of ``body`` by one of ``secrets``.

    Every listed signature is compared with every secret's, each in constant time, so the
    time taken does not tell which one matched or how much of one did.
    """
    if not header or not secrets:
        return False
    given = [
        part.strip()[3:].lower()
        for part in header.split(",", MAX_SIGNATURES)[:MAX_SIGNATURES]
        if part.strip().startswith("v1=")
    ]
    expected = [hmac.new(secret, body, hashlib.sha256).hexdigest() for secret in secrets]
    ok = False
    for signature in given:
        raw = signature.encode("utf-8", "surrogateescape")
        for digest in expected:
            ok |= hmac.compare_digest(raw, digest.encode())
    return ok


class _Reference(BaseModel):
    """A PagerDuty object reference (a user, a service, an incident)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_ID)
    summary: str | None = None
    html_url: str | None = None


class _Incident(_Reference):
    """The incident an event is about (``event.data`` of incident events)."""

    incident_key: str | None = None
    assignees: list[_Reference] = []


class _Note(BaseModel):
    """``event.data`` of ``incident.annotated``: the note and a reference to its incident."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    incident: _Reference
    content: str = ""


class PagerDutyEvent(BaseModel):
    """One v3 webhook event (the envelope's ``event``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_ID)
    event_type: str = Field(min_length=1, max_length=MAX_ID)
    resource_type: str = Field(min_length=1, max_length=MAX_ID)
    occurred_at: AwareDatetime
    agent: _Reference | None = None
    data: dict[str, Any]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event: PagerDutyEvent


def _person(ref: _Reference | None) -> str | None:
    if ref is None:
        return None
    return cut(one_line(ref.summary or ref.id), MAX_NAME) or None


def news_of(event: PagerDutyEvent) -> PagerDutyNews | None:
    """The event as our timeline records it; ``None`` for an event we do not record (another
    type or resource). Raises :class:`ValidationError` when its data is not what its type
    carries."""
    what = RECORDED_TYPES.get(event.event_type)
    if what is None or event.resource_type != "incident":
        return None
    agent = _person(event.agent)
    by = f" by {agent}" if agent else ""
    data: dict[str, Any] = {}
    if event.event_type == "incident.annotated":
        note = _Note.model_validate(event.data)
        pagerduty = note.incident
        incident_id = None  # a reference carries no incident_key: found by the PagerDuty id
        text = cut(one_line(note.content), MAX_NOTE)
        message = f"note added in PagerDuty{by}: {text}"
        data["note"] = text
    else:
        incident = _Incident.model_validate(event.data)
        pagerduty = incident
        incident_id = incident_of(incident.incident_key) if incident.incident_key else None
        message = f"{what} in PagerDuty{by}"
        assignees = [name for a in incident.assignees if (name := _person(a))]
        if event.event_type in ("incident.reassigned", "incident.escalated") and assignees:
            message += f", now assigned to {', '.join(assignees)}"
            data["assignees"] = assignees
        if event.event_type == "incident.resolved":
            message += " (this incident resolves when its alerts do)"
    if pagerduty.html_url and pagerduty.html_url.startswith("https://"):
        data["pagerduty_url"] = cut(pagerduty.html_url, 2048)
    return PagerDutyNews(
        event_id=event.id,
        event_type=event.event_type,
        occurred_at=event.occurred_at.timestamp(),
        agent=agent,
        pagerduty_id=pagerduty.id,
        incident_id=incident_id,
        message=message,
        data=data,
    )


async def _bounded_body(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or ``None`` if it is longer than ``limit`` (read no further)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: str) -> web.Response:
    return web.json_response({"status": status})


def _secrets(settings: PagerDutyWebhookSettings | None) -> list[bytes]:
    if settings is None:
        return []
    return [s.secret.get_secret_value().encode() for s in settings.secrets]


async def receive_pagerduty(request: web.Request) -> web.Response:
    """Verify, parse and record one PagerDuty webhook event."""
    app = request.app
    counted = app[METRICS].pagerduty_webhooks
    pagerduty = app[SETTINGS].notify.pagerduty
    hook = pagerduty.webhook if pagerduty is not None else None
    limit = hook.max_body_bytes if hook is not None else DEFAULT_MAX_BODY
    try:
        body = await _bounded_body(request, limit)
    except web.HTTPRequestEntityTooLarge:  # past the server's own limit
        body = None
    if body is None:
        counted.labels("too_large").inc()
        return web.json_response({"error": f"body larger than {limit} bytes"}, status=413)
    if not signature_valid(request.headers.get(SIGNATURE_HEADER), body, _secrets(hook)):
        counted.labels("unauthorized").inc()
        raise error(web.HTTPUnauthorized, "missing or wrong PagerDuty signature")
    try:
        event = _Envelope.model_validate_json(body).event
        news = news_of(event)
    except ValidationError as e:
        counted.labels("bad_request").inc()
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = (
            "malformed JSON" if first["type"] == "json_invalid" else f"{where}: {first['msg']}"
        )
        raise error(web.HTTPBadRequest, f"not a PagerDuty v3 webhook event: {message}") from None
    if news is None:
        counted.labels("ignored").inc()
        return _answer("ignored")
    try:
        recorded = await app[STORE].write(functools.partial(record_pagerduty_news, news=news))
    except StoreUnavailable:
        counted.labels("unavailable").inc()
        raise error(web.HTTPServiceUnavailable, "store unavailable") from None
    if recorded.incident_id is None:
        counted.labels("ignored").inc()
        return _answer("ignored")
    if recorded.repeat:
        counted.labels("duplicate").inc()
        return _answer("duplicate")
    counted.labels("recorded").inc()
    app[METRICS].observe_acknowledgement(recorded.acknowledgement)
    logger.info(
        "pagerduty event recorded",
        incident_id=recorded.incident_id,
        event_type=news.event_type,
        event_id=news.event_id,
    )
    return _answer("recorded")
