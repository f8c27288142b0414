"""Alertmanager notifications as Alertmanager sends them, test settings, and store checks.

Shared by the OpenAPI contract tests and the webhook fuzz suite: both drive the real
application and then ask the real store whether what it holds still makes sense.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from aiohttp import web

from receiver.app import create_app
from receiver.config import Settings
from receiver.keys import SPOOL, STORE
from receiver.store import check_integrity
from receiver.store.inbox import inbox_states

__all__ = [
    "BASIC_PASSWORD",
    "BASIC_USER",
    "BEARER",
    "TOKEN",
    "ZERO_TIME",
    "alert",
    "basic_header",
    "notification",
    "receiver_settings",
    "served_app",
    "store_problems",
    "wait_processed",
]

TOKEN = "test-webhook-token-5f2c9a"
BASIC_USER = "alertmanager"
BASIC_PASSWORD = "test-basic-password-81d4"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ZERO_TIME = "0001-01-01T00:00:00Z"


def basic_header(user: str, password: str) -> dict[str, str]:
    """An ``Authorization`` header for basic auth, as Alertmanager's ``basic_auth`` sends it."""
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def receiver_settings(tmp_path: Path, *, max_body_bytes: int = 1_048_576) -> Settings:
    """Settings with both bearer and basic auth; state and evidence in ``tmp_path``."""
    return Settings(
        server={"max_body_bytes": max_body_bytes},
        webhook={
            "bearer_token": {"value": TOKEN},
            "basic_auth": {"username": BASIC_USER, "password": {"value": BASIC_PASSWORD}},
        },
        store={"path": tmp_path / "receiver.sqlite3"},
        evidence={"directory": tmp_path / "evidence"},
    )


def served_app(tmp_path: Path, *, max_body_bytes: int = 1_048_576) -> web.Application:
    """The application as served."""
    return create_app(receiver_settings(tmp_path, max_body_bytes=max_body_bytes))


def alert(
    fingerprint: str,
    status: str = "firing",
    *,
    labels: dict[str, str] | None = None,
    starts_at: str = "2026-01-05T10:00:00.123Z",
    ends_at: str = ZERO_TIME,
) -> dict[str, Any]:
    """One alert of a notification."""
    return {
        "status": status,
        "labels": labels or {"alertname": "PostHogErrors", "status_code": "429"},
        "annotations": {"summary": "PostHog API answers 429"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


def notification(
    group_key: str, alerts: list[dict[str, Any]], *, status: str | None = None
) -> dict[str, Any]:
    """A version 4 notification of ``alerts`` (the whole group)."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status or ("firing" if firing else "resolved"),
        "receiver": "posthog-receiver",
        "groupLabels": {"alertname": "PostHogErrors"},
        "commonLabels": {"alertname": "PostHogErrors"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    }


async def wait_processed(app: web.Application, *, timeout: float = 20.0) -> dict[str, int]:
    """Wait until the worker has moved every spooled webhook into the inbox and taken every
    stored webhook out of it; the inbox's row counts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        spooled = app[SPOOL].unread()
        states = await app[STORE].read(inbox_states)
        if not spooled and not states.get("pending"):
            return states
        if loop.time() > deadline:
            raise AssertionError(f"not drained after {timeout}s: {states}, spool: {spooled}")
        await asyncio.sleep(0.02)


async def store_problems(app: web.Application) -> list[str]:
    """Everything in the store that contradicts the incident rules (empty when consistent)."""
    return await app[STORE].read(check_integrity)
