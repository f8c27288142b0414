"""The outbox in a storm: a P1 is never stuck behind lesser news, and queued news that a newer
message says again is not sent (only each destination's latest state goes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from receiver.notify.pagerduty import dedup_key
from receiver.runbook import Severity, Verdict
from tests.fakes.pagerduty import FakePagerDuty
from tests.notify_harness import (
    Clock,
    Fakes,
    Harness,
    clock_fixture,  # noqa: F401 - fixture
    fakes_fixture,  # noqa: F401 - fixture
    notify_settings,
    snapshot,
)

STORM = 1_000
PAGERDUTY_LIMIT = 120  # PagerDuty's events per minute per integration key (and our default)

FALLBACK = {
    "id": "act-1",
    "name": "enable_fallback",
    "outcome": "applied",
    "target": "deployment/posthog-integration",
    "detail": "POSTHOG_FALLBACK=true",
}


async def harness(tmp_path: Path, fakes: Fakes, clock: Clock, **options: Any) -> Harness:
    h = Harness(tmp_path / "receiver.sqlite3", notify_settings(fakes, **options), clock)
    await h.open()
    return h


def actions(pagerduty: FakePagerDuty, incident_id: str) -> list[str]:
    """What PagerDuty accepted for one incident, in order: alert actions and changes."""
    found = []
    for r in pagerduty.received:
        if r.path == "/v2/change/enqueue":
            if incident_id in r.body["payload"]["custom_details"]["incident"]:
                found.append("change")
        elif r.body["dedup_key"] == dedup_key(incident_id):
            found.append(r.body["event_action"])
    return found


@pytest.fixture(name="throttling_pagerduty")
def throttling_pagerduty_fixture(clock: Clock, fakes: Fakes) -> FakePagerDuty:
    """The fake PagerDuty answering 429 past its real rate limit."""
    fakes.pagerduty.rate_limit_per_minute = PAGERDUTY_LIMIT
    return fakes.pagerduty


@pytest.mark.asyncio
async def test_p1_behind_a_storm_of_p2_goes_next(
    tmp_path: Path, fakes: Fakes, clock: Clock, throttling_pagerduty: FakePagerDuty
) -> None:
    """1,000 P2 pages are queued and draining at PagerDuty's rate limit; a P1 queued then is
    the next page sent (within a token's wait), and the rate limit still holds: PagerDuty
    never answers 429."""
    pd = throttling_pagerduty
    h = await harness(tmp_path, fakes, clock, only=("pagerduty",))
    try:
        for n in range(STORM):
            await h.notifier.incident_opened(snapshot(clock, f"p2-{n}", severity=Severity.P2))
        for _ in range(5):  # the storm is being delivered: the burst is spent
            await h.worker.run_once()
            clock.advance(0.5)
        before = len(pd.alerts)
        assert 0 < before < 50

        queued_at = clock.t
        await h.notifier.incident_opened(snapshot(clock, "p1", severity=Severity.P1))
        for _ in range(20):
            await h.worker.run_once()
            if actions(pd, "p1"):
                break
            clock.advance(0.5)
        pending = [m for m in await h.messages() if m["state"] == "pending"]
    finally:
        await h.close()

    (p1,) = [r for r in pd.received if r.body.get("dedup_key") == dedup_key("p1")]
    assert p1.body["payload"]["severity"] == "critical"
    assert p1.at - queued_at <= 1.0  # one token of 100 a minute after the burst: 0.6 s
    assert len(pd.alerts) <= before + 2  # at most a P2 already due went out with it
    assert len(pending) >= STORM - 60
    assert all(m["priority"] == 2 for m in pending)
    assert pd.throttled == 0


@pytest.mark.asyncio
async def test_escalated_incident_moves_up_with_its_earlier_news(
    tmp_path: Path, fakes: Fakes, clock: Clock, throttling_pagerduty: FakePagerDuty
) -> None:
    """An incident still queued as a P2 that becomes a P1 goes before the storm, its own
    messages in their order: its change event, then its alert (the P2 trigger superseded)."""
    pd = throttling_pagerduty
    h = await harness(tmp_path, fakes, clock, only=("pagerduty",))
    try:
        opened = snapshot(clock, "esc", severity=Severity.P2)
        await h.notifier.incident_opened(opened)
        for n in range(200):
            await h.notifier.incident_opened(snapshot(clock, f"p2-{n}", severity=Severity.P2))
        acted = dataclasses.replace(opened, verdict=Verdict.VENDOR_INCIDENT, actions=(FALLBACK,))
        # The first trigger is sent in the first pass; the rest of "esc" waits in the storm.
        await h.worker.run_once()
        assert actions(pd, "esc") == ["trigger"]
        await h.notifier.action_taken(acted, FALLBACK)
        await h.notifier.incident_changed(acted)
        worse = dataclasses.replace(acted, severity=Severity.P1)
        await h.notifier.incident_changed(worse)
        for _ in range(20):
            clock.advance(0.5)
            await h.worker.run_once()
            if len(actions(pd, "esc")) == 3:
                break
        delivered_p2 = sum(1 for a in pd.alerts if a["dedup_key"].startswith(dedup_key("p2-")))
        esc = [m for m in await h.messages("pagerduty") if m["incident_id"] == "esc"]
    finally:
        await h.close()
    assert actions(pd, "esc") == ["trigger", "change", "trigger"]
    assert [a["payload"]["severity"] for a in pd.alerts if a["dedup_key"] == dedup_key("esc")] == [
        "error",
        "critical",
    ]
    assert delivered_p2 < 40
    (superseded,) = [m for m in esc if m["superseded_by"] is not None]
    assert superseded["kind"] == "pagerduty.trigger"
    assert superseded["state"] == "skipped"
    assert superseded["payload"]["payload"]["severity"] == "error"
    assert pd.throttled == 0


@pytest.mark.asyncio
async def test_queued_updates_of_one_incident_send_only_the_latest(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """While PagerDuty is down, 30 updates of one alert are queued: once it is back, only the
    latest is sent, and the resolve after it still resolves the alert."""
    pd = fakes.pagerduty
    h = await harness(tmp_path, fakes, clock, only=("pagerduty",))
    pd.down = True
    try:
        opened = snapshot(clock, "inc-1", severity=Severity.P2)
        await h.notifier.incident_opened(opened)
        await h.drain()  # tried once while down: still queued
        for n in range(30):
            await h.notifier.incident_changed(dataclasses.replace(opened, title=f"update {n}"))
        await h.notifier.incident_resolved(
            dataclasses.replace(opened, title="update 29", status="resolved", resolved_at=clock.t)
        )
        pd.down = False
        clock.advance(600)
        await h.drain()
        stored = await h.messages("pagerduty")
        skipped = h.metric("posthog_receiver_notifications_skipped_total", "pagerduty")
    finally:
        await h.close()
    assert actions(pd, "inc-1") == ["trigger", "resolve"]
    assert "update 29" in pd.alerts[0]["payload"]["summary"]
    assert pd.alert_status(dedup_key("inc-1")) == "resolved"
    triggers = [m for m in stored if m["kind"] == "pagerduty.trigger"]
    assert [m["state"] for m in triggers] == ["skipped"] * 30 + ["sent"]
    # Each superseded trigger names the next one, which carries its news on.
    assert [m["superseded_by"] for m in triggers[:-1]] == [m["id"] for m in triggers[1:]]
    assert all("superseded by message" in m["last_error"] for m in triggers[:-1])
    assert skipped == 30


@pytest.mark.asyncio
async def test_state_changes_between_updates_are_kept(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A trigger is not superseded across an acknowledge: PagerDuty gets trigger,
    acknowledge, the newer trigger and the resolve, in that order, and ends resolved; change
    events are never superseded."""
    pd = fakes.pagerduty
    h = await harness(
        tmp_path, fakes, clock, only=("pagerduty",), pagerduty={"acknowledge_on_action": True}
    )
    pd.down = True
    try:
        opened = snapshot(clock, "inc-1")
        await h.notifier.incident_opened(opened)
        acted = dataclasses.replace(opened, verdict=Verdict.VENDOR_INCIDENT, actions=(FALLBACK,))
        await h.notifier.action_taken(acted, FALLBACK)
        reverted = {**FALLBACK, "id": "act-2", "outcome": "reverted"}
        await h.notifier.action_taken(acted, reverted)
        await h.notifier.incident_changed(dataclasses.replace(acted, title="first"))
        await h.notifier.incident_changed(dataclasses.replace(acted, title="second"))
        await h.notifier.incident_resolved(
            dataclasses.replace(acted, status="resolved", resolved_at=clock.t)
        )
        pd.down = False
        await h.drain()
    finally:
        await h.close()
    assert actions(pd, "inc-1") == [
        "trigger",
        "change",
        "acknowledge",
        "change",
        "trigger",
        "resolve",
    ]
    assert "second" in pd.alerts[2]["payload"]["summary"]
    assert pd.alert_status(dedup_key("inc-1")) == "resolved"


@pytest.mark.asyncio
async def test_status_page_gets_the_latest_news_then_the_resolve(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """News piling up during the hold-off: customers are told the incident's latest state once
    the hold-off ends, then that it resolved; nothing older."""
    h = await harness(tmp_path, fakes, clock, only=("statuspage",))
    sp = fakes.statuspage
    try:
        opened = snapshot(clock, severity=Severity.P2)
        await h.notifier.incident_opened(opened)
        await h.drain()
        worse = dataclasses.replace(opened, severity=Severity.P1)
        await h.notifier.incident_changed(worse)
        identified = dataclasses.replace(worse, verdict=Verdict.VENDOR_INCIDENT)
        await h.notifier.incident_changed(identified)
        await h.drain()
        clock.advance(61)  # past the hold-off
        await h.notifier.incident_resolved(
            dataclasses.replace(identified, status="resolved", resolved_at=clock.t)
        )
        await h.drain()
        news = await h.messages("statuspage")
    finally:
        await h.close()
    (incident,) = sp.incidents.values()
    updates = [u["status"] for u in reversed(incident["incident_updates"])]
    assert updates == ["identified", "resolved"]
    assert incident["impact"] == "critical"
    assert [m["state"] for m in news] == ["skipped", "skipped", "sent", "sent"]
    assert [m["superseded_by"] for m in news[:2]] == [news[1]["id"], news[2]["id"]]


@pytest.mark.asyncio
async def test_superseded_news_does_not_count_as_told(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """An incident whose news was superseded and that resolves within the hold-off never
    reaches the status page: a superseded message was never told to customers."""
    h = await harness(tmp_path, fakes, clock, statuspage={"hold_off_seconds": 300})
    try:
        opened = snapshot(clock)
        await h.notifier.incident_opened(opened)
        await h.drain()
        identified = dataclasses.replace(opened, verdict=Verdict.VENDOR_INCIDENT)
        await h.notifier.incident_changed(identified)
        await h.drain()
        clock.advance(30)
        await h.notifier.incident_resolved(
            dataclasses.replace(identified, status="resolved", resolved_at=clock.t)
        )
        clock.advance(600)
        await h.drain()
        news = await h.messages("statuspage")
    finally:
        await h.close()
    assert fakes.statuspage.attempts == 0
    assert [m["state"] for m in news] == ["skipped"] * 3
    assert news[0]["superseded_by"] == news[1]["id"]
    assert news[2]["last_error"] == "resolved within the status-page hold-off"
