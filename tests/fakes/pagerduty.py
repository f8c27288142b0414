"""A fake PagerDuty Events API v2, as strict as the documented contract.

Alert events (``POST /v2/enqueue``) and change events (``POST /v2/change/enqueue``): a
32-character routing key (and the expected one), ``event_action`` in its enum, ``dedup_key``
at most 255 characters and required for acknowledge/resolve, a trigger's ``payload`` with
``summary`` (1..1024), ``source`` and ``severity`` (critical, error, warning, info), typed
optional fields, ``links`` with ``href``; bodies up to 512 KB. Answers 202 as PagerDuty does.

Alerts are kept as PagerDuty keeps them, by ``dedup_key``: a trigger opens an alert unless one
with that key is open (then it is updated); acknowledge and resolve change only an open alert
and are otherwise ignored; a trigger after the resolve opens a new alert.

With ``rate_limit_per_minute``, events (alert and change events alike) beyond that many in any
60 seconds of the fake's clock are answered 429, as PagerDuty throttles an integration key.
"""

from __future__ import annotations

import uuid
from collections import deque
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeService

ACTIONS = {"trigger", "acknowledge", "resolve"}
SEVERITIES = {"critical", "error", "warning", "info"}
ALERT_KEYS = {
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "client",
    "client_url",
    "links",
    "images",
}
PAYLOAD_KEYS = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}
CHANGE_KEYS = {"routing_key", "payload", "links"}
CHANGE_PAYLOAD_KEYS = {"summary", "source", "timestamp", "custom_details"}
MAX_BYTES = 512 * 1024


def _links(value: Any) -> str | None:
    if not isinstance(value, list):
        return "'links' must be an array"
    for link in value:
        if not isinstance(link, dict) or not isinstance(link.get("href"), str):
            return "each link needs an 'href' string"
        if not link["href"].startswith(("http://", "https://")):
            return "link 'href' must be a URL"
        if "text" in link and not isinstance(link["text"], str):
            return "link 'text' must be a string"
    return None


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, str):
        return "'timestamp' must be a string"
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "'timestamp' is not ISO 8601"
    return None


