"""The OpenAPI description against the running service.

Every documented operation has a driver below that makes the real application (through a
real HTTP server) produce every status code documented for it; each response is validated
against the description (status documented, media type, headers, body schema) by
``openapi-core``. A documented status that cannot be produced, an undocumented one, or a body
that does not match fails here.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

from receiver import __version__
from receiver import web as ui
from receiver.app import create_app
from receiver.config import NotifySettings
from receiver.keys import SETTINGS, SPOOL, STORE
from receiver.notify.pagerduty import dedup_key
from receiver.openapi import SPEC_RESOURCE, load_spec
from tests.alertmanager_payloads import (
    BASIC_PASSWORD,
    BASIC_USER,
    BEARER,
    alert,
    basic_header,
    notification,
    receiver_settings,
    served_app,
    wait_processed,
)
from tests.fakes.pagerduty_webhooks import Delivery, PagerDutyWebhooks

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def documented_operations() -> dict[tuple[str, str], set[int]]:
    """(method, path template) -> documented status codes, from the shipped description."""
    found: dict[tuple[str, str], set[int]] = {}
    for path, item in load_spec()["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                found[(method.upper(), path)] = {int(code) for code in operation["responses"]}
    return found


class Contract:
    """Sends requests to the app and validates each response against the description."""

    openapi = OpenAPI.from_dict(load_spec())

    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client
        self.seen: set[int] = set()

    @property
    def app(self) -> web.Application:
        return self.client.server.app  # type: ignore[return-value]

    async def call(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        valid_request: bool = False,
    ) -> tuple[int, bytes, str]:
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = content_type
        async with self.client.request(
            method, path, headers=sent, params=params, data=body
        ) as resp:
            data = await resp.read()
            status, received_type = resp.status, resp.headers.get("Content-Type", "")
            received_headers = dict(resp.headers)
        request = MockRequest(
            "http://localhost",
            method.lower(),
            path,
            args=params,
            headers=sent,
            data=body,
            content_type=content_type,
        )
        if valid_request:  # what the description promises to accept, it must describe
            self.openapi.validate_request(request)
        response = MockResponse(
            data, status_code=status, headers=received_headers, content_type=received_type
        )
        self.openapi.validate_response(request, response)
        self.seen.add(status)
        return status, data, received_type

    async def status(self, method: str, path: str, **kwargs: Any) -> int:
        """Only the status of a validated exchange."""
        return (await self.call(method, path, **kwargs))[0]

    async def webhook(self, payload: dict[str, Any]) -> tuple[int, Any]:
        status, data, _ = await self.call(
            "POST",
            "/webhook/alertmanager",
            headers=BEARER,
            body=json.dumps(payload).encode(),
            valid_request=payload.get("version") == "4",
        )
        return status, json.loads(data)

    async def incident_ids(self) -> dict[str, str]:
        """Open one incident and one that resolves; their ids by status."""
        assert (await self.webhook(notification("{}:{a}", [alert("a1")])))[0] == 200
        firing = notification("{}:{b}", [alert("b1"), alert("b2")])
        assert (await self.webhook(firing))[0] == 200
        resolved = notification(
            "{}:{b}",
            [
                alert("b1", "resolved", ends_at="2026-01-05T10:05:00Z"),
                alert("b2", "resolved", ends_at="2026-01-05T10:06:00Z"),
            ],
        )
        assert (await self.webhook(resolved))[0] == 200
        await wait_processed(self.app)
        status, data, _ = await self.call("GET", "/api/incidents", headers=BEARER)
        assert status == 200
        return {i["status"]: i["id"] for i in json.loads(data)["incidents"]}

    async def close_store(self) -> None:
        """Make the store unavailable, as a full disk or a dead writer would."""
        await self.app[STORE].close()

    async def close_spool(self) -> None:
        """Make the spool unable to take webhooks, as a dead writer would."""
        await asyncio.to_thread(self.app[SPOOL].close)


Driver = Callable[[Contract], Awaitable[None]]
DRIVERS: dict[tuple[str, str], Driver] = {}


def drives(method: str, path: str) -> Callable[[Driver], Driver]:
    def register(fn: Driver) -> Driver:
        DRIVERS[(method, path)] = fn
        return fn

    return register


@drives("POST", "/webhook/alertmanager")
async def _webhook(c: Contract) -> None:
    payload = notification('{}:{alertname="PostHogErrors"}', [alert("f1"), alert("f2")])
    assert await c.webhook(payload) == (200, {"status": "stored", "alerts": 2})
    assert await c.webhook(payload) == (200, {"status": "duplicate", "alerts": 2})
    body = json.dumps(payload).encode()
    path = "/webhook/alertmanager"
    as_basic = basic_header(BASIC_USER, BASIC_PASSWORD)
    other = json.dumps(notification("g2", [alert("x")])).encode()
    assert await c.status("POST", path, headers=as_basic, body=other) == 200
    assert await c.status("POST", path, headers=BEARER, body=b"{not json") == 400
    assert (await c.webhook({**payload, "version": "3"}))[0] == 400
    assert await c.status("POST", path, body=body) == 401
    assert await c.status("POST", path, headers={"Authorization": "Bearer wrong"}, body=body) == 401
    assert await c.status("POST", path, headers=BEARER, body=body, content_type="text/plain") == 415
    limit = c.app[SETTINGS].server.max_body_bytes
    assert await c.status("POST", path, headers=BEARER, body=b"{" + b" " * limit + b"}") == 413
    await c.close_spool()
    new = notification("g3", [alert("y")])
    assert (await c.webhook(new))[0] == 503


@drives("POST", "/webhook/pagerduty")
async def _pagerduty_webhook(c: Contract) -> None:
    # Signed events need configured secrets: the same application with PagerDuty set up.
    settings = receiver_settings(Path(tempfile.mkdtemp()))
    secret = "whsec-contract-5e1d"
    settings = settings.model_copy(
        update={
            "notify": NotifySettings(
                pagerduty={
                    "routing_key": {"value": "R" * 32},
                    "events_url": "http://127.0.0.1:9",
                    "webhook": {"secrets": [{"value": secret}], "max_body_bytes": 2048},
                }
            )
        }
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        pd = Contract(client)
        ids = await pd.incident_ids()
        sender = PagerDutyWebhooks([secret])
        path = "/webhook/pagerduty"

        async def send(delivery: Delivery, *, valid: bool = True) -> tuple[int, Any]:
            status, data, _ = await pd.call(
                "POST", path, headers=delivery.headers, body=delivery.body, valid_request=valid
            )
            return status, json.loads(data)

        ack = sender.deliver("incident.acknowledged", at=0, incident_key=dedup_key(ids["open"]))
        assert await send(ack) == (200, {"status": "recorded"})
        assert await send(ack) == (200, {"status": "duplicate"})
        other = PagerDutyWebhooks([secret], pagerduty_id="PZZZZZZ").deliver(
            "incident.acknowledged", at=0, incident_key="not-ours"
        )
        assert await send(other) == (200, {"status": "ignored"})
        assert (await send(sender.signed(b"{not json"), valid=False))[0] == 400
        forged = PagerDutyWebhooks(["another-secret"]).deliver(
            "incident.acknowledged", at=0, incident_key=dedup_key(ids["open"])
        )
        assert (await send(forged))[0] == 401
        big = sender.signed(b'{"event": "' + b"x" * 4096 + b'"}')
        assert (await send(big, valid=False))[0] == 413
        await pd.close_store()
        late = sender.deliver("incident.escalated", at=0, incident_key=dedup_key(ids["open"]))
        assert (await send(late))[0] == 503
    c.seen |= pd.seen


@drives("GET", "/api/response-times")
async def _response_times(c: Contract) -> None:
    await c.incident_ids()
    status, data, _ = await c.call("GET", "/api/response-times", headers=BEARER)
    assert status == 200
    assert [s["severity"] for s in json.loads(data)["severities"]] == ["P1", "P2", "P3", "P4"]
    assert await c.status("GET", "/api/response-times") == 401
    await c.close_store()
    assert await c.status("GET", "/api/response-times", headers=BEARER) == 503


@drives("GET", "/api/leadership")
async def _leadership(c: Contract) -> None:
    status, data, _ = await c.call("GET", "/api/leadership", headers=BEARER)
    assert status == 200
    body = json.loads(data)
    # SQLite: the one replica leads in term 1, and runs the leader's loops.
    assert body["leading"] is True
    assert body["leader"] == {"holder": body["replica"], "term": 1}
    assert body["duties_running"] is True
    assert await c.status("GET", "/api/leadership") == 401


@drives("GET", "/healthz")
async def _healthz(c: Contract) -> None:
    assert await c.status("GET", "/healthz") == 200


@drives("GET", "/readyz")
async def _readyz(c: Contract) -> None:
    assert await c.status("GET", "/readyz") == 200
    await c.close_store()
    assert await c.status("GET", "/readyz") == 503


@drives("GET", "/metrics")
async def _metrics(c: Contract) -> None:
    status, data, content_type = await c.call("GET", "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert b"posthog_receiver_webhooks_total" in data


@drives("GET", "/api/incidents")
async def _incidents(c: Contract) -> None:
    ids = await c.incident_ids()
    everything = set(ids.values())
    for params, expected in [
        ({}, everything),
        ({"status": "open"}, {ids["open"]}),
        ({"status": "resolved", "limit": "5"}, {ids["resolved"]}),
    ]:
        status, data, _ = await c.call("GET", "/api/incidents", headers=BEARER, params=params)
        assert status == 200
        assert {i["id"] for i in json.loads(data)["incidents"]} == expected
    for limit in ("0", "1", "-5"):  # clamped to at least one
        status, data, _ = await c.call(
            "GET", "/api/incidents", headers=BEARER, params={"limit": limit}
        )
        assert status == 200
        assert len(json.loads(data)["incidents"]) == 1
    for bad in ({"status": "closed"}, {"limit": "ten"}):
        assert await c.status("GET", "/api/incidents", headers=BEARER, params=bad) == 400
    assert await c.status("GET", "/api/incidents") == 401
    await c.close_store()
    assert await c.status("GET", "/api/incidents", headers=BEARER) == 503


@drives("GET", "/api/incidents/{id}")
async def _incident(c: Contract) -> None:
    ids = await c.incident_ids()
    for incident_id in ids.values():
        status, data, _ = await c.call("GET", f"/api/incidents/{incident_id}", headers=BEARER)
        assert status == 200
        assert json.loads(data)["alerts"]
    assert await c.status("GET", f"/api/incidents/{ids['open']}") == 401
    assert await c.status("GET", "/api/incidents/inc-nosuchthing", headers=BEARER) == 404
    await c.close_store()
    assert await c.status("GET", f"/api/incidents/{ids['open']}", headers=BEARER) == 503


async def _incident_artifact(c: Contract, suffix: str) -> bytes:
    """Drive one of an incident's documents through 200, 401, 404 and 503; its content."""
    ids = await c.incident_ids()
    path = f"/api/incidents/{ids['resolved']}/{suffix}"
    status, data, _ = await c.call("GET", path, headers=BEARER)
    assert status == 200
    assert await c.status("GET", path) == 401
    assert await c.status("GET", f"/api/incidents/inc-nosuchthing/{suffix}", headers=BEARER) == 404
    await c.close_store()
    assert await c.status("GET", f"/api/incidents/{ids['open']}/{suffix}", headers=BEARER) == 503
    return data


