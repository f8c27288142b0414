"""PagerDuty webhooks (v3) in, and the response times they measure.

The real application runs behind a real HTTP server; PagerDuty is the fake sender in
``tests.fakes.pagerduty_webhooks``, which shapes and signs events as PagerDuty does. Time is
controlled through the events' own timestamps (``occurred_at``) and the worker's count of
overdue acknowledgements at a given moment: nothing sleeps.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from receiver.app import RecordingResponder, create_app
from receiver.config import Settings
from receiver.keys import METRICS, STORE
from receiver.notify.pagerduty import dedup_key
from receiver.runbook import RESPONSE_TIME, ErrorClass, Severity
from receiver.store.incidents import get_incident, open_incident_id, record_triage
from receiver.store.ui import opened_at
from tests.alertmanager_payloads import BEARER, TOKEN, alert, notification, wait_processed
from tests.fakes.pagerduty_webhooks import PagerDutyWebhooks

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]

SECRET = "whsec-current-3c1f0a9e"
NEXT_SECRET = "whsec-next-77d2b41c"
ROUTING_KEY = "R" * 32


def settings(tmp_path: Path, secrets: tuple[str, ...] = (SECRET,)) -> Settings:
    return Settings(
        webhook={"bearer_token": {"value": TOKEN}},
        store={"path": tmp_path / "receiver.sqlite3"},
        evidence={"directory": tmp_path / "evidence"},
        notify={
            "pagerduty": {
                "routing_key": {"value": ROUTING_KEY},
                "events_url": "http://127.0.0.1:9",
                "webhook": {"secrets": [{"value": s} for s in secrets], "max_body_bytes": 4096},
            }
        },
    )


async def client_for(
    aiohttp_client: ClientFactory, tmp_path: Path, secrets: tuple[str, ...] = (SECRET,)
) -> Client:
    return await aiohttp_client(
        create_app(settings(tmp_path, secrets), responder=RecordingResponder())
    )


def app_of(client: Client) -> web.Application:
    return client.server.app  # type: ignore[return-value]


async def open_incident(client: Client, group: str, severity: Severity) -> tuple[str, float]:
    """An incident opened by Alertmanager and triaged at ``severity``: its id and opening."""
    app = app_of(client)
    body = json.dumps(notification(group, [alert(f"{group}-1")])).encode()
    headers = {**BEARER, "Content-Type": "application/json"}
    resp = await client.post("/webhook/alertmanager", data=body, headers=headers)
    assert resp.status == 200
    await wait_processed(app)
    found = await app[STORE].read(lambda c: open_incident_id(c, group))
    assert found is not None
    incident_id = found
    opened = await app[STORE].read(lambda c: opened_at(c, incident_id))
    deadline = datetime.fromtimestamp(opened + RESPONSE_TIME[severity].total_seconds(), UTC)
    await app[STORE].write(
        functools.partial(
            record_triage,
            incident_id=incident_id,
            error_class=ErrorClass.UPSTREAM_ERROR,
            severity=severity,
            acknowledge_by=deadline,
            decision={"verdict": "unknown"},
        )
    )
    return incident_id, opened


async def send(client: Client, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    resp = await client.post("/webhook/pagerduty", data=body, headers=headers)
    return resp.status, await resp.json()


async def incident(client: Client, incident_id: str) -> dict[str, Any]:
    found = await app_of(client)[STORE].read(lambda c: get_incident(c, incident_id))
    assert found is not None
    return found


def pagerduty_entries(found: dict[str, Any]) -> list[str]:
    return [t["message"] for t in found["timeline"] if t["kind"] == "pagerduty"]


def sample(client: Client, name: str, **labels: str) -> float:
    value = app_of(client)[METRICS].registry.get_sample_value(name, labels)
    assert value is not None, f"{name} {labels} not exported"
    return value


@pytest.mark.asyncio
async def test_signed_acknowledgement_is_recorded_with_the_person(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """A valid acknowledgement lands on our incident's timeline and in the API, with who."""
    client = await client_for(aiohttp_client, tmp_path)
    incident_id, opened = await open_incident(client, "{}:{a}", Severity.P1)
    pd = PagerDutyWebhooks([SECRET])
    ack = pd.deliver("incident.acknowledged", at=opened + 300, incident_key=dedup_key(incident_id))
    assert await send(client, ack.body, ack.headers) == (200, {"status": "recorded"})

    found = await incident(client, incident_id)
    assert pagerduty_entries(found) == ["acknowledged in PagerDuty by Jane Doe"]
    assert found["acknowledgedBy"] == "Jane Doe"
    assert found["acknowledgedVia"] == "pagerduty"
    assert found["secondsToAcknowledge"] == pytest.approx(300, abs=0.01)
    acknowledged = [t for t in found["timeline"] if t["kind"] == "acknowledged"]
    assert acknowledged[0]["message"] == "acknowledged by Jane Doe after 5 min, in time"


