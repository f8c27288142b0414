"""PagerDuty Events API v2: page people for an incident, keep the alert current, resolve it.

One alert per incident, keyed by a stable ``dedup_key``: ``trigger`` opens it and, sent again
with the same key, updates it as the incident changes; ``acknowledge`` (optional) marks that
a remediation is in place; ``resolve`` closes it. Every remediation applied or reverted is
also sent as a change event (``/v2/change/enqueue``), so responders see what the service
changed next to the incident. When automatic triage fails before anyone was paged, a minimal
trigger with the same key pages instead (``critical``: the impact is unknown), and the full
triage updates that alert once it succeeds.

Messages are rendered when the notification is stored, without the routing key; the key is
added only when sending, so it is never written to the store or a log.

Alert data is untrusted: the summary shows the title on one line, without control
characters, within PagerDuty's 1,024 characters; a link taken from an alert (its
``generatorURL``, Alertmanager's ``externalURL``) is sent only if it is ``http(s)`` and points
to a host that config allows (by default the configured Prometheus' and Alertmanager's own),
so a ``javascript:`` or look-alike link never reaches a responder. PagerDuty refuses an event
over 512 KB: ``custom_details`` is cut to fit, its largest parts first, with a ``truncated``
note saying so; the summary, the links and the incident's URL are never cut away.

The incident's URL (``client_url``, the links, ``custom_details.incident``) is its page in the
UI, signed and expiring where ``ui.link_key`` is set (:mod:`receiver.links`); a trigger while
an action awaits approval links to that page's actions too, where Approve and Deny are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from receiver.config import PagerDutySettings
from receiver.notify.delivery import Message, Sent, http_call
from receiver.notify.snapshot import IncidentSnapshot, action_summary, iso_utc
from receiver.notify.untrusted import cut, one_line
from receiver.redaction import Redactor
from receiver.runbook import Severity

__all__ = [
    "PD_SEVERITY",
    "PagerDutySender",
    "RateLimit",
    "alert_event",
    "change_event",
    "dedup_key",
    "incident_of",
    "link_hosts",
    "triage_failed_event",
    "update_event",
]

PD_SEVERITY: dict[Severity, str] = {
    Severity.P1: "critical",
    Severity.P2: "error",
    Severity.P3: "warning",
    Severity.P4: "info",
}
MAX_DEDUP_KEY = 255
DEDUP_PREFIX = "posthog-receiver/"
MAX_SUMMARY = 1024
# What a minimal page says when automatic triage failed, and how loud it is.
TRIAGE_FAILED_SUMMARY = "automatic triage failed — follow the runbook by hand"
TRIAGE_FAILED_SEVERITY = "critical"
MAX_ERROR = 500
MAX_EVENT_BYTES = 512 * 1024
# The routing key is added when sending: room for its field name, 32 characters and separators.
ROUTING_KEY_ROOM = 64
# Room kept for the note that says custom_details was cut.
NOTE_ROOM = 512
# A link from an alert longer than this is left out: a cut URL would lead somewhere else.
MAX_ALERT_LINK = 8192
CLIENT = "posthog-incident-receiver"
DEFAULTS = PagerDutySettings.model_fields


def dedup_key(incident_id: str) -> str:
    """The alert's key: the same for every event of one incident.

    The incident id is derived from the alert group's key and its episode start
    (:mod:`receiver.identity`), so this key is too: after the state is lost, a resend of a group
    still firing updates the same PagerDuty alert, and its resolve resolves it.
    """
    return f"{DEDUP_PREFIX}{incident_id}"[:MAX_DEDUP_KEY]


def incident_of(key: str) -> str | None:
    """The incident id a ``dedup_key`` of ours names; ``None`` for a key that is not ours.

    A key cut at 255 characters names a cut id, which matches no incident: such ids do not
    occur (:mod:`receiver.identity` makes them short)."""
    prefix = DEDUP_PREFIX
    if not key.startswith(prefix) or len(key) == len(prefix):
        return None
    return key[len(prefix) :]


def _setting(settings: PagerDutySettings | None, name: str) -> Any:
    return getattr(settings, name) if settings is not None else DEFAULTS[name].default


def _link(href: str | None, text: str) -> list[dict[str, str]]:
    if href and href.startswith(("http://", "https://")):
        return [{"href": href, "text": text}]
    return []


def _approval_links(snapshot: IncidentSnapshot, url: str) -> list[dict[str, str]]:
    """Where to approve or deny each action awaiting a person: the page's actions (action
    names come from config, not alert data; a fragment is not part of a link's signature)."""
    return [
        link
        for name in snapshot.awaiting_approval
        for link in _link(f"{url}#actions", f"Approve or deny: {name}")
    ]


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def link_hosts(
    settings: PagerDutySettings | None, snapshot: IncidentSnapshot, prometheus_urls: Collection[str]
) -> frozenset[str]:
    """The hosts a link taken from this incident's alerts may point to: config's list, or
    else the configured Prometheus' and the incident's Alertmanager's."""
    configured = _setting(settings, "link_hosts")
    if configured is not None:
        return frozenset(configured)
    return frozenset(
        host for url in (*prometheus_urls, snapshot.external_url) if (host := _host(url))
    )


