"""Storing a triage result on an incident: severity only rises, the deadline only nears."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from receiver.alertmanager import WebhookPayload
from receiver.config import StoreSettings
from receiver.runbook import ErrorClass, Severity
from receiver.store import Store
from receiver.store.incidents import apply_notification, get_incident, record_triage

OPENED = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
DECISION = {"verdict": "our_integration", "summary": "key rotated", "steps": []}


def payload() -> WebhookPayload:
    return WebhookPayload.model_validate(
        {
            "version": "4",
            "groupKey": '{}:{alertname="PostHogErrors"}',
            "status": "firing",
            "receiver": "posthog",
            "groupLabels": {"alertname": "PostHogErrors"},
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "PostHogErrors", "status_code": "401"},
                    "startsAt": "2026-11-23T05:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": "f1",
                }
            ],
        }
    )


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(StoreSettings(path=tmp_path / "state.sqlite3"))
    await s.open()
    yield s
    await s.close()


async def open_incident(store: Store) -> str:
    outcome = await store.write(lambda conn: apply_notification(conn, payload()))
    assert outcome.incident_id is not None
    return outcome.incident_id


async def triage(
    store: Store, incident_id: str, severity: Severity, deadline: datetime, **extra: Any
) -> dict[str, Any]:
    def fn(conn: sqlite3.Connection) -> None:
        record_triage(
            conn,
            incident_id,
            error_class=extra.get("error_class", ErrorClass.AUTH),
            severity=severity,
            acknowledge_by=deadline,
            decision=extra.get("decision", DECISION),
        )

    await store.write(fn)
    incident = await store.read(lambda conn: get_incident(conn, incident_id))
    assert incident is not None
    return incident


@pytest.mark.asyncio
async def test_triage_is_stored_and_shown(store: Store) -> None:
    """Class, severity, deadline and decision land on the incident and its timeline."""
    incident_id = await open_incident(store)
    got = await triage(store, incident_id, Severity.P2, OPENED + timedelta(hours=1))
    assert (got["errorClass"], got["severity"]) == ("auth", "P2")
    assert got["acknowledgeBy"] == "2026-11-23T06:00:00Z"
    assert got["decision"] == DECISION
    entry = got["timeline"][-1]
    assert entry["kind"] == "triage"
    assert entry["data"]["verdict"] == "our_integration"


@pytest.mark.asyncio
async def test_severity_rises_and_the_rise_is_recorded(store: Store) -> None:
    """A more severe triage raises the severity, brings the deadline closer, and says so."""
    incident_id = await open_incident(store)
    await triage(store, incident_id, Severity.P3, OPENED + timedelta(hours=4))
    got = await triage(store, incident_id, Severity.P1, OPENED + timedelta(minutes=15))
    assert got["severity"] == "P1"
    assert got["acknowledgeBy"] == "2026-11-23T05:15:00Z"
    kinds = [t["kind"] for t in got["timeline"]]
    assert kinds.count("severity_raised") == 1
    raised = next(t for t in got["timeline"] if t["kind"] == "severity_raised")
    assert raised["data"] == {"from": "P3", "to": "P1"}


@pytest.mark.asyncio
async def test_severity_never_drops(store: Store) -> None:
    """A less severe triage later keeps the higher severity and the earlier deadline."""
    incident_id = await open_incident(store)
    await triage(store, incident_id, Severity.P1, OPENED + timedelta(minutes=15))
    got = await triage(
        store,
        incident_id,
        Severity.P4,
        OPENED + timedelta(days=1),
        error_class=ErrorClass.NETWORK,
        decision={"verdict": "intermittent", "summary": "fine now", "steps": []},
    )
    assert got["severity"] == "P1"
    assert got["acknowledgeBy"] == "2026-11-23T05:15:00Z"
    # The class and the decision are the latest ones.
    assert got["errorClass"] == "network"
    assert got["decision"]["verdict"] == "intermittent"
    last = got["timeline"][-1]["data"]
    assert (last["severity"], last["assessed_severity"]) == ("P1", "P4")
    assert "severity_raised" not in [t["kind"] for t in got["timeline"]]


@pytest.mark.asyncio
async def test_unknown_incident_is_an_error(store: Store) -> None:
    """Recording triage for an incident that does not exist raises LookupError."""
    with pytest.raises(LookupError):
        await triage(store, "inc-missing", Severity.P1, OPENED)