@drives("GET", "/api/incidents/{id}/postmortem")
async def _postmortem(c: Contract) -> None:
    assert (await _incident_artifact(c, "postmortem")).startswith(b"#")


@drives("GET", "/api/incidents/{id}/chart.svg")
async def _chart(c: Contract) -> None:
    assert b"<svg" in await _incident_artifact(c, "chart.svg")


@drives("GET", "/api/incidents/{id}/evidence")
async def _evidence(c: Contract) -> None:
    with tarfile.open(fileobj=io.BytesIO(await _incident_artifact(c, "evidence"))) as bundle:
        assert bundle.getnames()


@drives("POST", "/api/drills")
async def _drills(c: Contract) -> None:
    result = json.dumps(
        {"drill": "drill-20261205T010000Z", "steps": 19, "failed": ["Health URL: read"]}
    ).encode()
    path = "/api/drills"
    assert await c.status("POST", path, headers=BEARER, body=result, valid_request=True) == 204
    assert await c.status("POST", path, headers=BEARER, body=b'{"steps": 1}') == 400
    assert await c.status("POST", path, body=result) == 401


@drives("GET", "/openapi.json")
async def _openapi_json(c: Contract) -> None:
    status, data, _ = await c.call("GET", "/openapi.json")
    assert status == 200
    assert json.loads(data) == load_spec()