@pytest.mark.asyncio
async def test_every_recorded_kind_reaches_the_timeline(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Reassigned, escalated, annotated and resolved are recorded; an annotation, which names
    only PagerDuty's incident, is matched through the incident matched before."""
    client = await client_for(aiohttp_client, tmp_path)
    incident_id, opened = await open_incident(client, "{}:{a}", Severity.P2)
    pd = PagerDutyWebhooks([SECRET])
    key = dedup_key(incident_id)
    for delivery in (
        pd.deliver("incident.reassigned", at=opened + 60, incident_key=key, assignee="Sam Roe"),
        pd.deliver("incident.escalated", at=opened + 120, incident_key=key, agent=None),
        pd.deliver("incident.annotated", at=opened + 180, incident_key=None, note="on it\nnow"),
        pd.deliver("incident.resolved", at=opened + 240, incident_key=key),
    ):
        assert await send(client, delivery.body, delivery.headers) == (200, {"status": "recorded"})

    assert pagerduty_entries(await incident(client, incident_id)) == [
        "reassigned in PagerDuty by Jane Doe, now assigned to Sam Roe",
        "escalated in PagerDuty, now assigned to Jane Doe",
        "note added in PagerDuty by Jane Doe: on it now",
        "resolved in PagerDuty by Jane Doe (this incident resolves when its alerts do)",
    ]
    # Only an acknowledgement acknowledges.
    assert (await incident(client, incident_id))["acknowledgedAt"] is None


@pytest.mark.asyncio
async def test_wrong_signature_is_refused(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    """A body signed with another secret, or altered after signing, is 401 and not recorded."""
    client = await client_for(aiohttp_client, tmp_path)
    incident_id, opened = await open_incident(client, "{}:{a}", Severity.P1)
    key = dedup_key(incident_id)
    forged = PagerDutyWebhooks(["not-our-secret"]).deliver(
        "incident.acknowledged", at=opened, incident_key=key
    )
    assert (await send(client, forged.body, forged.headers))[0] == 401
    genuine = PagerDutyWebhooks([SECRET]).deliver(
        "incident.acknowledged", at=opened, incident_key=key
    )
    altered = genuine.body.replace(b"Jane Doe", b"Mallory")
    assert (await send(client, altered, genuine.headers))[0] == 401
    assert pagerduty_entries(await incident(client, incident_id)) == []
    assert sample(client, "posthog_receiver_pagerduty_webhooks_total", outcome="unauthorized") == 2


@pytest.mark.asyncio
async def test_missing_or_malformed_header_is_refused(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """No signature header, an empty one, or one without a v1 signature is 401."""
    client = await client_for(aiohttp_client, tmp_path)
    incident_id, opened = await open_incident(client, "{}:{a}", Severity.P1)
    delivery = PagerDutyWebhooks([SECRET]).deliver(
        "incident.acknowledged", at=opened, incident_key=dedup_key(incident_id)
    )
    headers = {k: v for k, v in delivery.headers.items() if k != "X-PagerDuty-Signature"}
    assert (await send(client, delivery.body, headers))[0] == 401
    for value in ("", "v1=", "sha256=" + delivery.headers["X-PagerDuty-Signature"][3:]):
        sent = {**headers, "X-PagerDuty-Signature": value}
        assert (await send(client, delivery.body, sent))[0] == 401
    assert pagerduty_entries(await incident(client, incident_id)) == []


@pytest.mark.asyncio
async def test_rotating_secrets_on_either_side(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """While PagerDuty rotates (two signatures, one by a secret we do not have yet) and while
    we rotate (two secrets configured, the request signed by the second), events pass."""
    client = await client_for(aiohttp_client, tmp_path, secrets=(SECRET, NEXT_SECRET))
    incident_id, opened = await open_incident(client, "{}:{a}", Severity.P1)
    key = dedup_key(incident_id)
    theirs = PagerDutyWebhooks(["a-secret-we-never-saw", NEXT_SECRET]).deliver(
        "incident.reassigned", at=opened + 10, incident_key=key
    )
    assert "," in theirs.headers["X-PagerDuty-Signature"]
    assert await send(client, theirs.body, theirs.headers) == (200, {"status": "recorded"})
    ours = PagerDutyWebhooks([SECRET]).deliver(
        "incident.acknowledged", at=opened + 20, incident_key=key
    )
    assert await send(client, ours.body, ours.headers) == (200, {"status": "recorded"})
    assert len(pagerduty_entries(await incident(client, incident_id))) == 2


@pytest.mark.asyncio
async def test_someone_elses_incident_is_accepted_and_ignored(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Events for incidents that are not ours (another integration's key, a key of ours that
    names no incident, no key) are 200 and change nothing."""
    client = await client_for(aiohttp_client, tmp_path)
    incident_id, opened = await open_incident(client, "{}:{a}", Severity.P1)
    other = PagerDutyWebhooks([SECRET], pagerduty_id="PZZZZZZ")
    for key in ("baf7cf21b1da41b4b0221008339ff357", dedup_key("gone-1234"), None):
        delivery = other.deliver("incident.acknowledged", at=opened, incident_key=key)
        assert await send(client, delivery.body, delivery.headers) == (200, {"status": "ignored"})
    triggered = other.deliver("incident.triggered", at=opened, incident_key=dedup_key(incident_id))
    assert await send(client, triggered.body, triggered.headers) == (200, {"status": "ignored"})
    found = await incident(client, incident_id)
    assert pagerduty_entries(found) == []
    assert found["acknowledgedAt"] is None


@pytest.mark.asyncio
async def test_the_same_event_twice_changes_nothing(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """A redelivered event (same id) is answered 200 and recorded, counted and measured once."""
    client = await client_for(aiohttp_client, tmp_path)
    incident_id, opened = await open_incident(client, "{}:{a}", Severity.P1)
    ack = PagerDutyWebhooks([SECRET]).deliver(
        "incident.acknowledged", at=opened + 60, incident_key=dedup_key(incident_id)
    )
    assert await send(client, ack.body, ack.headers) == (200, {"status": "recorded"})
    before = await incident(client, incident_id)
    assert await send(client, ack.body, ack.headers) == (200, {"status": "duplicate"})
    assert await incident(client, incident_id) == before
    count = "posthog_receiver_time_to_acknowledge_seconds_count"
    assert sample(client, count, severity="P1") == 1


@pytest.mark.asyncio
async def test_malformed_and_oversized_bodies(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """A signed body that is not a v3 event is 400; a body over the limit is 413, unread."""
    client = await client_for(aiohttp_client, tmp_path)
    pd = PagerDutyWebhooks([SECRET])
    for body in (b"{not json", b'{"event": {"id": "X"}}', b"[]"):
        delivery = pd.signed(body)
        status, answer = await send(client, delivery.body, delivery.headers)
        assert status == 400
        assert answer["error"].startswith("not a PagerDuty v3 webhook event")
    bad_note = pd.deliver("incident.annotated", at=0, incident_key=None)
    event = json.loads(bad_note.body)
    event["event"]["data"]["incident"] = "PT4KHLK"
    delivery = pd.signed(json.dumps(event).encode())
    assert (await send(client, delivery.body, delivery.headers))[0] == 400
    big = pd.signed(b'{"event": "' + b"x" * 5000 + b'"}')
    assert (await send(client, big.body, big.headers))[0] == 413


@pytest.mark.asyncio
async def test_unconfigured_webhooks_refuse_everything(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Without configured secrets no signature can verify: every request is 401."""
    plain = Settings(
        webhook={"bearer_token": {"value": TOKEN}},
        store={"path": tmp_path / "receiver.sqlite3"},
        evidence={"directory": tmp_path / "evidence"},
    )
    client = await aiohttp_client(create_app(plain, responder=RecordingResponder()))
    delivery = PagerDutyWebhooks([SECRET]).deliver(
        "incident.acknowledged", at=0, incident_key=dedup_key("x")
    )
    assert (await send(client, delivery.body, delivery.headers))[0] == 401