class FakePagerDuty(FakeService):
    def __init__(
        self, routing_key: str, *, rate_limit_per_minute: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.routing_key = routing_key
        self.rate_limit_per_minute = rate_limit_per_minute
        self._accepted_at: deque[float] = deque()  # within the last minute
        self.throttled = 0
        self.app.router.add_post("/v2/enqueue", self._enqueue)
        self.app.router.add_post("/v2/change/enqueue", self._change)
        # Every alert opened, in order: its dedup_key and its status now.
        self.opened: list[tuple[str, str]] = []

    def alert_status(self, dedup_key: str) -> str | None:
        """The status of the newest alert with this key (``None``: never opened)."""
        found = [status for key, status in self.opened if key == dedup_key]
        return found[-1] if found else None

    def _apply(self, action: str, dedup_key: str) -> None:
        current = self.alert_status(dedup_key)
        is_open = current in ("triggered", "acknowledged")
        if action == "trigger" and not is_open:
            self.opened.append((dedup_key, "triggered"))
        elif action != "trigger" and is_open:
            newest = max(i for i, (key, _) in enumerate(self.opened) if key == dedup_key)
            self.opened[newest] = (dedup_key, "resolved" if action == "resolve" else "acknowledged")

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [r.body for r in self.received if r.path == "/v2/enqueue"]

    @property
    def changes(self) -> list[dict[str, Any]]:
        return [r.body for r in self.received if r.path == "/v2/change/enqueue"]

    def _invalid(self, reason: str) -> web.Response:
        return self.reject(
            400,
            reason,
            as_json={
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": [reason],
            },
        )

    async def _common(self, request: web.Request, allowed: set[str]) -> tuple[Any, str | None]:
        # Checked on the bytes too: a chunked body has no Content-Length.
        if (request.content_length or 0) > MAX_BYTES or len(await request.read()) > MAX_BYTES:
            return None, "event larger than 512 KB"
        body, problem = await self.read_json(request)
        if problem:
            return None, problem
        if not isinstance(body, dict):
            return None, "event must be an object"
        if unknown := set(body) - allowed:
            return None, f"unknown fields {sorted(unknown)}"
        key = body.get("routing_key")
        if not isinstance(key, str) or len(key) != 32:
            return None, "'routing_key' must be the 32-character integration key"
        if key != self.routing_key:
            return None, "invalid routing key"
        if "links" in body and (problem := _links(body["links"])):
            return None, problem
        return body, None

    def _throttle(self) -> web.Response | None:
        """A 429 when this event would exceed the rate limit; otherwise counts it."""
        if self.rate_limit_per_minute is None:
            return None
        now = self.clock()
        while self._accepted_at and self._accepted_at[0] <= now - 60:
            self._accepted_at.popleft()
        if len(self._accepted_at) >= self.rate_limit_per_minute:
            self.throttled += 1
            return web.json_response(
                {
                    "status": "throttle event",
                    "message": "Requests for this service are arriving too quickly.",
                },
                status=429,
            )
        self._accepted_at.append(now)
        return None

    async def _enqueue(self, request: web.Request) -> web.Response:
        body, problem = await self._common(request, ALERT_KEYS)
        if problem:
            return self._invalid(problem)
        action = body.get("event_action")
        if action not in ACTIONS:
            return self._invalid("'event_action' must be trigger, acknowledge or resolve")
        key = body.get("dedup_key")
        if key is not None and (not isinstance(key, str) or not key or len(key) > 255):
            return self._invalid("'dedup_key' must be a string of at most 255 characters")
        if action != "trigger" and key is None:
            return self._invalid("'dedup_key' is required to acknowledge or resolve")
        if action == "trigger" and (problem := self._payload(body.get("payload"))):
            return self._invalid(problem)
        for field in ("client", "client_url"):
            if field in body and not isinstance(body[field], str):
                return self._invalid(f"'{field}' must be a string")
        if throttled := self._throttle():
            return throttled
        self.record(request, body)
        key = key or uuid.uuid4().hex
        self._apply(action, key)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status=202
        )

    def _payload(self, payload: Any) -> str | None:
        if not isinstance(payload, dict):
            return "'payload' is required for a trigger"
        if unknown := set(payload) - PAYLOAD_KEYS:
            return f"unknown payload fields {sorted(unknown)}"
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            return "'payload.summary' must be 1 to 1024 characters"
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            return "'payload.source' is required"
        if payload.get("severity") not in SEVERITIES:
            return "'payload.severity' must be critical, error, warning or info"
        for field in ("component", "group", "class"):
            if field in payload and not isinstance(payload[field], str):
                return f"'payload.{field}' must be a string"
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            return "'payload.custom_details' must be an object"
        if "timestamp" in payload and (problem := _timestamp(payload["timestamp"])):
            return problem
        return None

    async def _change(self, request: web.Request) -> web.Response:
        body, problem = await self._common(request, CHANGE_KEYS)
        if problem:
            return self._invalid(problem)
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return self._invalid("'payload' is required")
        if unknown := set(payload) - CHANGE_PAYLOAD_KEYS:
            return self._invalid(f"unknown payload fields {sorted(unknown)}")
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            return self._invalid("'payload.summary' must be 1 to 1024 characters")
        if "source" in payload and not isinstance(payload["source"], str):
            return self._invalid("'payload.source' must be a string")
        if "timestamp" in payload and (problem := _timestamp(payload["timestamp"])):
            return self._invalid(problem)
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            return self._invalid("'payload.custom_details' must be an object")
        if throttled := self._throttle():
            return throttled
        self.record(request, body)
        return web.json_response(
            {"status": "success", "message": "Change event processed"}, status=202
        )
