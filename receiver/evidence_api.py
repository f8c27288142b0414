"""HTTP endpoints for an incident's evidence: the postmortem draft, its chart, the bundle.

``ROUTES`` are registered by ``create_app``, whose lifecycle builds the collector (shared
with the responder) once the store and the cluster connection are open. Evidence is collected
on demand when an incident has no bundle yet, so these endpoints may take as long as one
collection; they sit under ``/api/`` and so behind the API's credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from receiver.api import error
from receiver.evidence import EvidenceCollector, IncidentNotFound
from receiver.store import StoreUnavailable

__all__ = ["EVIDENCE", "ROUTES"]

EVIDENCE = web.AppKey("evidence", EvidenceCollector)
T = TypeVar("T")


async def _answer(
    request: web.Request, produce: Callable[[EvidenceCollector, str], Awaitable[T]]
) -> T:
    """``produce(collector, incident_id)``, its domain errors mapped to 404 and 503."""
    incident_id = request.match_info["id"]
    try:
        return await produce(request.app[EVIDENCE], incident_id)
    except IncidentNotFound:
        raise error(web.HTTPNotFound, f"no incident {incident_id}") from None
    except StoreUnavailable:
        raise error(web.HTTPServiceUnavailable, "store unavailable") from None


async def postmortem(request: web.Request) -> web.Response:
    """The postmortem draft in Markdown (its chart is ``chart.svg`` beside it)."""
    text = await _answer(request, EvidenceCollector.postmortem)
    return web.Response(text=text, content_type="text/markdown", charset="utf-8")


async def chart(request: web.Request) -> web.Response:
    """The error-rate chart over the incident, actions marked (SVG)."""
    svg = await _answer(request, EvidenceCollector.chart)
    return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8")


async def evidence(request: web.Request) -> web.FileResponse:
    """The incident's latest evidence bundle (.tar.gz)."""
    path = await _answer(request, EvidenceCollector.bundle)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/gzip",
            "Content-Disposition": f'attachment; filename="{path.name}"',
        },
    )


# The evidence endpoints, registered by ``create_app``; its lifecycle sets ``app[EVIDENCE]``.
ROUTES = (
    web.get("/api/incidents/{id}/postmortem", postmortem),
    web.get("/api/incidents/{id}/chart.svg", chart),
    web.get("/api/incidents/{id}/evidence", evidence),
)
