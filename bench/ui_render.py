"""Render time of the web UI's pages with a full store.

Seeds a store with ``--incidents`` incidents (default 1,000, as issue 17 asks), one of them
with ``--timeline`` timeline entries (default 500: alert changes, triage, remediation outcomes,
notifications), all written by the receiver's own writers (``apply_notification``,
``record_triage``, ``add_timeline``, the outbox's ``enqueue`` and delivery records). Then it
serves the real application on loopback and times ``--requests`` GETs of the incident list and
of the big incident's page (each: sign-in, store read, template render, HTTP on loopback), after
a warm-up, and prints p50/p95/max as JSON. Target: p95 under 100 ms for both.

``--screenshots DIR`` instead seeds a small realistic state and writes ``ui-list.png`` and
``ui-incident.png`` taken by headless Chromium (Debian's chromium and chromium-driver); the
incident's restart awaits approval, so its page shows the Approve and Deny buttons.

    PYTHONPATH=. .venv/bin/python bench/ui_render.py
    PYTHONPATH=. .venv/bin/python bench/ui_render.py --screenshots docs
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from receiver.alertmanager import WebhookPayload
from receiver.app import RecordingResponder, create_app
from receiver.config import Settings
from receiver.logs import configure_logging
from receiver.notify.outbox import Draft, enqueue, list_messages, record_retry, record_sent
from receiver.redaction import Redactor
from receiver.remediation.outcome import ActionOutcome
from receiver.runbook import ErrorClass, Severity
from receiver.store import Store, journal
from receiver.store import approvals as approval
from receiver.store.incidents import add_timeline, apply_notification, record_triage

USER, PASSWORD = "oncall", "bench-password"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
TARGET = "prod/posthog-integration/posthog-integration"

STEPS = [
    {
        "question": "Is PostHog itself having an incident (status page)?",
        "answer": "no",
        "finding": "status page: All Systems Operational",
        "evidence": {"indicator": "none"},
        "duration_ms": 184.2,
    },
    {
        "question": (
            "Is our PostHog API key in order (secret exists, non-empty, loaded by the pods)?"
        ),
        "answer": "no",
        "finding": "the Secret changed after the pods started: the pods hold the old key",
        "evidence": {"secret_updated": "2026-11-23T04:51:10Z", "oldest_pod": "2026-11-20T09:12Z"},
        "duration_ms": 41.7,
    },
]
CLASSES = [
    (ErrorClass.AUTH, Severity.P1, "our_integration", "401", "/capture"),
    (ErrorClass.RATE_LIMITED, Severity.P2, "our_integration", "429", "/batch"),
    (ErrorClass.UPSTREAM_ERROR, Severity.P2, "vendor_incident", "503", "/decide"),
    (ErrorClass.NETWORK, Severity.P3, "intermittent", "timeout", "/capture"),
]


def _payload(
    n: int, status_code: str, endpoint: str, *, started: datetime, status: str = "firing"
) -> WebhookPayload:
    labels = {
        "alertname": "PostHogErrorsHigh",
        "severity": "page",
        "service": "posthog-integration",
        "status_code": status_code,
        "endpoint": endpoint,
    }
    return WebhookPayload.model_validate(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="PostHogErrorsHigh", n="{n}"}}',
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "posthog-receiver",
            "groupLabels": {"alertname": "PostHogErrorsHigh", "status_code": status_code},
            "commonLabels": labels,
            "commonAnnotations": {"summary": "PostHog API errors above 5% for 5 minutes"},
            "externalURL": "http://alertmanager.example.com:9093",
            "alerts": [
                {
                    "status": status,
                    "labels": {**labels, "pod": f"posthog-integration-7d9f-{n % 7}"},
                    "annotations": {"summary": f"{status_code} from PostHog on {endpoint}"},
                    "startsAt": _zulu(started),
                    "endsAt": _zulu(started + timedelta(minutes=20))
                    if status == "resolved"
                    else "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.example.com:9090/graph",
                    "fingerprint": f"{n:016x}",
                }
            ],
        }
    )


def _zulu(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _outcome(action: str, status: str, reason: str, at: float, **extra: Any) -> ActionOutcome:
    return ActionOutcome(action, TARGET, status, reason, at=at, **extra)  # type: ignore[arg-type]


def _seed(conn: Any, *, incidents: int, timeline: int, now: float, spacing: float) -> str:
    """``incidents`` incidents whose alerts started one every ``spacing`` seconds (each
    opened and resolved, like every record, when seeded); the newest (first in the list) has
    ``timeline`` entries."""
    big = ""
    for n in range(incidents):
        cls, severity, verdict, code, endpoint = CLASSES[n % len(CLASSES)]
        started = datetime.fromtimestamp(now - spacing * (incidents - n) - 300, UTC)
        outcome = apply_notification(conn, _payload(n, code, endpoint, started=started))
        assert outcome.incident_id is not None
        incident_id = outcome.incident_id
        if n % 3 == 0 and n != incidents - 1:
            resolved = _payload(n, code, endpoint, started=started, status="resolved")
            assert apply_notification(conn, resolved).resolved
        ack = {Severity.P1: 900, Severity.P2: 3600, Severity.P3: 14400}.get(severity, 86400)
        record_triage(
            conn,
            incident_id,
            error_class=cls,
            severity=severity,
            acknowledge_by=datetime.fromtimestamp(started.timestamp() + ack, UTC),
            decision={
                "error_class": cls.value,
                "verdict": verdict,
                "summary": "our API key was rotated; the pods still hold the old one"
                if cls is ErrorClass.AUTH
                else "nothing wrong on our side found",
                "steps": STEPS,
            },
        )
        big = incident_id
    _seed_story(conn, big, now=now, entries=timeline)
    return big


def _seed_story(conn: Any, incident_id: str, *, now: float, entries: int) -> None:
    """The big incident: actions in several states, notifications, a long timeline."""
    at = now - 900
    # The restart waits for a person, as the runbook's default wants: Approve/Deny on the page.
    waiting, _ = approval.request(
        conn,
        incident_id=incident_id,
        action="restart_for_rotated_key",
        target=TARGET,
        at=at + 60,
        expires_at=now + 600,
    )
    expires = datetime.fromtimestamp(waiting.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    story = [
        _outcome(
            "restart_for_rotated_key",
            "awaiting_approval",
            f"awaiting approval until {expires}: approve or deny it on the incident page",
            at + 60,
            approval_id=waiting.id,
        ),
        _outcome(
            "enable_request_queuing",
            "applied",
            "set RATE_LIMIT_MODE",
            at + 120,
            before="unset",
            after='"queue"',
            verified=True,
        ),
        _outcome(
            "enable_fallback",
            "skipped",
            "budget spent: 2 of 2 actions already taken for this incident",
            at + 125,
        ),
        _outcome(
            "escalate_infrastructure", "dry_run", "dry run: would page the platform team", at + 130
        ),
    ]
    for o in story:
        add_timeline(conn, incident_id, "remediation", o.summary, o.as_dict(), at=o.at)
    journal.write_intent(
        conn,
        incident_id=incident_id,
        action="copy_api_key",
        kind="copy_api_key",
        target=f"prod/secret/posthog-api-key and {TARGET}",
        before=None,
        after=None,
        at=at + 140,
    )
    enqueue(
        conn,
        incident_id,
        [
            Draft("pagerduty", "pagerduty.trigger", {}, f"{incident_id}-pd"),
            Draft("slack", "slack.opened", {}, f"{incident_id}-slack-1"),
            Draft("slack", "slack.action", {}, f"{incident_id}-slack-2"),
            Draft("statuspage", "statuspage.create", {}, f"{incident_id}-sp", not_before=now + 300),
        ],
        now=at,
    )
    # Delivered, delivered, and failing twice: as the outbox worker records each attempt.
    pagerduty, slack_opened, slack_action = list_messages(conn, incident_id)[:3]
    record_sent(conn, pagerduty["id"], skipped=None, now=at + 2)
    record_sent(conn, slack_opened["id"], skipped=None, now=at + 3)
    for _ in range(2):
        record_retry(
            conn, slack_action["id"], error="HTTP 503 from Slack", next_attempt_at=now + 20
        )
    for i in range(max(entries - 8, 0)):
        status = "firing" if i % 2 == 0 else "resolved"
        add_timeline(
            conn,
            incident_id,
            f"alert_{status}",
            f"alert PostHogErrorsHigh {status}",
            {"fingerprint": f"{i:016x}", "status": status, "labels": {"pod": f"p-{i}"}},
            at=at + i,
        )


def _settings(workdir: Path) -> Settings:
    return Settings.model_validate(
        {
            "webhook": {"bearer_token": {"value": "bench-token"}},
            "store": {"path": str(workdir / "receiver.sqlite3")},
            "evidence": {"directory": str(workdir / "evidence")},
            "ui": {"users": [{"username": USER, "password": {"value": PASSWORD}}]},
            "logging": {"level": "info", "format": "json"},
        }
    )


async def _seeded(workdir: Path, *, incidents: int, timeline: int, spacing: float = 60.0) -> str:
    store = Store(_settings(workdir).store)
    await store.open()
    try:
        now = time.time()
        return await store.write(
            lambda c: _seed(c, incidents=incidents, timeline=timeline, now=now, spacing=spacing)
        )
    finally:
        await store.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _time(client: TestClient[Any, Any], path: str, requests: int) -> dict[str, float]:
    for _ in range(10):  # warm-up: templates compiled, caches filled
        assert (await client.get(path, headers=AUTH)).status == 200
    times: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        resp = await client.get(path, headers=AUTH)
        await resp.read()
        times.append((time.perf_counter() - started) * 1000)
        assert resp.status == 200
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(_percentile(times, 0.95), 1),
        "max_ms": round(max(times), 1),
    }


async def bench(incidents: int, timeline: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        big = await _seeded(workdir, incidents=incidents, timeline=timeline)
        app = create_app(_settings(workdir), responder=RecordingResponder())
        async with TestClient(TestServer(app)) as client:
            page = await (await client.get(f"/incidents/{big}", headers=AUTH)).text()
            listed = await (await client.get("/", headers=AUTH)).text()
            return {
                "machine": f"{platform.machine()}, {platform.python_version()}",
                "incidents": incidents,
                "timeline_entries": timeline,
                "requests": requests,
                "list_rows": listed.count('<tr class="incident'),
                "list_kib": round(len(listed) / 1024),
                "incident_kib": round(len(page) / 1024),
                "list": await _time(client, "/", requests),
                "incident": await _time(client, f"/incidents/{big}", requests),
            }


async def screenshots(directory: Path) -> None:
    from tests.browser import chromium

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        big = await _seeded(workdir, incidents=9, timeline=40, spacing=1900)
        app = create_app(_settings(workdir), responder=RecordingResponder())
        async with TestServer(app) as server:
            base = str(server.make_url("/"))

            def shoot() -> None:
                with chromium(user=USER, password=PASSWORD, width=1280, height=900) as browser:
                    browser.get(base)
                    browser.save_screenshot(str(directory / "ui-list.png"))
                    browser.set_window_size(1280, 2000)
                    browser.get(base + f"incidents/{big}")
                    time.sleep(1.5)  # the chart is an image of its own
                    browser.save_screenshot(str(directory / "ui-incident.png"))

            await asyncio.to_thread(shoot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--timeline", type=int, default=500)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args()
    # As served: info lines only (the access line of every request is debug).
    settings = _settings(Path(tempfile.gettempdir()))
    configure_logging(settings.logging, redactor=Redactor.from_settings(settings))
    if args.screenshots is not None:
        asyncio.run(screenshots(args.screenshots))
        return
    result = asyncio.run(bench(args.incidents, args.timeline, args.requests))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
