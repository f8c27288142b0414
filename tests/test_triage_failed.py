"""An incident is never silent: when triage fails, a minimal "triage failed" alert pages people.

The failure is real, not patched in: the store is left as an earlier release left it, when the
door still accepted a ``startsAt`` in the year 9999 (a broken clock or a hostile sender) and
triage then failed on its date arithmetic at every attempt, for about 13 minutes, without a
page. The receiver starts on that store with the fake PagerDuty and Slack on loopback; nothing
of ours is replaced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from receiver.alertmanager import WebhookPayload
from receiver.app import create_app
from receiver.config import Settings
from receiver.keys import STORE
from receiver.notify import Notifier
from receiver.notify.outbox import list_messages
from receiver.notify.pagerduty import dedup_key
from receiver.redaction import Redactor
from receiver.responder import snapshot_of, untriaged_snapshot
from receiver.store import Connection, Store
from receiver.store.incidents import (
    apply_notification,
    due_events,
    event_state,
    get_incident,
    import_alert_start,
    retry_event,
    unfinished_events,
)
from receiver.worker import MAX_EVENT_ATTEMPTS
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.fakes.status_page import FakeStatusPage
from tests.test_responder import alert, eventually, make_settings, payload

AppClient = Callable[..., Awaitable[TestClient[Any, Any]]]
# As an earlier release stored it: Python's isoformat of the validated time.
FAR_FUTURE = "9999-12-31T23:59:59+00:00"
OVERFLOW = "OverflowError: date value out of range"
MINIMAL_SUMMARY = (
    "PostHog incident PostHogErrorRateHigh: automatic triage failed — follow the runbook by hand"
)


@pytest.fixture
def settings(
    tmp_path: Path, status_page: FakeStatusPage, pagerduty: FakePagerDuty, slack: FakeSlack
) -> Settings:
    return make_settings(
        tmp_path,
        status_page,
        pagerduty=pagerduty,
        slack=slack,
        # Evidence is not what these tests are about, and collecting it takes a while.
        responder={"revert_check_seconds": 0.05, "collect_evidence": False},
    )


async def left_by_an_earlier_release(settings: Settings, *, attempts: int = 0) -> str:
    """A store with one incident whose alert starts in the year 9999 and whose ``opened``
    event is still to be handled (after ``attempts`` failed attempts); its id."""
    store = Store(settings.store)
    await store.open()
    try:
        body = WebhookPayload.model_validate(payload(alert("a1")))
        outcome = await store.write(lambda c: apply_notification(c, body))
        incident_id = outcome.incident_id
        assert incident_id is not None

        def as_stored_then(conn: Connection) -> None:
            import_alert_start(conn, incident_id, "a1", FAR_FUTURE)
            # Each attempt of the earlier release failed on the date, as the worker records it.
            for _ in range(attempts):
                (event,) = due_events(conn)
                retry_event(conn, event.id, error=OVERFLOW, give_up=False, backoff=0.0)

        await store.write(as_stored_then)
    finally:
        await store.close()
    return incident_id


async def incident_of(client: TestClient[Any, Any], incident_id: str) -> dict[str, Any]:
    found: dict[str, Any] | None = await client.app[STORE].read(
        lambda c: get_incident(c, incident_id)
    )
    assert found is not None
    return found


async def opened_event(client: TestClient[Any, Any], incident_id: str) -> tuple[str, int]:
    found = await client.app[STORE].read(lambda c: event_state(c, incident_id, "opened"))
    assert found is not None
    return found


async def triage_failures(client: TestClient[Any, Any]) -> float:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "posthog_receiver_triage_failures_total":
                return sample.value
    raise AssertionError("posthog_receiver_triage_failures_total is not exported")


def triggers(pagerduty: FakePagerDuty) -> list[dict[str, Any]]:
    return [a for a in pagerduty.alerts if a["event_action"] == "trigger"]


async def _true(value: bool) -> bool:
    return value


@pytest.mark.asyncio
async def test_failed_triage_pages_at_once_and_the_full_triage_updates_the_same_alert(
    settings: Settings,
    pagerduty: FakePagerDuty,
    slack: FakeSlack,
    aiohttp_client: AppClient,
) -> None:
    """The first failure pages a minimal alert within seconds, once however often triage is
    tried again; when triage succeeds, its page updates that same PagerDuty alert."""
    incident_id = await left_by_an_earlier_release(settings)
    started = time.monotonic()
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))

    await eventually(lambda: _true(len(pagerduty.alerts) >= 1), within=5)
    assert time.monotonic() - started < 5
    (page,) = pagerduty.alerts
    assert page["event_action"] == "trigger"
    assert page["dedup_key"] == dedup_key(incident_id)
    assert page["payload"]["summary"] == MINIMAL_SUMMARY
    assert page["payload"]["severity"] == "critical"
    details = page["payload"]["custom_details"]
    url = f"{settings.server.public_url.rstrip('/')}/incidents/{incident_id}"
    assert details["incident"] == url
    assert details["error"] == "OverflowError: date value out of range"
    assert {"href": url, "text": "Incident in posthog-receiver"} in page["links"]
    await eventually(lambda: _true(len(slack.texts) >= 1), within=5)
    (message,) = slack.texts
    assert message.startswith("🔴 TRIAGE FAILED: PostHog Integration")
    assert "Error: OverflowError: date value out of range" in message
    assert url in message

    incident = await incident_of(client, incident_id)
    (entry,) = [e for e in incident["timeline"] if e["kind"] == "triage_failed"]
    assert entry["message"].startswith("automatic triage failed (OverflowError: date value")
    assert await triage_failures(client) == 1

    # Triage is tried again (after 2 s) and fails again: nobody is paged a second time.
    await eventually(
        lambda: _true_after(opened_event(client, incident_id), lambda e: e[1] >= 2), within=10
    )
    assert await opened_event(client, incident_id) == ("pending", 2)
    await asyncio.sleep(0.3)  # what the outbox would have sent by now
    assert len(pagerduty.alerts) == 1
    assert len(slack.texts) == 1
    assert await triage_failures(client) == 1

    # An alert with a real start arrives: the next attempt triages and pages in full.
    response = await client.post("/webhook/alertmanager", json=payload(alert("a1"), alert("a2")))
    assert response.status == 200
    await eventually(lambda: _true(len(triggers(pagerduty)) >= 2), within=15)
    await eventually(lambda: client.app[STORE].read(_all_handled), within=10)
    # The opened event's page, then the alerts_changed event's update: all one alert.
    minimal, *full = triggers(pagerduty)
    assert minimal["payload"]["summary"] == MINIMAL_SUMMARY
    assert {t["dedup_key"] for t in full} == {dedup_key(incident_id)}
    assert full[0]["payload"]["summary"].startswith("[P3] PostHog integration: ")
    assert full[0]["payload"]["custom_details"]["decision_path"]
    assert pagerduty.opened == [(dedup_key(incident_id), "triggered")]  # one alert, updated
    assert pagerduty.rejected == []
    assert await triage_failures(client) == 1


def _all_handled(conn: Connection) -> bool:
    return unfinished_events(conn) == 0


async def _true_after(value: Awaitable[Any], check: Callable[[Any], bool]) -> bool:
    return check(await value)


@pytest.mark.asyncio
async def test_giving_up_still_pages_and_says_so_on_the_timeline(
    settings: Settings,
    pagerduty: FakePagerDuty,
    aiohttp_client: AppClient,
) -> None:
    """An event on its last attempt (a receiver restarted while it retried) is given up, and
    the incident is still paged, once; its timeline says handling was given up."""
    incident_id = await left_by_an_earlier_release(settings, attempts=MAX_EVENT_ATTEMPTS - 1)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))

    async def given_up() -> bool:
        return (await opened_event(client, incident_id))[0] == "failed"

    await eventually(given_up, within=5)
    await eventually(lambda: _true(len(pagerduty.alerts) >= 1), within=5)
    (page,) = pagerduty.alerts
    assert page["payload"]["summary"] == MINIMAL_SUMMARY
    assert page["dedup_key"] == dedup_key(incident_id)

    timeline = (await incident_of(client, incident_id))["timeline"]
    kinds = [e["kind"] for e in timeline]
    assert kinds.count("triage_failed") == 1
    (gave_up,) = [e for e in timeline if e["kind"] == "gave_up"]
    assert gave_up["message"] == (
        f"automatic handling of the opened event given up after {MAX_EVENT_ATTEMPTS} attempts "
        "(OverflowError: date value out of range): follow the runbook by hand"
    )
    assert gave_up["data"]["attempts"] == MAX_EVENT_ATTEMPTS


@pytest.mark.asyncio
async def test_an_incident_already_paged_gets_no_minimal_page(tmp_path: Path) -> None:
    """Once an incident has a page, a later triage failure stores nothing: the minimal alert
    would only replace what people see with less."""
    settings = Settings(
        webhook={"allow_unauthenticated": True},
        store={"path": str(tmp_path / "receiver.sqlite3")},
    )
    store = Store(settings.store)
    await store.open()
    try:
        body = WebhookPayload.model_validate(payload(alert("a1")))
        outcome = await store.write(lambda c: apply_notification(c, body))
        incident_id = outcome.incident_id
        assert incident_id is not None
        incident = await store.read(lambda c: get_incident(c, incident_id))
        assert incident is not None
        notifier = Notifier(store=store, settings=settings.notify, public_url="http://receiver")

        assert await notifier.incident_opened(snapshot_of(incident)) == 2
        failed = untriaged_snapshot(incident)
        assert await notifier.triage_failed(failed, error="OverflowError") == 0
        kinds = [m["kind"] for m in await store.read(lambda c: list_messages(c, incident_id))]
        assert kinds == ["pagerduty.trigger", "slack.message"]
    finally:
        await store.close()


def test_the_error_people_see_is_one_short_line_without_secrets() -> None:
    """The error on the page and the timeline: kind and message on one line, at most 200
    characters of message, the configured secrets redacted."""
    redactor = Redactor(["xoxb-triage-failed-test-secret"])
    error = RuntimeError(
        "POST https://hooks.slack.com/services/xoxb-triage-failed-test-secret failed\n" + "x" * 500
    )
    shown = redactor.error_line(error)
    assert "xoxb-triage-failed-test-secret" not in shown
    assert shown.startswith("RuntimeError: POST https://hooks.slack.com/services/[redacted] fail")
    assert "\n" not in shown
    assert len(shown) == len("RuntimeError: ") + 200
    assert redactor.error_line(KeyError()) == "KeyError"
