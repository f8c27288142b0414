"""Response times from scripted incidents: acknowledged in time and overdue, per severity.

The real application runs with the fake PagerDuty webhook sender; time is controlled through
the events' timestamps and the moment the worker counts overdue acknowledgements at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from receiver.keys import RESPONSE_TIMES, WORKER
from receiver.notify.pagerduty import dedup_key
from receiver.runbook import Severity
from tests.alertmanager_payloads import BEARER, alert, notification, wait_processed
from tests.fakes.pagerduty_webhooks import PagerDutyWebhooks
from tests.test_pagerduty_webhook import (
    SECRET,
    Client,
    ClientFactory,
    app_of,
    client_for,
    incident,
    open_incident,
    sample,
    send,
)

ACK = "posthog_receiver_time_to_acknowledge_seconds"
MITIGATE = "posthog_receiver_time_to_mitigate_seconds"
OVERDUE = "posthog_receiver_acknowledgements_overdue"


async def acknowledge(client: Client, incident_id: str, at: float) -> None:
    delivery = PagerDutyWebhooks([SECRET]).deliver(
        "incident.acknowledged", at=at, incident_key=dedup_key(incident_id)
    )
    assert await send(client, delivery.body, delivery.headers) == (200, {"status": "recorded"})


@pytest.mark.asyncio
async def test_every_severity_is_exported_from_the_start(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Before any incident, both histograms and the overdue gauge exist for P1-P4 at 0, and
    the buckets hold the runbook's response times."""
    client = await client_for(aiohttp_client, tmp_path)
    for severity in Severity:
        assert sample(client, f"{ACK}_count", severity=severity.value) == 0
        assert sample(client, f"{MITIGATE}_count", severity=severity.value) == 0
        assert sample(client, OVERDUE, severity=severity.value) == 0
        for bound in ("900.0", "3600.0", "14400.0", "86400.0"):
            assert sample(client, f"{ACK}_bucket", severity=severity.value, le=bound) == 0


@pytest.mark.asyncio
async def test_acknowledged_in_time_and_overdue_per_severity(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """A P1 acknowledged after 10 minutes is in time; a P2 left for 2 hours is overdue (the
    gauge says so until it is acknowledged) and its late acknowledgement counts as missed."""
    client = await client_for(aiohttp_client, tmp_path)
    app = app_of(client)
    p1, p1_opened = await open_incident(client, "{}:{a}", Severity.P1)
    p2, p2_opened = await open_incident(client, "{}:{b}", Severity.P2)

    await acknowledge(client, p1, p1_opened + 600)
    assert sample(client, f"{ACK}_bucket", severity="P1", le="900.0") == 1
    assert sample(client, f"{ACK}_bucket", severity="P1", le="300.0") == 0

    await app[WORKER].count_overdue(at=p2_opened + 30 * 60)
    assert sample(client, OVERDUE, severity="P2") == 0  # still within its hour
    await app[WORKER].count_overdue(at=p2_opened + 2 * 3600)
    assert sample(client, OVERDUE, severity="P2") == 1
    assert sample(client, OVERDUE, severity="P1") == 0  # acknowledged

    await acknowledge(client, p2, p2_opened + 2 * 3600)
    await app[WORKER].count_overdue(at=p2_opened + 2 * 3600 + 1)
    assert sample(client, OVERDUE, severity="P2") == 0
    assert sample(client, f"{ACK}_bucket", severity="P2", le="3600.0") == 0
    assert sample(client, f"{ACK}_bucket", severity="P2", le="7200.0") == 1
    late = [t for t in (await incident(client, p2))["timeline"] if t["kind"] == "acknowledged"]
    assert late[0]["data"]["in_time"] is False

    report = (await app[RESPONSE_TIMES].report(at=p2_opened + 3 * 3600)).as_dict()
    by_severity = {s["severity"]: s for s in report["severities"]}
    assert report["days"] == 30
    assert (by_severity["P1"]["met"], by_severity["P1"]["shareMet"]) == (1, 1.0)
    assert (by_severity["P2"]["missed"], by_severity["P2"]["shareMet"]) == (1, 0.0)
    assert by_severity["P1"]["medianSecondsToAcknowledge"] == pytest.approx(600, abs=0.01)
    assert by_severity["P3"] == {
        "severity": "P3",
        "targetSeconds": 14400.0,
        "incidents": 0,
        "met": 0,
        "missed": 0,
        "pending": 0,
        "shareMet": None,
        "medianSecondsToAcknowledge": None,
        "medianSecondsToMitigate": None,
    }


@pytest.mark.asyncio
async def test_unacknowledged_incident_past_its_deadline_is_missed_not_pending(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """An open incident nobody acknowledged is pending while in time, missed after."""
    client = await client_for(aiohttp_client, tmp_path)
    _, opened = await open_incident(client, "{}:{a}", Severity.P3)
    times = app_of(client)[RESPONSE_TIMES]
    in_time = (await times.report(at=opened + 3600)).severities[2]
    assert (in_time.pending, in_time.missed) == (1, 0)
    late = (await times.report(at=opened + 5 * 3600)).severities[2]
    assert (late.pending, late.missed, late.share_met) == (0, 1, 0.0)
    # Older than the 30 days reported: not counted at all.
    assert (await times.report(at=opened + 31 * 86400)).severities[2].incidents == 0


@pytest.mark.asyncio
async def test_recovery_mitigates_and_is_measured_once(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Resolving every alert mitigates the incident: time to mitigate is on the incident and
    counted at its severity, once."""
    client = await client_for(aiohttp_client, tmp_path)
    incident_id, _ = await open_incident(client, "{}:{a}", Severity.P4)
    resolved = notification(
        "{}:{a}", [alert("{}:{a}-1", "resolved", ends_at="2026-01-05T10:05:00Z")]
    )
    headers = {**BEARER, "Content-Type": "application/json"}
    resp = await client.post("/webhook/alertmanager", data=json.dumps(resolved), headers=headers)
    assert resp.status == 200
    await wait_processed(app_of(client))
    found = await incident(client, incident_id)
    assert found["mitigatedAt"] is not None
    assert found["secondsToMitigate"] is not None
    assert [t["data"]["how"] for t in found["timeline"] if t["kind"] == "mitigated"] == [
        "recovered"
    ]
    assert sample(client, f"{MITIGATE}_count", severity="P4") == 1


@pytest.mark.asyncio
async def test_approval_hook_acknowledges_once(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """An approval on our page acknowledges through the same hook; the first acknowledgement
    (PagerDuty's, later) is the one measured."""
    client = await client_for(aiohttp_client, tmp_path)
    incident_id, opened = await open_incident(client, "{}:{a}", Severity.P2)
    times = app_of(client)[RESPONSE_TIMES]
    first = await times.acknowledged(incident_id, "Ana Lee", opened + 120, "approval")
    assert first is not None
    assert first.in_time is True
    assert first.seconds == pytest.approx(120)
    await acknowledge(client, incident_id, opened + 900)
    found = await incident(client, incident_id)
    assert (found["acknowledgedBy"], found["acknowledgedVia"]) == ("Ana Lee", "approval")
    assert sample(client, f"{ACK}_count", severity="P2") == 1
    with pytest.raises(LookupError):
        await times.acknowledged("no-such-incident", "Ana Lee", opened, "approval")
