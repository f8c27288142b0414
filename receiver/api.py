"""Read-only HTTP endpoints: health, readiness, metrics and the incidents API."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from receiver.incidents import get_incident, list_incidents
from receiver.keys import METRICS, OUTBOX, STORE, WORKER
from receiver.store import StoreUnavailable

__all__ = ["healthz", "incident", "incidents", "metrics", "readyz"]

WORKER_STALL_SECONDS = 120.0
INCIDENT_STATUSES = {"open", "resolved"}


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers and the workers (incidents, notification outbox) run."""
    store_ok = await request.app[STORE].ping()
    worker = request.app[WORKER]
    worker_ok = worker.alive and time.monotonic() - worker.heartbeat < WORKER_STALL_SECONDS
    body: dict[str, object] = {"store": store_ok, "worker": worker_ok}
    outbox = request.app.get(OUTBOX)
    if outbox is not None:
        body["outbox"] = outbox.alive and time.monotonic() - outbox.heartbeat < WORKER_STALL_SECONDS
    ready = all(body.values())
    body["status"] = "ready" if ready else "not ready"
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def incidents(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in INCIDENT_STATUSES:
        raise web.HTTPBadRequest(text="status must be 'open' or 'resolved'")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    limit = max(1, min(limit, 1000))
    try:
        rows = await request.app[STORE].read(
            lambda c: list_incidents(c, status=status, limit=limit)
        )
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="store unavailable") from None
    return web.json_response({"incidents": rows})


async def incident(request: web.Request) -> web.Response:
    incident_id = request.match_info["id"]
    try:
        found = await request.app[STORE].read(lambda c: get_incident(c, incident_id))
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="store unavailable") from None
    if found is None:
        raise web.HTTPNotFound(text=f"no incident {incident_id}")
    return web.json_response(found)
