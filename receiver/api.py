"""Read-only HTTP endpoints: health, readiness, metrics, leadership and the incidents API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from receiver.keys import (
    DUTIES,
    LEADER,
    METRICS,
    OUTBOX,
    RESPONSE_TIMES,
    SETTINGS,
    SPOOL,
    STORE,
    WORKER,
)
from receiver.store import StoreUnavailable
from receiver.store.incidents import get_incident, list_incidents

__all__ = [
    "error",
    "healthz",
    "incident",
    "incidents",
    "leadership",
    "metrics",
    "readyz",
    "response_times",
]

# Kubernetes' default probe timeout is 1 s; answer before it gives up on us.
READY_CHECK_SECONDS = 0.9
INCIDENT_STATUSES = {"open", "resolved"}


def error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    """``status`` (to raise) with ``{"error": message}`` as a JSON body, as the webhook's."""
    return status(text=json.dumps({"error": message}), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store can commit, the spool takes webhooks (open, not full, its last
    write worked or a probe write does now) and, on the leader, the workers (incidents,
    notification outbox) run.

    A follower (another replica leads) is ready when the store commits: it takes webhooks and
    serves the API; its workers run only once it leads. A paused worker (maintenance mode) is
    ready: webhooks are still stored.
    """
    store_ok = False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(READY_CHECK_SECONDS):
            store_ok = await request.app[STORE].ping()
    worker = request.app[WORKER]
    leading = request.app[LEADER].is_leader
    checks: dict[str, bool] = {"store": store_ok}
    if leading:
        checks["worker"] = worker.alive and not worker.stalled
    spool = request.app.get(SPOOL)
    if spool is not None:  # none with PostgreSQL: webhooks go straight to the store
        checks["spool"] = await spool.writable()
    outbox = request.app.get(OUTBOX)
    if outbox is not None and leading:
        stall = request.app[SETTINGS].worker.stall_after_seconds
        checks["outbox"] = outbox.alive and time.monotonic() - outbox.heartbeat < stall
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        **checks,
        "paused": worker.paused,
        "leading": leading,
    }
    return web.json_response(body, status=200 if ready else 503)


async def leadership(request: web.Request) -> web.Response:
    """Which replica leads (as this one last saw it), in which term, and whether it is this one."""
    leader = request.app[LEADER]
    seen = leader.leader
    return web.json_response(
        {
            "replica": leader.holder,
            "leading": leader.is_leader,
            "leader": {"holder": seen.holder, "term": seen.term} if seen is not None else None,
            "duties_running": request.app[DUTIES].running,
            "backend": request.app[STORE].backend,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, from the application's own registry."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def incidents(request: web.Request) -> web.Response:
    """Incidents, newest first; ``?status=open|resolved`` and ``?limit=N`` (at most 1000)."""
    status = request.query.get("status")
    if status is not None and status not in INCIDENT_STATUSES:
        raise error(web.HTTPBadRequest, "status must be 'open' or 'resolved'")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise error(web.HTTPBadRequest, "limit must be an integer") from None
    limit = max(1, min(limit, 1000))
    try:
        rows = await request.app[STORE].read(
            lambda c: list_incidents(c, status=status, limit=limit)
        )
    except StoreUnavailable:
        raise error(web.HTTPServiceUnavailable, "store unavailable") from None
    return web.json_response({"incidents": rows})


async def incident(request: web.Request) -> web.Response:
    """One incident with its alerts and timeline; 404 if there is no such incident."""
    incident_id = request.match_info["id"]
    try:
        found = await request.app[STORE].read(lambda c: get_incident(c, incident_id))
    except StoreUnavailable:
        raise error(web.HTTPServiceUnavailable, "store unavailable") from None
    if found is None:
        raise error(web.HTTPNotFound, f"no incident {incident_id}")
    return web.json_response(found)


async def response_times(request: web.Request) -> web.Response:
    """The share of incidents acknowledged within the runbook's response time, per severity,
    over the incidents opened in the last 30 days."""
    try:
        report = await request.app[RESPONSE_TIMES].report()
    except StoreUnavailable:
        raise error(web.HTTPServiceUnavailable, "store unavailable") from None
    return web.json_response(report.as_dict())
