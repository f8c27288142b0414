"""Builders for realistic Alertmanager notifications and receiver settings, shared by tests.

Payloads look like what Alertmanager 0.25 really posts (version 4, the whole group on every
notification, ``endsAt`` at the zero time while an alert fires), so tests exercise the same
parsing and deduplication as production.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import ClientResponse

from receiver.config import Settings

__all__ = [
    "BASIC_PASSWORD",
    "BASIC_USER",
    "ROUTING_KEY",
    "TOKEN",
    "ZERO_TIME",
    "alert",
    "basic",
    "bearer",
    "json_error",
    "make_settings",
    "notification",
    "wait_until",
]

T = TypeVar("T")

TOKEN = "test-webhook-token-5f1c9a"
BASIC_USER = "alertmanager"
BASIC_PASSWORD = "test-basic-password-77e0"
ZERO_TIME = "0001-01-01T00:00:00Z"
GROUP_KEY = '{}/{severity="page"}:{alertname="PostHogErrorsHigh"}'


# The fake PagerDuty's integration key (32 characters, as PagerDuty's are).
ROUTING_KEY = "R3sp0nd3rT3stR0ut1ngK3y012345678"


def bearer(token: str = TOKEN) -> dict[str, str]:
    """Headers as Alertmanager's ``http_config.authorization`` sends them."""
    return {"Authorization": f"Bearer {token}"}


def basic(user: str = BASIC_USER, password: str = BASIC_PASSWORD) -> dict[str, str]:
    """Headers as Alertmanager's ``http_config.basic_auth`` sends them."""
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def json_error(resp: ClientResponse) -> str:
    """The message of an error answer, after checking it is JSON ``{"error": "..."}``."""
    assert resp.content_type == "application/json", resp.content_type
    body = await resp.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str)
    return message


def alert(
    fingerprint: str,
    *,
    status: str = "firing",
    starts_at: str = "2026-11-23T05:00:00Z",
    ends_at: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alert of a group, with the labels a posthog_errors_total rule carries."""
    return {
        "status": status,
        "labels": {
            "alertname": "PostHogErrorsHigh",
            "severity": "page",
            "status_code": "503",
            "namespace": "analytics",
            "pod": f"posthog-integration-{fingerprint[:6]}",
            **(labels or {}),
        },
        "annotations": {
            "summary": "PostHog API errors above 5% for 5 minutes",
            "description": "rate(posthog_errors_total[5m]) is 0.12 on posthog-integration",
            "runbook_url": "https://runbooks.example.com/posthog",
            **(annotations or {}),
        },
        "startsAt": starts_at,
        "endsAt": ends_at or (ZERO_TIME if status == "firing" else "2026-11-23T05:10:00Z"),
        "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=rate%28posthog_errors_total%5B5m%5D%29",
        "fingerprint": fingerprint,
    }


def notification(
    alerts: list[dict[str, Any]],
    *,
    group_key: str = GROUP_KEY,
    truncated_alerts: int = 0,
    version: str = "4",
) -> dict[str, Any]:
    """A webhook body for one group: status is firing while any of its alerts fires."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": version,
        "groupKey": group_key,
        "truncatedAlerts": truncated_alerts,
        "status": "firing" if firing else "resolved",
        "receiver": "posthog-receiver",
        "groupLabels": {"alertname": "PostHogErrorsHigh"},
        "commonLabels": {"alertname": "PostHogErrorsHigh", "severity": "page"},
        "commonAnnotations": {"summary": "PostHog API errors above 5% for 5 minutes"},
        "externalURL": "http://alertmanager.example.com:9093",
        "alerts": copy.deepcopy(alerts),
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def settings_data(tmp_path: Path, **groups: Any) -> dict[str, Any]:
    """Test configuration as YAML-shaped data: both auth schemes, small intervals."""
    base: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "max_body_bytes": 16_384},
        "webhook": {
            "bearer_token": {"value": TOKEN},
            "basic_auth": {"username": BASIC_USER, "password": {"value": BASIC_PASSWORD}},
        },
        "store": {"path": str(tmp_path / "receiver.sqlite3"), "busy_timeout_seconds": 0.2},
        "worker": {"poll_interval_seconds": 0.05, "stall_after_seconds": 10},
    }
    return _merge(base, groups)


def make_settings(tmp_path: Path, **groups: Any) -> Settings:
    """Validated settings for an in-process app; ``groups`` override the test defaults."""
    return Settings(**settings_data(tmp_path, **groups))


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    deadline: float = 10.0,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``accept`` holds for its value; fail with the last value seen."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        value = await probe()
        if accept(value):
            return value
        if loop.time() > end:
            raise AssertionError(f"{what} not reached; last value: {value!r}")
        await asyncio.sleep(0.02)
