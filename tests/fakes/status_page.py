"""A fake of PostHog's status page, in the Statuspage v2 format status.posthog.com serves.

``/api/v2/status.json`` and ``/api/v2/summary.json`` answer exactly the documents Statuspage
serves (page, status, and for the summary components, incidents and scheduled maintenances).
``mode`` makes it misbehave: ``slow`` (answers after ``delay`` seconds), ``malformed`` (a
truncated JSON body), ``error`` (``error_status`` with an HTML body, like a CDN error page).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.fakes.http import FakeServer

PAGE = {
    "id": "0jfx2cblhcw3",
    "name": "PostHog",
    "url": "https://status.posthog.com",
    "time_zone": "Etc/UTC",
    "updated_at": "2026-11-23T05:12:44.012Z",
}
DESCRIPTIONS = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
}


def component(name: str, status: str = "operational") -> dict[str, Any]:
    return {
        "id": f"c-{zlib.crc32(name.encode()):08x}",
        "name": name,
        "status": status,
        "created_at": "2021-03-02T10:00:00.000Z",
        "updated_at": "2026-11-23T05:10:00.000Z",
        "position": 1,
        "description": None,
        "showcase": True,
        "start_date": None,
        "group_id": None,
        "page_id": PAGE["id"],
        "group": False,
        "only_show_if_degraded": False,
    }


def incident(name: str, *, status: str = "investigating", impact: str = "major") -> dict[str, Any]:
    incident_id = f"i-{zlib.crc32(name.encode()):08x}"
    return {
        "id": incident_id,
        "name": name,
        "status": status,
        "created_at": "2026-11-23T04:58:00.000Z",
        "updated_at": "2026-11-23T05:10:00.000Z",
        "monitoring_at": None,
        "resolved_at": None,
        "impact": impact,
        "shortlink": "https://stspg.io/abc123",
        "started_at": "2026-11-23T04:55:00.000Z",
        "page_id": PAGE["id"],
        "incident_updates": [
            {
                "id": f"u-{incident_id}",
                "status": status,
                "body": "We are investigating elevated error rates on event ingestion.",
                "incident_id": incident_id,
                "created_at": "2026-11-23T04:58:00.000Z",
                "updated_at": "2026-11-23T04:58:00.000Z",
                "display_at": "2026-11-23T04:58:00.000Z",
                "affected_components": [],
                "deliver_notifications": True,
                "custom_tweet": None,
                "tweet_id": None,
            }
        ],
        "components": [],
    }


@dataclass
class FakeStatusPage:
    indicator: str = "none"
    description: str | None = None
    incidents: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(
        default_factory=lambda: [component("Event ingestion"), component("App")]
    )
    mode: Literal["ok", "slow", "malformed", "error"] = "ok"
    delay: float = 5.0
    error_status: int = 503
    requests: list[str] = field(default_factory=list)
    server: FakeServer = field(default_factory=FakeServer)

    def __post_init__(self) -> None:
        self.server.app.router.add_get("/api/v2/status.json", self._status)
        self.server.app.router.add_get("/api/v2/summary.json", self._summary)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    def url(self, document: Literal["status", "summary"] = "status") -> str:
        return f"{self.server.base_url}/api/v2/{document}.json"

    def _status_doc(self) -> dict[str, Any]:
        description = self.description or DESCRIPTIONS.get(self.indicator, "Unknown")
        return {"page": PAGE, "status": {"indicator": self.indicator, "description": description}}

    async def _answer(self, request: web.Request, document: dict[str, Any]) -> web.Response:
        self.requests.append(request.path)
        if self.mode == "slow":
            await self.server.stall(self.delay)
        if self.mode == "error":
            return web.Response(
                status=self.error_status,
                text="<html><body>Service Unavailable</body></html>",
                content_type="text/html",
            )
        body = json.dumps(document)
        if self.mode == "malformed":
            body = body[: len(body) // 2]
        return web.Response(text=body, content_type="application/json")

    async def _status(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._status_doc())

    async def _summary(self, request: web.Request) -> web.Response:
        doc = self._status_doc()
        return await self._answer(
            request,
            {
                "page": doc["page"],
                "components": self.components,
                "incidents": self.incidents,
                "scheduled_maintenances": [],
                "status": doc["status"],
            },
        )