@drives("GET", "/openapi.yaml")
async def _openapi_yaml(c: Contract) -> None:
    status, data, _ = await c.call("GET", "/openapi.yaml")
    assert status == 200
    assert yaml.safe_load(data) == load_spec()


def test_description_is_valid_openapi_3_1() -> None:
    """The shipped description is a valid OpenAPI 3.1 document."""
    spec = load_spec()
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_description_is_shipped_in_the_package() -> None:
    """The description is a file of the package, and carries the package version."""
    shipped = Path(__file__).parents[1] / "receiver" / SPEC_RESOURCE
    assert yaml.safe_load(shipped.read_text(encoding="utf-8"))["paths"] == load_spec()["paths"]
    assert load_spec()["info"]["version"] == __version__


def test_every_documented_operation_is_driven() -> None:
    """Each documented operation has a driver here, and each driver a documented operation."""
    assert set(DRIVERS) == set(documented_operations())


def test_every_route_of_the_app_is_documented(tmp_path: Path) -> None:
    """Every route the application serves is described (none is left out of the contract),
    except the web UI's HTML pages and their static files (tests/test_web_ui.py)."""
    app = served_app(tmp_path)
    pages = {(r.method, r.path) for r in ui.ROUTES} | {("GET", "/static/{name}")}
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    } - pages
    assert served == set(documented_operations())


@pytest.mark.parametrize(
    ("method", "path"),
    [pytest.param(m, p, id=f"{m} {p}") for m, p in sorted(documented_operations())],
)
@pytest.mark.asyncio
async def test_operation_conforms(
    method: str, path: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Every documented status of the operation is produced, and every response conforms."""
    client = await aiohttp_client(served_app(tmp_path))
    contract = Contract(client)
    await DRIVERS[(method, path)](contract)
    assert contract.seen == documented_operations()[(method, path)]
