"""From notifications to incidents, observed through the HTTP API: the per-fingerprint diff."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.keys import STORE
from tests.conftest import ClientFactory, RecordingResponder
from tests.helpers import alert, basic, bearer, json_error, notification, wait_until

Client = TestClient[Any, Any]
WEBHOOK = "/webhook/alertmanager"


async def send(client: Client, alerts: list[dict[str, Any]]) -> None:
    resp = await client.post(WEBHOOK, json=notification(alerts), headers=bearer())
    assert resp.status == 200, await resp.text()


async def listing(client: Client, query: str = "") -> list[dict[str, Any]]:
    resp = await client.get(f"/api/incidents{query}", headers=bearer())
    assert resp.status == 200
    found: list[dict[str, Any]] = (await resp.json())["incidents"]
    return found


async def detail(client: Client, incident_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/incidents/{incident_id}", headers=bearer())
    assert resp.status == 200
    found: dict[str, Any] = await resp.json()
    return found


async def settled(client: Client, count: int = 1) -> dict[str, Any]:
    """Wait until ``count`` notifications are applied; return the newest incident in full."""
    await processed(client, count)
    newest = await listing(client)
    assert newest, "no incident"
    return await detail(client, newest[0]["id"])


def statuses(incident: dict[str, Any]) -> dict[str, str]:
    return {a["fingerprint"]: a["status"] for a in incident["alerts"]}


async def processed(client: Client, count: int) -> None:
    """Wait until the worker has applied ``count`` stored notifications."""

    async def applied() -> float:
        text = await (await client.get("/metrics")).text()
        for line in text.splitlines():
            if line.startswith("posthog_receiver_processing_seconds_count "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    await wait_until(applied, lambda n: n >= count, what=f"{count} notifications applied")


@pytest.mark.asyncio
async def test_alert_lifecycle_is_diffed_per_fingerprint(make_client: ClientFactory) -> None:
    """Absent alerts stay firing; only 'resolved' resolves; the incident resolves with its last
    alert; a new firing after that opens a new incident."""
    responder = RecordingResponder()
    client = await make_client(responder=responder)
    a_start, b_start = "2026-11-23T05:00:00Z", "2026-11-23T05:01:00Z"

    await send(client, [alert("a1", starts_at=a_start), alert("b2", starts_at=b_start)])
    first = await settled(client)
    assert first["status"] == "open"
    assert statuses(first) == {"a1": "firing", "b2": "firing"}

    # b2 is missing from the next notification of the group: that is not a resolution.
    await send(client, [alert("a1", starts_at=a_start, annotations={"summary": "still bad"})])
    await processed(client, 2)
    assert statuses(await detail(client, first["id"])) == {"a1": "firing", "b2": "firing"}

    await send(client, [alert("a1", status="resolved", starts_at=a_start)])
    await processed(client, 3)
    after_a = await detail(client, first["id"])
    assert after_a["status"] == "open"
    assert statuses(after_a) == {"a1": "resolved", "b2": "firing"}
    a1 = next(a for a in after_a["alerts"] if a["fingerprint"] == "a1")
    assert a1["startsAt"] == "2026-11-23T05:00:00+00:00"
    assert a1["endsAt"] == "2026-11-23T05:10:00+00:00"
    assert a1["labels"]["alertname"] == "PostHogErrorsHigh"

    await send(
        client,
        [
            alert("a1", status="resolved", starts_at=a_start),
            alert("b2", status="resolved", starts_at=b_start),
        ],
    )
    await processed(client, 4)
    resolved = await detail(client, first["id"])
    assert resolved["status"] == "resolved"
    assert resolved["resolvedAt"] is not None
    kinds = [t["kind"] for t in resolved["timeline"]]
    assert kinds == [
        "incident",
        "alert_firing",
        "alert_firing",
        "alert_resolved",
        "alert_resolved",
        "incident",
        "mitigated",  # by recovery: nothing mitigated it before
    ]

    await send(client, [alert("a1", starts_at="2026-11-23T06:00:00Z")])
    await processed(client, 5)
    incidents = await listing(client)
    assert len(incidents) == 2
    reopened = next(i for i in incidents if i["id"] != first["id"])
    assert reopened["status"] == "open"
    assert (await listing(client, "?status=resolved"))[0]["id"] == first["id"]
    assert (await listing(client, "?status=open"))[0]["id"] == reopened["id"]

    await wait_until(lambda: _kinds(responder), lambda k: len(k) == 5, what="5 responder events")
    assert responder.events[0].incident_id == first["id"]
    assert [e.kind for e in responder.events] == [
        "opened",
        "alerts_changed",  # a1 resolved; nothing for the notification that merely lacked b2
        "alerts_changed",  # b2 resolved
        "resolved",
        "opened",
    ]


async def _kinds(responder: RecordingResponder) -> list[str]:
    return [e.kind for e in responder.events]


@pytest.mark.asyncio
async def test_resolution_for_an_unknown_group_opens_nothing(client: Client) -> None:
    """A 'resolved' notification for a group with no open incident creates no incident."""
    await send(client, [alert("a1", status="resolved")])
    await processed(client, 1)
    assert await listing(client) == []


@pytest.mark.asyncio
async def test_incident_detail_lists_alerts_with_their_fields(client: Client) -> None:
    """GET /api/incidents/{id} lists each alert's fingerprint, labels, status, startsAt/endsAt."""
    await send(client, [alert("a1", labels={"status_code": "429"})])
    incident = await settled(client)
    assert incident["groupKey"].endswith('{alertname="PostHogErrorsHigh"}')
    assert incident["externalURL"] == "http://alertmanager.example.com:9093"
    [only] = incident["alerts"]
    assert only["fingerprint"] == "a1"
    assert only["status"] == "firing"
    assert only["labels"]["status_code"] == "429"
    assert only["startsAt"] == "2026-11-23T05:00:00+00:00"
    assert only["endsAt"] is None  # Alertmanager's zero time means "not ended"


