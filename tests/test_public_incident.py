"""The status page tells one story: one public incident for every qualifying incident at once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from receiver.notify import IncidentSnapshot
from receiver.notify.public_incident import Contribution, PublicIncident
from receiver.runbook import Severity, Verdict
from tests.notify_harness import (
    COMPONENT_ID,
    Clock,
    Fakes,
    Harness,
    clock_fixture,  # noqa: F401 - fixture
    fakes_fixture,  # noqa: F401 - fixture
    notify_settings,
    snapshot,
)

HOLD_OFF = 60


async def started(path: Path, fakes: Fakes, clock: Clock, **statuspage: Any) -> Harness:
    settings = notify_settings(
        fakes, only=("statuspage",), statuspage={"hold_off_seconds": HOLD_OFF, **statuspage}
    )
    harness = Harness(path, settings, clock)
    await harness.open()
    return harness


def writes(fakes: Fakes) -> list[tuple[str, dict[str, Any]]]:
    """The creates and updates Statuspage accepted, in order (not the look-ups)."""
    return [(r.method, r.body["incident"]) for r in fakes.statuspage.received if r.body]


def shown(fakes: Fakes) -> tuple[str, str, str]:
    """What customers see of the one public incident: status, impact, component status."""
    (incident,) = fakes.statuspage.incidents.values()
    return incident["status"], incident["impact"], fakes.statuspage.component_status


def resolved(s: IncidentSnapshot, clock: Clock) -> IncidentSnapshot:
    return dataclasses.replace(s, status="resolved", resolved_at=clock.t)


@pytest.mark.asyncio
async def test_a_storm_of_incidents_is_one_public_incident(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Forty incidents at once: one status-page incident, raised to P1 by one of them, and
    resolved only when the last of them resolves."""
    h = await started(tmp_path / "r.sqlite3", fakes, clock)
    h.worker.start()  # the real worker, delivering while the incidents arrive
    storm = [snapshot(clock, f"inc-{n}", severity=Severity.P2) for n in range(40)]
    try:
        await asyncio.gather(*(h.notifier.incident_opened(s) for s in storm))
        clock.advance(HOLD_OFF + 1)
        await settle(h)
        assert [m for m, _ in writes(fakes)] == ["POST"]
        assert shown(fakes) == ("investigating", "major", "partial_outage")

        worst = dataclasses.replace(storm[7], severity=Severity.P1)
        await h.notifier.incident_changed(worst)
        await settle(h)
        assert shown(fakes) == ("investigating", "critical", "major_outage")

        # The P1 one resolves first: the component returns to what the P2s cause; the
        # incident keeps the impact it reached (its history says how bad it got).
        await h.notifier.incident_resolved(resolved(worst, clock))
        await asyncio.gather(
            *(
                h.notifier.incident_resolved(resolved(s, clock))
                for s in storm[:39]
                if s is not storm[7]
            )
        )
        await settle(h)
        assert shown(fakes) == ("investigating", "critical", "partial_outage")

        await h.notifier.incident_resolved(resolved(storm[39], clock))
        await settle(h)
    finally:
        await h.close()
    assert shown(fakes) == ("resolved", "critical", "operational")
    methods = [m for m, _ in writes(fakes)]
    assert methods == ["POST", "PATCH", "PATCH", "PATCH"]
    # Customers hear of the integration, never of an alert's labels.
    for _, body in writes(fakes):
        assert "posthog-integration" not in body.get("body", "")
        assert "PostHogErrorsHigh" not in body.get("body", "")


async def settle(h: Harness) -> None:
    """Let the running worker deliver everything that is due."""
    for _ in range(500):
        messages = await h.messages("statuspage")
        due = [m for m in messages if m["state"] == "pending" and m["not_before"] <= h.clock.t]
        if not due:
            return
        h.worker.wake()
        await asyncio.sleep(0.01)
    raise AssertionError("the status page never caught up")


