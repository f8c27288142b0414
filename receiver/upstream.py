"""PostHog's own status page: step 1 of the runbook's decision tree.

"Is status.posthog.com showing an incident?" decides between waiting for PostHog (and never
restarting our pods for their outage) and looking at ourselves. The page is read in the
Statuspage format that status.posthog.com serves: ``/api/v2/status.json`` (the overall
indicator) or ``/api/v2/summary.json`` (the indicator plus unresolved incidents and component
states). Whatever cannot be read (unreachable, timeout, non-2xx, malformed JSON, an indicator
we do not know) is ``unknown`` with the reason, never "healthy": silence from the status page
is not evidence that PostHog is fine.

Answers, failures included, are cached for a short TTL, and concurrent callers share one
request, so a burst of alerts costs the status page one GET.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp

from receiver.config import UpstreamStatusSettings
from receiver.httpjson import fetch_json, shown_url
from receiver.wording import quoted

__all__ = ["Indicator", "UpstreamIncident", "UpstreamReader", "UpstreamStatus"]


class Indicator(StrEnum):
    """The status page's overall indicator, plus ``unknown`` for "could not tell"."""

    NONE = "none"  # all systems operational
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"
    MAINTENANCE = "maintenance"  # scheduled maintenance in progress (some Statuspage pages)
    UNKNOWN = "unknown"


# Evidence is stored with the incident: a page listing dozens of items is cut short.
MAX_LISTED = 10
# Resolved incidents and finished maintenance no longer explain errors.
_INACTIVE = {"resolved", "postmortem", "completed", "scheduled"}
_OPERATIONAL = "operational"


@dataclass(frozen=True)
class UpstreamIncident:
    """An unresolved incident listed by summary.json."""

    name: str
    status: str
    impact: str
    shortlink: str | None = None
    started_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "impact": self.impact,
            "shortlink": self.shortlink,
            "started_at": self.started_at,
        }


@dataclass(frozen=True)
class UpstreamStatus:
    """What the status page said, or why it could not be read (``error``)."""

    indicator: Indicator
    description: str
    fetched_at: datetime
    url: str
    incidents: tuple[UpstreamIncident, ...] = ()
    degraded_components: tuple[str, ...] = ()
    error: str | None = None

    @property
    def has_incident(self) -> bool | None:
        """True: PostHog reports trouble; False: all operational; None: cannot tell."""
        if self.indicator is Indicator.UNKNOWN:
            return None
        return self.indicator is not Indicator.NONE

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "indicator": self.indicator.value,
            "description": self.description,
            "incidents": [i.as_dict() for i in self.incidents],
            "degraded_components": list(self.degraded_components),
            "fetched_at": self.fetched_at.isoformat(),
            "error": self.error,
        }


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _incidents(body: dict[str, Any]) -> tuple[UpstreamIncident, ...]:
    found = []
    for key in ("incidents", "scheduled_maintenances"):
        items = body.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, dict):
                continue
            status = _text(item.get("status"), "unknown")
            if status in _INACTIVE:
                continue
            found.append(
                UpstreamIncident(
                    name=_text(item.get("name"), "(unnamed)")[:200],
                    status=status,
                    impact=_text(item.get("impact"), "unknown"),
                    shortlink=_text(item.get("shortlink")) or None,
                    started_at=_text(item.get("started_at") or item.get("created_at")) or None,
                )
            )
    return tuple(found[:MAX_LISTED])


def _degraded(body: dict[str, Any]) -> tuple[str, ...]:
    items = body.get("components")
    if not isinstance(items, list):
        return ()
    return tuple(
        f"{_text(c.get('name'), '(unnamed)')[:80]}: {_text(c.get('status'), 'unknown')[:40]}"
        for c in items
        if isinstance(c, dict) and c.get("status") != _OPERATIONAL and not c.get("group")
    )[:MAX_LISTED]


def parse_status(body: Any, *, url: str, fetched_at: datetime) -> UpstreamStatus:
    """Read a Statuspage status.json or summary.json document."""
    shown = shown_url(url)

    def unknown(reason: str, description: str = "") -> UpstreamStatus:
        return UpstreamStatus(Indicator.UNKNOWN, description, fetched_at, shown, error=reason)

    if not isinstance(body, dict):
        return unknown("malformed: the document is not a JSON object")
    status = body.get("status")
    if not isinstance(status, dict) or "indicator" not in status:
        return unknown("malformed: no status.indicator")
    raw = status.get("indicator")
    description = _text(status.get("description"))[:200]
    try:
        indicator = Indicator(raw) if isinstance(raw, str) else None
    except ValueError:
        indicator = None
    if indicator is None or indicator is Indicator.UNKNOWN:
        return unknown(f"unknown indicator {quoted(str(raw)[:40])}", description)
    return UpstreamStatus(
        indicator,
        description,
        fetched_at,
        shown,
        incidents=_incidents(body),
        degraded_components=_degraded(body),
    )


@dataclass
class _Cached:
    status: UpstreamStatus
    expires: float


@dataclass
class UpstreamReader:
    """Reads the status page, cached for ``settings.cache_ttl_seconds``.

    Pass a ``session`` to share one; otherwise the reader opens its own and ``close()`` ends it.
    ``clock`` (monotonic seconds) and ``wall_clock`` are there so tests can control time.
    """

    settings: UpstreamStatusSettings
    session: aiohttp.ClientSession | None = None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _cached: _Cached | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _own_session: bool = field(default=False, init=False)

    async def status(self) -> UpstreamStatus:
        """PostHog's current status, from cache if fresh."""
        async with self._lock:
            if self._cached is not None and self.clock() < self._cached.expires:
                return self._cached.status
            status = await self._fetch()
            self._cached = _Cached(status, self.clock() + self.settings.cache_ttl_seconds)
            return status

    async def _fetch(self) -> UpstreamStatus:
        if self.session is None:
            self.session = aiohttp.ClientSession()
            self._own_session = True
        got = await fetch_json(
            self.session,
            self.settings.url,
            timeout_seconds=self.settings.timeout_seconds,
            max_body_bytes=self.settings.max_body_bytes,
        )
        fetched_at = self.wall_clock()
        if got.failure is not None:
            return UpstreamStatus(
                Indicator.UNKNOWN,
                "",
                fetched_at,
                shown_url(self.settings.url),
                error=f"{got.failure}: {got.reason}",
            )
        return parse_status(got.body, url=self.settings.url, fetched_at=fetched_at)

    async def close(self) -> None:
        if self._own_session and self.session is not None:
            await self.session.close()
            self.session = None
            self._own_session = False