@pytest.mark.asyncio
async def test_unknown_incident_is_404(client: Client) -> None:
    """An incident id that does not exist is 404, with a JSON error naming it."""
    resp = await client.get("/api/incidents/inc-000000000000", headers=bearer())
    assert resp.status == 404
    assert await json_error(resp) == "no incident inc-000000000000"


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/api/incidents", "/api/incidents/inc-000000000000"])
async def test_incident_api_requires_credentials(client: Client, path: str) -> None:
    """Incident data needs the webhook's credentials: none or wrong get 401, basic works."""
    assert (await client.get(path)).status == 401
    assert (await client.get(path, headers=bearer("nope"))).status == 401
    assert (await client.get("/api/incidents", headers=basic())).status == 200


@pytest.mark.asyncio
async def test_incident_api_can_be_left_open(make_client: ClientFactory) -> None:
    """With webhook.protect_api false, /api/* answers without credentials."""
    client = await make_client(webhook={"protect_api": False})
    assert (await client.get("/api/incidents")).status == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?status=closed", "status must be 'open' or 'resolved'"),
        ("?limit=many", "limit must be an integer"),
    ],
)
async def test_bad_incident_query_is_400(client: Client, query: str, message: str) -> None:
    """An unknown status filter or a non-numeric limit is 400, with a JSON error."""
    resp = await client.get(f"/api/incidents{query}", headers=bearer())
    assert resp.status == 400
    assert await json_error(resp) == message


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/api/incidents", "/api/incidents/inc-000000000000"])
async def test_unavailable_store_is_503(client: Client, path: str) -> None:
    """A store that cannot be read answers 503, with a JSON error."""
    await client.server.app[STORE].close()
    resp = await client.get(path, headers=bearer())
    assert resp.status == 503
    assert await json_error(resp) == "store unavailable"
