"""Our integration's health endpoint: the runbook's "Is our service healthy?".

The runbook reads it as ``curl -sf https://api.yourapp.com/health | jq '.services.posthog.status'
|| echo "UNHEALTHY"``: the URL and the dotted path are configuration here. Following that
one-liner, a service that does not answer (refused, DNS, timeout) or answers 5xx is
*unhealthy*. An answer that cannot be read as configured (4xx, not JSON, the path missing or
pointing at an object) is *unknown*: it says more about our configuration than about the
service. Without a URL the step is *not configured*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp

from receiver.config import HealthCheckSettings
from receiver.httpjson import fetch_json, shown_url
from receiver.wording import quoted

__all__ = ["HealthReader", "HealthState", "HealthStatus", "value_at"]

VALUE_CHARS = 100


class HealthState(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"
    NOT_CONFIGURED = "not_configured"


@dataclass(frozen=True)
class HealthStatus:
    """What the health endpoint said about PostHog, or why it could not be told."""

    state: HealthState
    fetched_at: datetime
    url: str | None = None
    path: str = ""
    value: str | None = None
    http_status: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "url": self.url,
            "path": self.path,
            "value": self.value,
            "http_status": self.http_status,
            "reason": self.reason,
            "fetched_at": self.fetched_at.isoformat(),
        }


_MISSING = object()


def value_at(document: Any, path: str) -> Any:
    """The value at a dotted path (``services.posthog.status``; numbers index lists), or a
    private sentinel when any part is missing."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)[:VALUE_CHARS]
    return None


@dataclass
class HealthReader:
    """Asks the configured health URL; not cached (it is our own service, and cheap)."""

    settings: HealthCheckSettings
    session: aiohttp.ClientSession | None = None
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _own_session: bool = field(default=False, init=False)

    async def check(self) -> HealthStatus:
        """The health of PostHog as our service sees it."""
        path = self.settings.path
        url = self.settings.url
        if url is None:
            return HealthStatus(
                HealthState.NOT_CONFIGURED, self.wall_clock(), path=path, reason="no health URL"
            )
        if self.session is None:
            self.session = aiohttp.ClientSession()
            self._own_session = True
        got = await fetch_json(self.session, url, timeout_seconds=self.settings.timeout_seconds)
        shown = shown_url(url)

        def status(
            state: HealthState, reason: str | None, value: str | None = None
        ) -> HealthStatus:
            return HealthStatus(
                state, self.wall_clock(), shown, path, value, got.http_status, reason
            )

        if got.failure in {"unreachable", "timeout"}:
            return status(HealthState.UNHEALTHY, f"{got.failure}: {got.reason}")
        server_error = got.http_status is not None and got.http_status >= 500
        if got.failure == "http_status" and not server_error:
            return status(HealthState.UNKNOWN, f"{got.reason}: check the health URL")
        found = value_at(got.body, path) if got.body is not None else _MISSING
        value = None if found is _MISSING else _scalar(found)
        if server_error:
            # A 5xx is unhealthy whatever the body says; the value is kept as evidence.
            return status(HealthState.UNHEALTHY, got.reason, value)
        if got.failure is not None:
            return status(HealthState.UNKNOWN, f"{got.failure}: {got.reason}")
        if found is _MISSING:
            return status(HealthState.UNKNOWN, f"no value at '{path}'")
        if value is None:
            return status(HealthState.UNKNOWN, f"'{path}' is not a single value")
        healthy = value.strip().lower() in {v.strip().lower() for v in self.settings.healthy_values}
        if healthy:
            return status(HealthState.HEALTHY, None, value)
        return status(HealthState.UNHEALTHY, f"'{path}' is {quoted(value)}", value)

    async def close(self) -> None:
        if self._own_session and self.session is not None:
            await self.session.close()
            self.session = None
            self._own_session = False
