"""Notifications: what reaches PagerDuty, the status page and Slack, and how reliably."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

from receiver.notify.pagerduty import dedup_key
from receiver.runbook import Severity, Verdict
from tests.notify_harness import (
    COMPONENT_ID,
    PUBLIC_URL,
    ROUTING_KEY,
    SLACK_PATH,
    STATUSPAGE_KEY,
    Clock,
    Fakes,
    Harness,
    clock_fixture,  # noqa: F401 - fixture
    fakes_fixture,  # noqa: F401 - fixture
    notify_settings,
    snapshot,
)

FALLBACK = {
    "id": "act-1",
    "name": "enable_fallback",
    "outcome": "applied",
    "target": "deployment/posthog-integration",
    "detail": "POSTHOG_FALLBACK=true",
}


async def started(tmp_path: Path, fakes: Fakes, clock: Clock, **options: Any) -> Harness:
    harness = Harness(tmp_path / "receiver.sqlite3", notify_settings(fakes, **options), clock)
    await harness.open()
    return harness


@asynccontextmanager
async def running(
    tmp_path: Path, fakes: Fakes, clock: Clock, **options: Any
) -> AsyncIterator[Harness]:
    """A started harness, closed (its worker stopped, its store closed) on leaving."""
    harness = await started(tmp_path, fakes, clock, **options)
    try:
        yield harness
    finally:
        await harness.close()


def written(fakes: Fakes) -> list[Any]:
    """The status-page requests that create or update an incident, in order (no look-ups)."""
    return [r for r in fakes.statuspage.received if r.method != "GET"]


def components(fakes: Fakes) -> list[dict[str, str]]:
    """The component statuses of each status-page request, in order."""
    return [r.body["incident"]["components"] for r in written(fakes)]


def sequence(fakes: Fakes, incident_id: str) -> list[str]:
    """What PagerDuty received for one incident, in order: alert actions and changes."""
    found = []
    for r in fakes.pagerduty.received:
        if r.path == "/v2/change/enqueue":
            if incident_id in r.body["payload"]["custom_details"]["incident"]:
                found.append("change")
        elif r.body["dedup_key"] == dedup_key(incident_id):
            found.append(r.body["event_action"])
    return found


@pytest.mark.asyncio
async def test_pagerduty_trigger_change_acknowledge_resolve(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """An incident pages with every field, records its remediation, is acknowledged, resolves."""
    async with running(
        tmp_path, fakes, clock, only=("pagerduty",), pagerduty={"acknowledge_on_action": True}
    ) as h:
        opened = snapshot(clock)
        await h.notifier.incident_opened(opened)
        acted = dataclasses.replace(opened, verdict=Verdict.VENDOR_INCIDENT, actions=(FALLBACK,))
        await h.notifier.action_taken(acted, FALLBACK)
        await h.notifier.incident_resolved(
            dataclasses.replace(acted, status="resolved", resolved_at=clock.t)
        )
        await h.drain()

    assert sequence(fakes, "inc-1") == ["trigger", "change", "acknowledge", "resolve"]
    trigger = fakes.pagerduty.alerts[0]
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["dedup_key"] == "posthog-receiver/inc-1"
    payload = trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["source"] == "posthog-integration"
    assert payload["class"] == "upstream_error"
    assert {"component", "group"} <= payload.keys()
    assert payload["custom_details"]["severity"] == "P1"
    assert payload["custom_details"]["decision_path"] == ["PostHog API returning errors? yes"]
    assert [link["href"] for link in trigger["links"]] == [
        "https://wiki.example.com/runbooks/posthog",
        "http://prometheus.example.com:9090/graph?g0.expr=posthog_errors_total",
        "http://alertmanager.example.com:9093",
        "https://grafana.example.com/d/posthog",
        f"{PUBLIC_URL}/incidents/inc-1",
    ]
    change = fakes.pagerduty.changes[0]
    assert "enable_fallback applied" in change["payload"]["summary"]
    assert h.metric("posthog_receiver_notifications_sent_total", "pagerduty") == 4


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (Severity.P1, "critical"),
        (Severity.P2, "error"),
        (Severity.P3, "warning"),
        (Severity.P4, "info"),
    ],
)
async def test_pagerduty_severity_follows_the_runbook(
    tmp_path: Path, fakes: Fakes, clock: Clock, severity: Severity, expected: str
) -> None:
    """P1 pages as critical, P2 as error, P3 as warning, P4 as info."""
    async with running(tmp_path, fakes, clock, only=("pagerduty",)) as h:
        await h.notifier.incident_opened(snapshot(clock, severity=severity))
        await h.drain()
    assert [a["payload"]["severity"] for a in fakes.pagerduty.alerts] == [expected]


@pytest.mark.asyncio
async def test_change_retriggers_same_alert_and_repeats_store_nothing(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A change re-triggers under the same dedup_key; the same event called twice adds nothing."""
    async with running(tmp_path, fakes, clock, only=("pagerduty",)) as h:
        opened = snapshot(clock, severity=Severity.P2, title="x" * 2000)
        assert await h.notifier.incident_opened(opened) > 0
        assert await h.notifier.incident_opened(opened) == 0
        await h.drain()  # sent before the change is queued: a queued trigger is superseded
        worse = dataclasses.replace(opened, severity=Severity.P1)
        assert await h.notifier.incident_changed(worse) > 0
        assert await h.notifier.incident_changed(worse) == 0
        await h.drain()
    alerts = fakes.pagerduty.alerts
    assert [a["payload"]["severity"] for a in alerts] == ["error", "critical"]
    assert {a["dedup_key"] for a in alerts} == {"posthog-receiver/inc-1"}
    assert all(len(a["payload"]["summary"]) == 1024 for a in alerts)