def _alert_link(href: str, text: str, hosts: frozenset[str]) -> list[dict[str, str]]:
    """A link from alert data, only if it is a plain http(s) URL to an allowed host."""
    # A browser reads a backslash as a slash where urlsplit does not: http://evil\@prometheus/
    # goes to evil. Such links, links with user info and malformed ones are left out.
    if not href or len(href) > MAX_ALERT_LINK or one_line(href) != href:
        return []
    if " " in href or "\\" in href:
        return []
    try:
        parts = urlsplit(href)
    except ValueError:
        return []
    if parts.scheme not in ("http", "https") or "@" in parts.netloc:
        return []
    if parts.hostname not in hosts:
        return []
    return [{"href": href, "text": text}]


def _size(value: Any) -> int:
    """Bytes of ``value`` as JSON, encoded as the sender's client encodes it."""
    return len(json.dumps(value).encode())


def _cut_text(text: str, budget: int) -> str:
    """The longest start of ``text``, with an ellipsis, whose JSON fits in ``budget`` bytes."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _size(cut(text, middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    return cut(text, low) if low else ""


def _level(sizes: list[int], room: int) -> int:
    """The largest size ``c`` such that every part cut to ``c`` fits in ``room`` together."""
    left = room
    ordered = sorted(sizes)
    for i, size in enumerate(ordered):
        if size * (len(ordered) - i) > left:
            return left // (len(ordered) - i)
        left -= size
    return ordered[-1] if ordered else room


def _fit(value: Any, budget: int) -> Any:
    """``value`` with its largest parts cut until its JSON takes ``budget`` bytes at most;
    small parts stay whole. Nested objects and arrays are cut inside; when even their keys
    do not fit, they become their JSON text, cut."""
    if _size(value) <= budget:
        return value
    if isinstance(value, str):
        return _cut_text(value, budget)
    if isinstance(value, dict) and value:
        # What the object takes besides its values ("null" is 4 bytes a value).
        room = budget - (_size(dict.fromkeys(value)) - 4 * len(value))
        sizes = [_size(v) for v in value.values()]
        if room >= 8 * len(value):
            cap = _level(sizes, room)
            return {
                k: v if size <= cap else _fit(v, cap)
                for (k, v), size in zip(value.items(), sizes, strict=True)
            }
    if isinstance(value, list) and value:
        room = budget - (_size([None] * len(value)) - 4 * len(value))
        sizes = [_size(v) for v in value]
        if room >= 8 * len(value):
            cap = _level(sizes, room)
            pairs = zip(value, sizes, strict=True)
            return [v if size <= cap else _fit(v, cap) for v, size in pairs]
    return _cut_text(json.dumps(value, ensure_ascii=False), budget)


def _within_limit(event: dict[str, Any], url: str) -> dict[str, Any]:
    """``event`` under PagerDuty's 512 KB, its ``custom_details`` cut if needed (and saying
    so); the incident's URL in them is kept whole."""
    payload = event["payload"]
    details: dict[str, Any] = payload["custom_details"]
    if _size(event) + ROUTING_KEY_ROOM <= MAX_EVENT_BYTES:
        return event
    rest = {k: v for k, v in details.items() if k != "incident"}
    others = _size({**event, "payload": {**payload, "custom_details": {"incident": url}}})
    budget = MAX_EVENT_BYTES - ROUTING_KEY_ROOM - NOTE_ROOM - others
    while True:
        fitted = _fit(rest, max(budget, 2))
        if not isinstance(fitted, dict):
            fitted = {"details": fitted}
        changed = [k for k in rest if fitted.get(k) != rest[k]]
        note = (
            f"custom_details cut to fit PagerDuty's 512 KB event limit, largest parts first "
            f"({', '.join(changed)}); the whole incident is at {url}"
        )
        shown = {**fitted, "incident": url, "truncated": cut(note, NOTE_ROOM // 2)}
        result = {**event, "payload": {**payload, "custom_details": shown}}
        excess = _size(result) + ROUTING_KEY_ROOM - MAX_EVENT_BYTES
        if excess <= 0:
            return result
        if budget <= 2:
            # Nothing left to cut but the note itself: keep the incident's URL.
            shown = {"incident": url, "truncated": "custom_details left out: over 512 KB"}
            return {**event, "payload": {**payload, "custom_details": shown}}
        budget -= excess


def alert_event(
    snapshot: IncidentSnapshot,
    *,
    action: Literal["trigger", "acknowledge", "resolve"],
    settings: PagerDutySettings | None,
    incident_url: str,
    prometheus_urls: Collection[str] = (),
) -> dict[str, Any]:
    """An alert event (without ``routing_key``) for the incident as it is now;
    ``prometheus_urls`` are the configured Prometheus' (their hosts may be linked to)."""
    if action != "trigger":
        return {"event_action": action, "dedup_key": dedup_key(snapshot.id)}
    url = incident_url
    error_class = snapshot.error_class.value if snapshot.error_class else "unknown"
    verdict = snapshot.verdict.value if snapshot.verdict else "pending"
    head = f"[{snapshot.severity}] PostHog integration: "
    tail = f" ({error_class})"
    title = cut(one_line(snapshot.title), MAX_SUMMARY - len(head) - len(tail))
    payload: dict[str, Any] = {
        "summary": head + title + tail,
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
    return _trigger(snapshot, payload, settings=settings, url=url, prometheus_urls=prometheus_urls)


def triage_failed_event(
    snapshot: IncidentSnapshot,
    *,
    error: str,
    settings: PagerDutySettings | None,
    incident_url: str,
    prometheus_urls: Collection[str] = (),
) -> dict[str, Any]:
    """A minimal trigger (without ``routing_key``) for an incident whose automatic triage
    failed: its title, the error, the links, and the incident's own ``dedup_key``, so the
    full triage, when it succeeds later, updates this same alert.

    Severity ``critical``: nothing says how bad the incident is, and a person has to look now;
    PagerDuty pages at high urgency for it whether the service's urgency is fixed or follows
    event severity.
    """
    url = incident_url
    head = "PostHog incident "
    tail = f": {TRIAGE_FAILED_SUMMARY}"
    title = cut(one_line(snapshot.title), MAX_SUMMARY - len(head) - len(tail))
    payload: dict[str, Any] = {
        "summary": head + title + tail,
        "source": _setting(settings, "source"),
        "severity": TRIAGE_FAILED_SEVERITY,
        "timestamp": iso_utc(snapshot.opened_at),
        "custom_details": {
            "status": "automatic triage failed",
            "error": cut(one_line(error), MAX_ERROR),
            "labels": dict(snapshot.labels),
            "incident": url,
        },
    }
    return _trigger(snapshot, payload, settings=settings, url=url, prometheus_urls=prometheus_urls)


def _trigger(
    snapshot: IncidentSnapshot,
    payload: dict[str, Any],
    *,
    settings: PagerDutySettings | None,
    url: str,
    prometheus_urls: Collection[str],
) -> dict[str, Any]:
    """The trigger event around ``payload``: the incident's key, its links, within 512 KB."""
    for name in ("component", "group"):
        if value := _setting(settings, name):
            payload[name] = value
    hosts = link_hosts(settings, snapshot, prometheus_urls)
    links = [
        *_link(_setting(settings, "runbook_url"), "Runbook"),
        *_alert_link(snapshot.generator_url, "Alert source (Prometheus)", hosts),
        *_alert_link(snapshot.external_url, "Alertmanager", hosts),
        *_link(_setting(settings, "dashboard_url"), "Dashboard"),
        *_link(url, "Incident in posthog-receiver"),
        *_approval_links(snapshot, url),
    ]
    event = {
        "event_action": "trigger",
        "dedup_key": dedup_key(snapshot.id),
        "payload": payload,
        "client": CLIENT,
        "client_url": url,
        "links": links,
    }
    return _within_limit(event, url)


def change_event(
    snapshot: IncidentSnapshot,
    action: Mapping[str, Any],
    *,
    settings: PagerDutySettings | None,
    incident_url: str,
    at: float,
) -> dict[str, Any]:
    """A change event (without ``routing_key``) for one remediation applied or reverted."""
    url = incident_url
    summary = one_line(f"{action_summary(action)} — incident {snapshot.id}: {snapshot.title}")
    event = {
        "payload": {
            "summary": cut(summary, MAX_SUMMARY),
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
    return _within_limit(event, url)


def update_event(
    snapshot: IncidentSnapshot,
    *,
    settings: PagerDutySettings | None,
    incident_url: str,
    at: float,
) -> dict[str, Any]:
    """A change event (without ``routing_key``) saying how an acknowledged incident stands
    now: responders see the update next to the incident, and nobody is paged again (a
    ``trigger`` would update the alert, and PagerDuty may notify on it)."""
    url = incident_url
    error_class = snapshot.error_class.value if snapshot.error_class else "unknown"
    summary = one_line(
        f"Update — [{snapshot.severity}] PostHog integration: {snapshot.title} "
        f"({error_class}), {snapshot.phase}"
    )
    event = {
        "payload": {
            "summary": cut(summary, MAX_SUMMARY),
            "source": _setting(settings, "source"),
            "timestamp": iso_utc(at),
            "custom_details": {
                "incident": url,
                "severity": snapshot.severity.value,
                "status": snapshot.phase,
                "class": error_class,
                "decision": snapshot.decision_summary,
            },
        },
        "links": [*_link(url, "Incident in posthog-receiver"), *_approval_links(snapshot, url)],
    }
    return _within_limit(event, url)


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
