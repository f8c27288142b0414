"""A fake PagerDuty webhook sender (v3), signing and shaping events as PagerDuty does.

Each delivery is one JSON envelope ``{"event": {...}}`` with ``id``, ``event_type``,
``resource_type``, ``occurred_at`` (ISO 8601 with milliseconds and ``Z``), ``agent`` (a
``user_reference``, or null for PagerDuty itself), ``client`` and ``data``: for incident
events the incident (``id``, ``type``, ``self``, ``html_url``, ``number``, ``status``,
``incident_key``, ``title``, ``service``, ``assignees``, ...), for ``incident.annotated`` an
``incident_note`` with ``content`` and a reference to its incident (no ``incident_key``).
The body is signed with every active secret of the subscription: ``X-PagerDuty-Signature:
v1=<hex HMAC-SHA256 of the raw body>``, one per secret, comma-separated, as PagerDuty does
while a secret rotates. PagerDuty sends ``Content-Type: application/json`` and a
``User-Agent: PagerDuty-Webhook/V3.0``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Delivery", "PagerDutyWebhooks", "signature"]

STATUS = {
    "incident.triggered": "triggered",
    "incident.acknowledged": "acknowledged",
    "incident.resolved": "resolved",
    "incident.reassigned": "triggered",
    "incident.escalated": "triggered",
}


def signature(secret: str, body: bytes) -> str:
    """One ``v1=`` signature of ``body`` with ``secret``."""
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _user(name: str, user_id: str = "PXPGF42") -> dict[str, Any]:
    return {
        "html_url": f"https://acme.pagerduty.com/users/{user_id}",
        "id": user_id,
        "self": f"https://api.pagerduty.com/users/{user_id}",
        "summary": name,
        "type": "user_reference",
    }


@dataclass(frozen=True)
class Delivery:
    """One webhook request: its raw body and its headers."""

    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)["event"]
        return event


@dataclass
class PagerDutyWebhooks:
    """Builds signed deliveries of one subscription (its active ``secrets``)."""

    secrets: list[str]
    pagerduty_id: str = "Q1ABCDEF2GH3IJ"
    sent: list[Delivery] = field(default_factory=list)

    def incident(self, incident_key: str | None, status: str) -> dict[str, Any]:
        pid = self.pagerduty_id
        return {
            "html_url": f"https://acme.pagerduty.com/incidents/{pid}",
            "id": pid,
            "self": f"https://api.pagerduty.com/incidents/{pid}",
            "number": 1234,
            "status": status,
            "incident_key": incident_key,
            "created_at": "2026-01-05T10:00:00Z",
            "title": "[P1] PostHog integration: PostHogErrors (upstream_error)",
            "service": {
                "html_url": "https://acme.pagerduty.com/services/PF9KMXH",
                "id": "PF9KMXH",
                "self": "https://api.pagerduty.com/services/PF9KMXH",
                "summary": "PostHog integration",
                "type": "service_reference",
            },
            "assignees": [_user("Jane Doe")],
            "escalation_policy": {"id": "PBZUP2B", "type": "escalation_policy_reference"},
            "teams": [],
            "priority": None,
            "urgency": "high",
            "conference_bridge": None,
            "resolve_reason": None,
            "type": "incident",
        }

    def deliver(
        self,
        event_type: str,
        *,
        at: float,
        incident_key: str | None,
        agent: str | None = "Jane Doe",
        event_id: str | None = None,
        note: str = "",
        assignee: str | None = None,
    ) -> Delivery:
        """A signed delivery of one event (``at``: when it happened, epoch seconds)."""
        if event_type == "incident.annotated":
            pid = self.pagerduty_id
            data: dict[str, Any] = {
                "incident": {
                    "html_url": f"https://acme.pagerduty.com/incidents/{pid}",
                    "id": pid,
                    "self": f"https://api.pagerduty.com/incidents/{pid}",
                    "type": "incident_reference",
                },
                "id": "P7EM5NM",
                "content": note,
                "trimmed": False,
                "type": "incident_note",
            }
        else:
            data = self.incident(incident_key, STATUS.get(event_type, "triggered"))
            if assignee is not None:
                data["assignees"] = [_user(assignee, "PA551GN")]
        envelope = {
            "event": {
                "id": event_id or uuid.uuid4().hex[:26].upper(),
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": _iso(at),
                "agent": _user(agent) if agent is not None else None,
                "client": None,
                "data": data,
            }
        }
        body = json.dumps(envelope).encode()
        return self.signed(body)

    def signed(self, body: bytes) -> Delivery:
        """``body`` with the headers PagerDuty sends, signed with every active secret."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "PagerDuty-Webhook/V3.0",
            "X-Webhook-Id": uuid.uuid4().hex,
            "X-Webhook-Subscription": "PY1OQ9E",
            "X-PagerDuty-Signature": ",".join(signature(s, body) for s in self.secrets),
        }
        delivery = Delivery(body, headers)
        self.sent.append(delivery)
        return delivery
