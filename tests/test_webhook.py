"""``POST /webhook/alertmanager`` through a real HTTP server: every refusal, storage, repeats."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ClientFactory, RecordingResponder
from tests.helpers import (
    TOKEN,
    alert,
    basic,
    bearer,
    notification,
    wait_until,
)
from tests.store_outsider import holding_write_lock

WEBHOOK = "/webhook/alertmanager"
Client = TestClient[Any, Any]


async def post(client: Client, body: Any, headers: dict[str, str] | None = None) -> Any:
    resp = await client.post(WEBHOOK, json=body, headers=bearer() if headers is None else headers)
    return resp.status, await resp.json()


async def metric(client: Client, line_prefix: str) -> float | None:
    """The value of the first /metrics sample whose line starts with ``line_prefix``."""
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


async def incidents(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/api/incidents", headers=bearer())
    assert resp.status == 200
    found: list[dict[str, Any]] = (await resp.json())["incidents"]
    return found


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param(bearer(), 200, id="bearer-right"),
        pytest.param(basic(), 200, id="basic-right"),
        pytest.param({"Authorization": f"bearer {TOKEN}"}, 200, id="bearer-scheme-any-case"),
        pytest.param(bearer("wrong-token"), 401, id="bearer-wrong"),
        pytest.param(bearer(TOKEN + "x"), 401, id="bearer-longer"),
        pytest.param({}, 401, id="missing"),
        pytest.param({"Authorization": ""}, 401, id="empty"),
        pytest.param({"Authorization": f"Token {TOKEN}"}, 401, id="wrong-scheme"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, 401, id="token-as-basic"),
        pytest.param(basic(password="wrong"), 401, id="basic-wrong-password"),
        pytest.param(basic(user="someone"), 401, id="basic-wrong-user"),
        pytest.param({"Authorization": "Basic !!!notbase64"}, 401, id="basic-malformed"),
    ],
)
async def test_webhook_authentication(client: Client, headers: dict[str, str], status: int) -> None:
    """Only the configured bearer token or basic credentials are accepted; the rest get 401."""
    resp = await client.post(WEBHOOK, json=notification([alert("a1")]), headers=headers)
    assert resp.status == status
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in await resp.text()


@pytest.mark.asyncio
async def test_oversized_body_by_content_length_is_413(client: Client) -> None:
    """A body announced larger than server.max_body_bytes is refused with 413 before reading."""
    big = notification([alert("a1", annotations={"description": "x" * 20_000})])
    status, body = await post(client, big)
    assert status == 413
    assert "larger than 16384 bytes" in body["error"]
    assert await metric(client, 'posthog_receiver_webhooks_total{outcome="too_large"}') == 1


@pytest.mark.asyncio
async def test_oversized_chunked_body_is_413(client: Client) -> None:
    """A chunked body (no Content-Length) is cut off with 413 once it passes the limit."""
    raw = json.dumps(notification([alert("a1", annotations={"x": "y" * 40_000})])).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 4096):
            yield raw[i : i + 4096]

    resp = await client.post(
        WEBHOOK,
        data=chunks(),
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert await incidents(client) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_wrong_content_type_is_415(client: Client, content_type: str) -> None:
    """Anything but application/json is refused with 415."""
    resp = await client.post(
        WEBHOOK,
        data=json.dumps(notification([alert("a1")])),
        headers={**bearer(), "Content-Type": content_type},
    )
    assert resp.status == 415
    assert (await resp.json())["error"] == "expected application/json"


@pytest.mark.asyncio
@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"version": "4",}', b""])
async def test_malformed_json_is_400(client: Client, raw: bytes) -> None:
    """A body that is not JSON gets 400 'malformed JSON'."""
    resp = await client.post(
        WEBHOOK, data=raw, headers={**bearer(), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "malformed JSON"


@pytest.mark.asyncio
@pytest.mark.parametrize("version", ["3", "5", 4])
async def test_wrong_version_is_400_with_a_clear_message(client: Client, version: Any) -> None:
    """A payload version other than "4" gets 400 saying which version is accepted."""
    status, body = await post(client, notification([alert("a1")], version=version))
    assert status == 400
    assert body["error"] == (
        "unsupported payload version: this receiver accepts Alertmanager webhook version 4"
    )


def _without(data: dict[str, Any], *path: str | int) -> dict[str, Any]:
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return data


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "where"),
    [
        (_without(notification([alert("a1")]), "groupKey"), "groupKey"),
        (_without(notification([alert("a1")]), "alerts", 0, "fingerprint"), "alerts.0.fingerprint"),
        (_without(notification([alert("a1")]), "alerts", 0, "startsAt"), "alerts.0.startsAt"),
        ({**notification([alert("a1")]), "alerts": []}, "alerts"),
        ({**notification([alert("a1")]), "status": "pending"}, "status"),
        (notification([alert("a1", status="unknown")]), "alerts.0.status"),
        (notification([{**alert("a1"), "startsAt": "yesterday"}]), "alerts.0.startsAt"),
        (notification([{**alert("a1"), "labels": {"x": 1}}]), "alerts.0.labels.x"),
        ([notification([alert("a1")])], "(top level)"),
    ],
)
async def test_schema_errors_are_400_naming_the_field(
    client: Client, body: Any, where: str
) -> None:
    """A payload that does not match the version-4 schema gets 400 naming the field."""
    status, answer = await post(client, body)
    assert status == 400
    assert answer["error"].startswith("invalid payload: ")
    if where != "(top level)":
        assert f": {where}:" in answer["error"]
    assert await incidents(client) == []


@pytest.mark.asyncio
async def test_stored_notification_becomes_an_incident(client: Client) -> None:
    """A valid notification is answered 200 'stored' and turned into an open incident."""
    status, body = await post(client, notification([alert("a1"), alert("b2")]))
    assert (status, body) == (200, {"status": "stored", "alerts": 2})
    found = await wait_until(lambda: incidents(client), bool, what="an incident")
    assert found[0]["status"] == "open"
    assert found[0]["title"] == "PostHogErrorsHigh"


@pytest.mark.asyncio
async def test_repeated_notification_is_200_and_processed_once(
    make_client: ClientFactory,
) -> None:
    """The same notification twice: both 200, the second 'duplicate', one change recorded."""
    responder = RecordingResponder()
    client = await make_client(responder=responder)
    body = notification([alert("a1")])
    assert await post(client, body) == (200, {"status": "stored", "alerts": 1})
    assert await post(client, body) == (200, {"status": "duplicate", "alerts": 1})
    found = await wait_until(lambda: incidents(client), bool, what="an incident")
    await wait_until(lambda: _responded(responder), bool, what="the responder called")
    detail = await (await client.get(f"/api/incidents/{found[0]['id']}", headers=bearer())).json()
    assert [t["kind"] for t in detail["timeline"]] == ["incident", "alert_firing"]
    assert [e.kind for e in responder.events] == ["opened"]
    assert await metric(client, 'posthog_receiver_webhooks_total{outcome="duplicate"}') == 1
    assert await metric(client, 'posthog_receiver_webhooks_total{outcome="stored"}') == 1


async def _responded(responder: Any) -> bool:
    return bool(responder.events)


@pytest.mark.asyncio
async def test_resend_with_changed_annotations_and_truncation_is_a_duplicate(
    client: Client,
) -> None:
    """A resend that differs only in annotations, URLs or truncatedAlerts is the same news."""
    first = notification([alert("a1"), alert("b2")])
    resend = notification(
        [
            alert("b2", annotations={"description": "rate is now 0.31"}),
            alert("a1", annotations={"summary": "changed"}),
        ],
        truncated_alerts=3,
    )
    resend["externalURL"] = "http://other-peer:9093"
    resend["alerts"][0]["generatorURL"] = "http://prometheus-1:9090/graph"
    assert (await post(client, first))[1]["status"] == "stored"
    assert (await post(client, resend))[1]["status"] == "duplicate"


@pytest.mark.asyncio
async def test_a_changed_alert_state_is_not_a_duplicate(client: Client) -> None:
    """The same group with one alert resolved is new news and is stored."""
    assert (await post(client, notification([alert("a1"), alert("b2")])))[1]["status"] == "stored"
    changed = notification([alert("a1"), alert("b2", status="resolved")])
    assert (await post(client, changed))[1]["status"] == "stored"


@pytest.mark.asyncio
async def test_webhooks_are_acknowledged_while_the_store_cannot_commit_and_applied_after(
    client: Client, tmp_path: Path
) -> None:
    """While another process holds the database's write lock, webhooks are still spooled and
    answered 200; the store is reported not ready; once the lock is gone they are applied."""
    with holding_write_lock(tmp_path / "receiver.sqlite3"):
        for name in ("a1", "b2"):
            assert await post(client, notification([alert(name)], group_key=name)) == (
                200,
                {"status": "stored", "alerts": 1},
            )
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["store"] is False
        assert await metric(client, "posthog_receiver_spool_bytes") > 0
    found = await wait_until(
        lambda: incidents(client), lambda found: len(found) == 2, what="both incidents"
    )
    assert sorted(i["groupKey"] for i in found) == ["a1", "b2"]
    assert await metric(client, "posthog_receiver_spool_bytes") == 0
    assert (await client.get("/readyz")).status == 200


@pytest.mark.asyncio
async def test_a_full_spool_answers_503_then_takes_the_retry(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    """Webhooks the store cannot take yet fill the spool up to ``store.spool_max_mib``; past it
    they get 503 (Alertmanager retries) and the spool is not ready. Once the store commits
    again the spool drains and the retry is stored: nothing acknowledged is lost."""
    client = await make_client(store={"spool_max_mib": 1, "spool_segment_mib": 1})
    filler = "x" * 12_000  # about 12 KB per notification: about 85 fill the spool
    accepted: list[str] = []
    with holding_write_lock(tmp_path / "receiver.sqlite3"):
        for n in range(200):
            body = notification([alert(f"f{n}", annotations={"filler": filler})], group_key=f"g{n}")
            status, answer = await post(client, body)
            if status == 503:
                assert answer == {"error": "temporarily unable to store; retry"}
                refused = body
                break
            assert status == 200
            accepted.append(f"g{n}")
        else:
            raise AssertionError("the spool never filled")
        assert 60 < len(accepted) < 100
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["spool"] is False
    assert await metric(client, 'posthog_receiver_webhooks_total{outcome="unavailable"}') == 1
    await wait_until(
        lambda: metric(client, "posthog_receiver_spool_bytes"), lambda v: v == 0, what="drained"
    )
    assert (await post(client, refused))[1]["status"] == "stored"
    found = await wait_until(
        lambda: incidents(client),
        lambda found: len(found) == len(accepted) + 1,
        what="every acknowledged notification applied",
    )
    assert {i["groupKey"] for i in found} == {*accepted, refused["groupKey"]}
    assert (await client.get("/readyz")).status == 200