@pytest.mark.asyncio
async def test_statuspage_lifecycle_after_hold_off(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """After the hold-off one status-page incident is created, then updated through resolved."""
    h = await started(tmp_path, fakes, clock, only=("statuspage",))
    sp = fakes.statuspage
    try:
        opened = snapshot(clock)
        await h.notifier.incident_opened(opened)
        await h.drain()
        assert sp.attempts == 0  # held off: customers hear nothing yet

        clock.advance(61)
        await h.drain()
        identified = dataclasses.replace(opened, verdict=Verdict.VENDOR_INCIDENT)
        await h.notifier.incident_changed(identified)
        await h.notifier.incident_changed(identified)  # no change: no update
        await h.drain()  # each step delivered before the next is queued: none superseded
        acted = dataclasses.replace(identified, actions=(FALLBACK,))
        await h.notifier.action_taken(acted, FALLBACK)
        await h.drain()
        await h.notifier.incident_resolved(
            dataclasses.replace(acted, status="resolved", resolved_at=clock.t)
        )
        await h.drain()
    finally:
        await h.close()

    assert len(sp.incidents) == 1
    incident = next(iter(sp.incidents.values()))
    updates = [u["status"] for u in reversed(incident["incident_updates"])]
    assert updates == ["investigating", "identified", "monitoring", "resolved"]
    create = written(fakes)[0]
    assert create.method == "POST"
    assert create.headers["Authorization"] == f"OAuth {STATUSPAGE_KEY}"
    body = create.body["incident"]
    assert body["name"] == "PostHog Integration Issue"
    assert body["components"] == {COMPONENT_ID: "major_outage"}
    assert body["impact_override"] == "critical"
    assert body["body"].startswith("We're experiencing issues with our PostHog integration.")
    assert "Some users may experience analytics features being unavailable." in body["body"]
    assert "Last updated: " in body["body"]
    assert [r.method for r in written(fakes)[1:]] == ["PATCH", "PATCH", "PATCH"]
    assert sp.component_status == "operational"


@pytest.mark.asyncio
async def test_statuspage_component_status_by_severity(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """P2 marks the component partial_outage; P3 stays off the page unless configured."""
    async with running(
        tmp_path, fakes, clock, only=("statuspage",), statuspage={"hold_off_seconds": 0}
    ) as h:
        await h.notifier.incident_opened(snapshot(clock, "inc-p2", severity=Severity.P2))
        await h.notifier.incident_opened(snapshot(clock, "inc-p3", severity=Severity.P3))
        await h.drain()
    assert components(fakes) == [{COMPONENT_ID: "partial_outage"}]


@pytest.mark.asyncio
async def test_flapping_incident_never_reaches_the_status_page(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """An incident resolved within the hold-off is dropped, even across passes and time."""
    async with running(tmp_path, fakes, clock, statuspage={"hold_off_seconds": 300}) as h:
        opened = snapshot(clock)
        await h.notifier.incident_opened(opened)
        clock.advance(30)
        await h.drain()
        await h.notifier.incident_resolved(
            dataclasses.replace(opened, status="resolved", resolved_at=clock.t)
        )
        clock.advance(600)
        await h.drain()
        states = {m["state"] for m in await h.messages() if m["kind"] == "statuspage.update"}
        skipped = h.metric("posthog_receiver_notifications_skipped_total", "statuspage")
    assert fakes.statuspage.attempts == 0
    assert states == {"skipped"}
    assert skipped == 2
    assert sequence(fakes, "inc-1") == ["trigger", "resolve"]  # people are still paged
    assert len(fakes.slack.received) == 2


@pytest.mark.asyncio
async def test_slack_runbook_message_on_open_action_and_resolve(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Slack gets the runbook's internal message when an incident opens, acts and resolves."""
    async with running(
        tmp_path, fakes, clock, only=("slack",), slack={"next_update_minutes": 15}
    ) as h:
        opened = snapshot(clock)
        await h.notifier.incident_opened(opened)
        acted = dataclasses.replace(opened, actions=(FALLBACK,))
        await h.notifier.action_taken(acted, FALLBACK)
        await h.notifier.incident_changed(acted)  # changes are not posted to Slack
        await h.notifier.incident_resolved(
            dataclasses.replace(acted, status="resolved", resolved_at=clock.t)
        )
        await h.drain()
    first, action, resolved = fakes.slack.texts
    assert first.splitlines()[:6] == [
        "🔴 P1 INCIDENT: PostHog Integration",
        "Status: INVESTIGATING",
        "Impact: Complete outage (e.g. PostHog API unreachable)",
        "Current action: PostHog API returning errors; status page not checked yet",
        "Next update: 15:21 UTC",  # START is 15:06:40 UTC
        "Incident commander: <@U0ALICE01|alice>",
    ]
    assert f"{PUBLIC_URL}/incidents/inc-1" in first
    assert "Status: MONITORING" in action
    assert (
        "Current action: enable_fallback applied on deployment/posthog-integration"
        " (POSTHOG_FALLBACK=true)" in action
    )
    assert resolved.startswith("✅ P1 INCIDENT")
    assert "Status: RESOLVED" in resolved


@pytest.mark.asyncio
async def test_429_is_retried_after_retry_after(tmp_path: Path, fakes: Fakes, clock: Clock) -> None:
    """A 429 with Retry-After is retried no sooner than the destination asked, then delivered."""
    h = await started(tmp_path, fakes, clock, only=("pagerduty",))
    fakes.pagerduty.fail(429, retry_after="7")
    try:
        await h.notifier.incident_opened(snapshot(clock))
        await h.worker.run_once()
        (message,) = await h.messages("pagerduty")
        assert message["attempts"] == 1
        assert message["next_attempt_at"] == clock.t + 7
        clock.advance(6.9)
        assert await h.drain() == 0
        clock.advance(0.1)
        assert await h.drain() == 1
        retried = h.metric("posthog_receiver_notifications_retried_total", "pagerduty")
    finally:
        await h.close()
    assert fakes.pagerduty.attempts == 2
    assert len(fakes.pagerduty.alerts) == 1
    assert retried == 1


@pytest.mark.asyncio
async def test_503_and_slow_answers_are_retried_with_backoff(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A 503, then an answer slower than the timeout, are retried with growing waits."""
    h = await started(tmp_path, fakes, clock, only=("slack",), slack={"timeout_seconds": 0.2})
    fakes.slack.fail(503)
    fakes.slack.slow(1.0)
    try:
        await h.notifier.incident_opened(snapshot(clock))
        waits = []
        for _ in range(2):
            await h.worker.run_once()
            (message,) = await h.messages("slack")
            waits.append(message["next_attempt_at"] - clock.t)
            clock.advance(waits[-1])
        assert "no answer within 0.2s" in message["last_error"]
        assert await h.drain() == 1
    finally:
        await h.close()
    assert waits == [1.0, 2.0]  # exponential, no jitter configured
    assert len(fakes.slack.received) == 1


@pytest.mark.asyncio
async def test_400_is_not_retried_and_is_counted(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A 400 fails the message for good, is logged and counted, and later messages proceed."""
    h = await started(tmp_path, fakes, clock, only=("pagerduty",))
    fakes.pagerduty.fail(400, body='{"status":"invalid event"}')
    try:
        opened = snapshot(clock)
        await h.notifier.incident_opened(opened)
        with structlog.testing.capture_logs() as logs:
            await h.drain()
        await h.notifier.incident_resolved(
            dataclasses.replace(opened, status="resolved", resolved_at=clock.t)
        )
        clock.advance(3600)
        await h.drain()
        states = [(m["kind"], m["state"], m["attempts"]) for m in await h.messages("pagerduty")]
        failed = h.metric("posthog_receiver_notifications_failed_total", "pagerduty")
    finally:
        await h.close()
    assert states == [("pagerduty.trigger", "failed", 1), ("pagerduty.resolve", "sent", 1)]
    assert failed == 1
    assert fakes.pagerduty.attempts == 2
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors[0]["event"] == "notification failed; not retried"
    assert "PagerDuty answered 400" in errors[0]["error"]


@pytest.mark.asyncio
async def test_statuspage_bad_key_is_a_permanent_failure(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Statuspage answers 401 to a wrong OAuth key; that is recorded failed, not retried."""
    async with running(
        tmp_path,
        fakes,
        clock,
        only=("statuspage",),
        statuspage={"hold_off_seconds": 0, "api_key": {"value": "not-the-right-key"}},
    ) as h:
        await h.notifier.incident_opened(snapshot(clock))
        await h.drain()
        clock.advance(3600)
        await h.drain()
        (message,) = await h.messages("statuspage")
    assert message["state"] == "failed"
    assert "Statuspage answered 401" in message["last_error"]
    assert fakes.statuspage.rejected == [(401, "bad credentials")]


@pytest.mark.asyncio
async def test_statuspage_420_is_retried(tmp_path: Path, fakes: Fakes, clock: Clock) -> None:
    """Statuspage's 420 (its rate limit) is a temporary failure like 429."""
    h = await started(
        tmp_path, fakes, clock, only=("statuspage",), statuspage={"hold_off_seconds": 0}
    )
    fakes.statuspage.fail(420, retry_after="2")
    try:
        await h.notifier.incident_opened(snapshot(clock))
        await h.drain()
        clock.advance(2)
        await h.drain()
    finally:
        await h.close()
    assert len(fakes.statuspage.incidents) == 1


@pytest.mark.asyncio
async def test_outage_and_restart_deliver_everything_once_in_order(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Destinations down and the service restarted meanwhile: all arrives, once, in order."""
    h = await started(
        tmp_path,
        fakes,
        clock,
        pagerduty={"acknowledge_on_action": True},
        statuspage={"hold_off_seconds": 30},
    )
    for fake in fakes.all():
        fake.down = True
    try:
        a = snapshot(clock, "inc-a")
        b = snapshot(clock, "inc-b", severity=Severity.P2)
        await h.notifier.incident_opened(a)
        await h.notifier.incident_opened(b)
        clock.advance(31)
        await h.drain()
        acted = dataclasses.replace(a, verdict=Verdict.VENDOR_INCIDENT, actions=(FALLBACK,))
        await h.notifier.action_taken(acted, FALLBACK)
        clock.advance(5)
        await h.drain()

        await h.restart()
        resolved = dataclasses.replace(acted, status="resolved", resolved_at=clock.t)
        await h.notifier.incident_resolved(resolved)
        await h.notifier.action_taken(acted, FALLBACK)  # the responder repeating itself
        clock.advance(5)
        await h.drain()
        assert all(f.received == [] for f in fakes.all())
        assert all(f.attempts > 0 for f in fakes.all())

        await h.restart()
        for fake in fakes.all():
            fake.down = False
        clock.advance(60)
        await h.drain()
        states = {m["state"] for m in await h.messages()}
        depth = h.metrics.registry.get_sample_value(
            "posthog_receiver_notification_queue_depth", {"destination": "pagerduty"}
        )
    finally:
        await h.close()

    # Sent, or merged into the one public incident without changing what customers see.
    assert states == {"sent", "skipped"}
    assert depth == 0
    assert sequence(fakes, "inc-a") == ["trigger", "change", "acknowledge", "resolve"]
    assert sequence(fakes, "inc-b") == ["trigger"]
    sp = fakes.statuspage
    (incident,) = sp.incidents.values()
    # a's first news was superseded by its fix while the page was down: b (P2) opens it; a's
    # fix shows (P1: critical); a resolved leaves b's P2 open.
    updates = [u["status"] for u in reversed(incident["incident_updates"])]
    assert updates == ["investigating", "monitoring", "investigating"]
    assert "delays or errors" in incident["incident_updates"][-1]["body"]
    assert "delays or errors" in incident["incident_updates"][0]["body"]
    assert (incident["impact"], sp.component_status) == ("critical", "partial_outage")
    texts_a = [t for t in fakes.slack.texts if "/incidents/inc-a" in t]
    assert [t.splitlines()[1] for t in texts_a] == [
        "Status: INVESTIGATING",
        "Status: MONITORING",
        "Status: RESOLVED",
    ]
    assert len([t for t in fakes.slack.texts if "/incidents/inc-b" in t]) == 1


@pytest.mark.asyncio
async def test_pagerduty_rate_limit_per_routing_key(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """However many events are waiting, no 60-second window carries more than 120."""
    async with running(tmp_path, fakes, clock, only=("pagerduty",)) as h:
        for n in range(150):
            await h.notifier.incident_opened(snapshot(clock, f"inc-{n}", severity=Severity.P4))
        for _ in range(300):
            await h.worker.run_once()
            if len(fakes.pagerduty.received) == 150:
                break
            clock.advance(3)
        throttled = await h.messages()
    times = sorted(r.at for r in fakes.pagerduty.received)
    assert len(times) == 150
    assert all(m["attempts"] == 1 for m in throttled)  # waiting for a token is no attempt
    for start in times:
        assert sum(1 for t in times if start <= t < start + 60) <= 120
    assert times[-1] - times[0] >= 60


@pytest.mark.asyncio
async def test_unconfigured_destinations_write_to_the_log(tmp_path: Path, clock: Clock) -> None:
    """With nothing configured, every notification appears in the log instead."""
    h = Harness(tmp_path / "r.sqlite3", notify_settings(None), clock)
    await h.open()
    try:
        await h.notifier.incident_opened(snapshot(clock))
        with structlog.testing.capture_logs() as logs:
            await h.drain()
        sent = h.metric("posthog_receiver_notifications_sent_total", "log")
    finally:
        await h.close()
    shown = {e["target"]: e for e in logs if e["event"] == "notification"}
    assert set(shown) == {"pagerduty", "statuspage", "slack"}
    assert shown["pagerduty"]["payload"]["event_action"] == "trigger"
    assert "routing_key" not in shown["pagerduty"]["payload"]
    assert shown["slack"]["payload"]["text"].startswith("🔴 P1 INCIDENT")
    assert sent == 3


@pytest.mark.asyncio
async def test_worker_delivers_in_the_background(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Started with the application, the worker delivers what the notifier stores."""
    h = await started(tmp_path, fakes, clock, only=("slack",))
    h.worker.start()
    try:
        await h.notifier.incident_opened(snapshot(clock))
        for _ in range(200):
            if fakes.slack.received:
                break
            await asyncio.sleep(0.01)
        assert h.worker.alive
    finally:
        await h.close()
    assert len(fakes.slack.received) == 1
    assert not h.worker.alive


@pytest.mark.asyncio
async def test_no_secret_reaches_a_log_line(tmp_path: Path, fakes: Fakes, clock: Clock) -> None:
    """Sending, failing and retrying everywhere logs no routing key, OAuth key or webhook URL."""
    h = await started(
        tmp_path, fakes, clock, statuspage={"hold_off_seconds": 0}, slack={"timeout_seconds": 0.2}
    )
    # Answers that echo the credentials back, as a misbehaving proxy might.
    fakes.pagerduty.fail(400, body=f"invalid routing_key {ROUTING_KEY}")
    fakes.pagerduty.fail(429, retry_after="1")
    fakes.statuspage.fail(503, body=f"<html>upstream failed for OAuth {STATUSPAGE_KEY}</html>")
    fakes.slack.slow(0.5)
    fakes.slack.fail(404, body=f"no_service at {SLACK_PATH}")
    try:
        with structlog.testing.capture_logs() as logs:
            opened = snapshot(clock)
            await h.notifier.incident_opened(opened)
            await h.notifier.action_taken(opened, FALLBACK)
            for _ in range(5):
                await h.drain()
                clock.advance(10)
        delivered = [len(fakes.pagerduty.received), len(written(fakes)), len(fakes.slack.received)]
        errors = [m["last_error"] for m in await h.messages() if m["last_error"]]
    finally:
        await h.close()
    # PagerDuty: the trigger refused (400), the change event after a 429; the status page:
    # its create after a 503; Slack: the action message (the first timed out, then 404).
    assert delivered == [1, 1, 1]
    text = "\n".join(repr(e) for e in logs) + "\n".join(errors)
    assert logs
    assert "[redacted]" in text
    for secret in (ROUTING_KEY, STATUSPAGE_KEY, SLACK_PATH, fakes.slack.webhook_url):
        assert secret not in text


@pytest.mark.asyncio
async def test_escalation_to_p1_reaches_the_status_page(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A P3 incident stays internal until it escalates to P1, then customers are told."""
    async with running(
        tmp_path, fakes, clock, only=("statuspage",), statuspage={"hold_off_seconds": 0}
    ) as h:
        minor = snapshot(clock, severity=Severity.P3)
        await h.notifier.incident_opened(minor)
        await h.drain()
        assert fakes.statuspage.attempts == 0
        await h.notifier.incident_changed(dataclasses.replace(minor, severity=Severity.P1))
        await h.drain()
    assert components(fakes) == [{COMPONENT_ID: "major_outage"}]


@pytest.mark.asyncio
async def test_finished_notifications_are_pruned_after_retention(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Delivered messages are forgotten after the retention; undelivered ones never are."""
    async with running(tmp_path, fakes, clock, only=("slack",), outbox={"retention_hours": 1}) as h:
        await h.notifier.incident_opened(snapshot(clock, "inc-old"))
        await h.drain()
        fakes.slack.down = True
        clock.advance(7200)
        await h.notifier.incident_opened(snapshot(clock, "inc-new"))
        await h.drain()
        left = {(m["incident_id"], m["destination"], m["state"]) for m in await h.messages()}
    assert ("inc-old", "slack", "sent") not in left
    assert ("inc-new", "slack", "pending") in left


@pytest.mark.asyncio
async def test_network_error_is_retried_without_naming_the_url(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A refused connection is a temporary failure whose error does not name the webhook URL."""
    h = await started(tmp_path, fakes, clock, only=("slack",))
    await fakes.slack.stop()  # nothing listens on the webhook's port any more
    try:
        await h.notifier.incident_opened(snapshot(clock))
        await h.drain()
        (message,) = await h.messages("slack")
        retried = h.metric("posthog_receiver_notifications_retried_total", "slack")
    finally:
        await h.close()
    assert message["state"] == "pending"
    assert message["last_error"] == "Slack: network error (ClientConnectorError)"
    assert retried == 1


@pytest.mark.asyncio
async def test_stopping_the_worker_while_it_waits_returns(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A stop that arrives as the idle worker is woken still ends it (shutdown never hangs)."""
    h = await started(
        tmp_path, fakes, clock, only=("slack",), outbox={"poll_interval_seconds": 3600}
    )
    h.worker.start()
    try:
        await asyncio.sleep(0.2)  # an idle pass, then waiting for a wake-up
        assert h.worker.alive
        h.worker.wake()  # the wake-up and the cancellation land in the same loop turn
        stopping = asyncio.create_task(h.worker.stop())
        # Not a timeout around stop(): stop() suppresses the cancellation a timeout sends.
        done, _ = await asyncio.wait({stopping}, timeout=5)
        assert stopping in done, "stop() hangs"
    finally:
        await h.close()
    assert not h.worker.alive


@pytest.mark.asyncio
async def test_acknowledged_incident_is_updated_without_paging_again(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Once a person acknowledged the incident, a change reaches PagerDuty as a change event
    (no trigger that could page again), and the status page still follows it."""
    async with running(tmp_path, fakes, clock, statuspage={"hold_off_seconds": 0}) as h:
        opened = snapshot(clock)
        await h.notifier.incident_opened(opened)
        acknowledged = dataclasses.replace(
            opened, acknowledged=True, verdict=Verdict.VENDOR_INCIDENT
        )
        assert await h.notifier.incident_changed(acknowledged) > 0
        await h.notifier.action_taken(
            dataclasses.replace(acknowledged, actions=(FALLBACK,)), FALLBACK
        )
        await h.drain()

    assert sequence(fakes, "inc-1") == ["trigger", "change", "change"]
    assert fakes.pagerduty.alert_status(dedup_key("inc-1")) == "triggered"
    update = fakes.pagerduty.changes[0]["payload"]
    assert update["summary"].startswith("Update — [P1] PostHog integration: ")
    assert update["custom_details"]["status"] == "identified"
    # The status page follows the change: queued together, only its latest state goes.
    assert written(fakes)
    assert written(fakes)[-1].body["incident"]["status"] == "monitoring"  # the fallback is on