@pytest.mark.asyncio
async def test_p2_then_p1_raises_impact_and_component(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """An open P2 escalated to P1 raises the incident's impact and the component's status,
    without waiting for the hold-off of an incident that opened meanwhile."""
    h = await started(tmp_path / "r.sqlite3", fakes, clock)
    try:
        degraded = snapshot(clock, "inc-a", severity=Severity.P2)
        await h.notifier.incident_opened(degraded)
        clock.advance(HOLD_OFF + 1)
        await h.drain()
        await h.notifier.incident_opened(snapshot(clock, "inc-b", severity=Severity.P2))
        clock.advance(5)
        await h.notifier.incident_changed(dataclasses.replace(degraded, severity=Severity.P1))
        await h.drain()
    finally:
        await h.close()
    assert shown(fakes) == ("investigating", "critical", "major_outage")
    (create, raise_) = writes(fakes)
    assert create[1]["impact_override"] == "major"
    assert raise_[1]["impact_override"] == "critical"
    assert raise_[1]["components"] == {COMPONENT_ID: "major_outage"}
    assert "analytics features being unavailable" in raise_[1]["body"]


@pytest.mark.asyncio
async def test_state_loss_finds_the_public_incident_again(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """With the state directory lost, the unresolved status-page incident is found by our key
    in its metadata, updated and resolved; another unresolved incident is left alone."""
    fakes.statuspage.incidents["someone-elses"] = {
        "id": "someone-elses",
        "status": "identified",
        "impact": "minor",
        "metadata": {"jira": {"key": "OPS-1"}},
        "created_at": "0",
        "incident_updates": [],
    }
    first = await started(tmp_path / "before" / "r.sqlite3", fakes, clock)
    try:
        await first.notifier.incident_opened(snapshot(clock, "inc-a", severity=Severity.P2))
        clock.advance(HOLD_OFF + 1)
        await first.drain()
    finally:
        await first.close()
    (public_id,) = (i for i in fakes.statuspage.incidents if i != "someone-elses")
    assert fakes.statuspage.incidents[public_id]["metadata"] == {
        "posthog_receiver": {"key": f"posthog-integration/{COMPONENT_ID}"}
    }

    again = await started(tmp_path / "after" / "r.sqlite3", fakes, clock)  # nothing remembered
    try:
        reopened = snapshot(clock, "inc-a", severity=Severity.P1, verdict=Verdict.VENDOR_INCIDENT)
        await again.notifier.incident_opened(reopened)
        clock.advance(HOLD_OFF + 1)
        await again.drain()
        await again.notifier.incident_resolved(resolved(reopened, clock))
        await again.drain()
    finally:
        await again.close()
    assert [m for m, _ in writes(fakes)] == ["POST", "PATCH", "PATCH"]
    assert set(fakes.statuspage.incidents) == {public_id, "someone-elses"}
    updates = fakes.statuspage.incidents[public_id]["incident_updates"]
    assert [u["status"] for u in reversed(updates)] == ["investigating", "identified", "resolved"]
    assert fakes.statuspage.incidents[public_id]["impact"] == "critical"
    assert fakes.statuspage.incidents["someone-elses"]["status"] == "identified"


@pytest.mark.asyncio
async def test_a_flapping_incident_leaves_the_public_incident_alone(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A P1 resolved within its hold-off neither raises the open P2 story nor holds back the
    news of the incidents that are on the page."""
    h = await started(tmp_path / "r.sqlite3", fakes, clock)
    try:
        steady = snapshot(clock, "inc-steady", severity=Severity.P2)
        await h.notifier.incident_opened(steady)
        clock.advance(HOLD_OFF + 1)
        await h.drain()
        flapping = snapshot(clock, "inc-flap", severity=Severity.P1)
        await h.notifier.incident_opened(flapping)
        clock.advance(10)
        await h.notifier.incident_resolved(resolved(flapping, clock))
        await h.notifier.incident_resolved(resolved(steady, clock))
        await h.drain()
        assert shown(fakes) == ("resolved", "major", "operational")
        clock.advance(HOLD_OFF)
        await h.drain()
        skipped = {m["incident_id"] for m in await h.messages() if m["state"] == "skipped"}
    finally:
        await h.close()
    assert skipped == {"inc-flap"}
    assert [m for m, _ in writes(fakes)] == ["POST", "PATCH"]


@pytest.mark.asyncio
async def test_a_failed_create_is_retried_without_a_second_incident(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Statuspage rate limiting the storm's first create: retried, still one public incident."""
    fakes.statuspage.fail(420, retry_after="1", times=2)
    h = await started(tmp_path / "r.sqlite3", fakes, clock, hold_off_seconds=0)
    try:
        for n in range(5):
            await h.notifier.incident_opened(snapshot(clock, f"inc-{n}", severity=Severity.P2))
        for _ in range(4):
            await h.drain()
            clock.advance(1)
    finally:
        await h.close()
    assert len(fakes.statuspage.incidents) == 1
    assert [m for m, _ in writes(fakes)] == ["POST"]


@pytest.mark.asyncio
async def test_a_public_incident_deleted_on_the_page_is_opened_again(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Someone deletes the status-page incident while ours is open: the next news opens a new
    one instead of failing on the lost one forever."""
    h = await started(tmp_path / "r.sqlite3", fakes, clock, hold_off_seconds=0)
    try:
        degraded = snapshot(clock, "inc-a", severity=Severity.P2)
        await h.notifier.incident_opened(degraded)
        await h.drain()
        fakes.statuspage.incidents.clear()
        await h.notifier.incident_changed(dataclasses.replace(degraded, severity=Severity.P1))
        await h.drain()
        states = [m["state"] for m in await h.messages("statuspage")]
    finally:
        await h.close()
    assert states == ["sent", "sent"]
    assert shown(fakes) == ("investigating", "critical", "major_outage")
    assert fakes.statuspage.rejected == [(404, "no such incident")]
    assert [m for m, _ in writes(fakes)] == ["POST", "POST"]


def test_phase_is_the_least_advanced_of_the_worst() -> None:
    """Customers are not told 'monitoring' while a P1 is still investigated; a P2's phase
    does not hide the P1's."""
    story = PublicIncident(
        None,
        None,
        {
            "a": Contribution(Severity.P1, "monitoring", 1),
            "b": Contribution(Severity.P1, "investigating", 2),
            "c": Contribution(Severity.P2, "identified", 3),
            "d": Contribution(Severity.P3, "investigating", 4),
        },
    )
    told = story.telling((Severity.P1, Severity.P2), shown_impact=None)
    assert (told.status, told.impact, told.component_status) == (
        "investigating",
        "critical",
        "major_outage",
    )
    only_p2 = PublicIncident(None, None, {"c": Contribution(Severity.P2, "identified", 3)})
    told = only_p2.telling((Severity.P1, Severity.P2), shown_impact="critical")
    assert (told.status, told.impact, told.component_status) == (
        "identified",
        "critical",
        "partial_outage",
    )
