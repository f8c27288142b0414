"""Liveness, readiness and metrics, through a real HTTP server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.store.incidents import IncidentEvent
from tests.conftest import ClientFactory
from tests.helpers import alert, bearer, notification, wait_until
from tests.store_outsider import holding_write_lock

Client = TestClient[Any, Any]


class HangingResponder:
    """A responder stuck on an outside call that never answers (until released)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, event: IncidentEvent) -> None:
        self.entered.set()
        await self.release.wait()


async def readiness(client: Client) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/readyz")
    return resp.status, await resp.json()


@pytest.mark.asyncio
async def test_healthz_answers_without_credentials(client: Client) -> None:
    """GET /healthz is 200 with no credentials."""
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


@pytest.mark.asyncio
async def test_readyz_is_200_when_store_and_worker_work(client: Client) -> None:
    """GET /readyz is 200 when the store commits and the worker runs."""
    status, body = await readiness(client)
    assert status == 200
    assert body == {**body, "status": "ready", "store": True, "worker": True, "paused": False}


@pytest.mark.asyncio
async def test_readyz_is_503_while_the_store_cannot_commit(client: Client, tmp_path: Path) -> None:
    """GET /readyz is 503 naming the store while another process holds the write lock."""
    with holding_write_lock(tmp_path / "receiver.sqlite3"):
        status, body = await readiness(client)
    assert (status, body["store"], body["worker"]) == (503, False, True)
    assert (await readiness(client))[0] == 200


@pytest.mark.asyncio
async def test_readyz_is_503_while_the_worker_is_stalled(make_client: ClientFactory) -> None:
    """GET /readyz is 503 naming the worker when it has not finished a pass for too long."""
    responder = HangingResponder()
    client = await make_client(
        responder=responder, worker={"poll_interval_seconds": 0.05, "stall_after_seconds": 0.3}
    )
    resp = await client.post(
        "/webhook/alertmanager", json=notification([alert("a1")]), headers=bearer()
    )
    assert resp.status == 200
    await asyncio.wait_for(responder.entered.wait(), timeout=10)
    _, body = await wait_until(lambda: readiness(client), lambda r: r[0] == 503, what="not ready")
    assert (body["store"], body["worker"]) == (True, False)
    responder.release.set()
    await wait_until(lambda: readiness(client), lambda r: r[0] == 200, what="ready again")


@pytest.mark.asyncio
async def test_paused_worker_stores_but_does_not_process(make_client: ClientFactory) -> None:
    """With worker.paused, webhooks are stored (200, ready) but no incident is opened."""
    client = await make_client(worker={"paused": True})
    resp = await client.post(
        "/webhook/alertmanager", json=notification([alert("a1")]), headers=bearer()
    )
    assert (resp.status, (await resp.json())["status"]) == (200, "stored")
    status, body = await readiness(client)
    assert status == 200
    assert body == {**body, "status": "ready", "store": True, "worker": True, "paused": True}

    async def metrics() -> str:
        return await (await client.get("/metrics")).text()

    await wait_until(metrics, lambda t: "posthog_receiver_inbox_depth 1.0" in t, what="backlog")
    listing = await client.get("/api/incidents", headers=bearer())
    assert (await listing.json())["incidents"] == []


@pytest.mark.asyncio
async def test_paused_worker_reports_the_backlog_left_by_the_last_run(
    make_client: ClientFactory,
) -> None:
    """A receiver started paused over an inbox with pending webhooks reports that backlog
    without any new webhook arriving."""
    paused = await make_client(worker={"paused": True})
    for name in ("a1", "b2"):
        body = notification([alert(name)], group_key=name)
        resp = await paused.post("/webhook/alertmanager", json=body, headers=bearer())
        assert resp.status == 200

    async def metrics(client: Client) -> str:
        return await (await client.get("/metrics")).text()

    await wait_until(
        lambda: metrics(paused), lambda t: "posthog_receiver_inbox_depth 2.0" in t, what="backlog"
    )
    await paused.close()
    restarted = await make_client(worker={"paused": True})
    await wait_until(
        lambda: metrics(restarted),
        lambda t: "posthog_receiver_inbox_depth 2.0" in t,
        what="backlog after the restart",
    )


@pytest.mark.asyncio
async def test_metrics_report_webhooks_alerts_inbox_and_latency(client: Client) -> None:
    """GET /metrics has webhooks by outcome, alert changes by status, inbox depth, latency."""
    await client.post("/webhook/alertmanager", json=notification([alert("a1")]), headers=bearer())
    await client.post("/webhook/alertmanager", json=notification([alert("a1")]), headers=bearer())
    await client.post("/webhook/alertmanager", json=notification([alert("a1")]))

    async def metrics() -> str:
        resp = await client.get("/metrics")
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return await resp.text()

    text = await wait_until(
        metrics, lambda t: "posthog_receiver_processing_seconds_count 1.0" in t, what="applied"
    )
    for sample in [
        'posthog_receiver_webhooks_total{outcome="stored"} 1.0',
        'posthog_receiver_webhooks_total{outcome="duplicate"} 1.0',
        'posthog_receiver_webhooks_total{outcome="unauthorized"} 1.0',
        'posthog_receiver_alert_changes_total{status="firing"} 1.0',
        'posthog_receiver_incidents_total{transition="opened"} 1.0',
        "posthog_receiver_inbox_depth 0.0",
        'posthog_receiver_processing_seconds_bucket{le="+Inf"} 1.0',
    ]:
        assert sample in text.splitlines()
    assert "# TYPE posthog_receiver_processing_seconds histogram" in text
    assert "test-webhook-token" not in text
