"""A fake Atlassian Statuspage manage API v1 (incidents), as strict as its contract.

``Authorization: OAuth <key>`` on every request (401 otherwise); ``POST
/v1/pages/{page_id}/incidents`` creates (201, with the incident's ``id``), ``PATCH
.../incidents/{incident_id}`` updates (200) and ``GET .../incidents/unresolved`` lists the
incidents not resolved, newest first, ``per_page`` (1 to 100) at a time from ``page`` (1 on);
``GET /v1/pages/{page_id}`` and ``GET .../components/{component_id}`` read the page and a
component; unknown pages, components and incidents are 404. Incident fields are checked:
``name`` required on create and at most 255 characters, ``status`` one of
investigating/identified/monitoring/resolved, ``impact_override`` in its enum, ``body`` at
most 25000 characters, ``components`` mapping known component ids to a component status,
``metadata`` an object of objects (namespaces) of plain values. ``impact`` follows
``impact_override``; ``metadata`` is kept and listed.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeService

STATUSES = {"investigating", "identified", "monitoring", "resolved"}
IMPACTS = {"none", "maintenance", "minor", "major", "critical"}
COMPONENT_STATUSES = {
    "operational",
    "under_maintenance",
    "degraded_performance",
    "partial_outage",
    "major_outage",
}
INCIDENT_KEYS = {
    "name",
    "status",
    "impact_override",
    "body",
    "components",
    "component_ids",
    "deliver_notifications",
    "metadata",
}


class FakeStatuspage(FakeService):
    def __init__(self, api_key: str, page_id: str, component_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.page_id = page_id
        self.component_id = component_id
        self.component_status = "operational"
        self.incidents: dict[str, dict[str, Any]] = {}
        self.app.router.add_post("/v1/pages/{page_id}/incidents", self._create)
        self.app.router.add_get("/v1/pages/{page_id}/incidents/unresolved", self._unresolved)
        self.app.router.add_patch("/v1/pages/{page_id}/incidents/{incident_id}", self._update)
        self.app.router.add_get("/v1/pages/{page_id}", self._page)
        self.app.router.add_get("/v1/pages/{page_id}/components/{component_id}", self._component)

    def _check(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"OAuth {self.api_key}":
            return self.reject(401, "bad credentials", as_json={"error": "Could not authenticate"})
        if request.match_info["page_id"] != self.page_id:
            return self.reject(404, "no such page", as_json={"error": "Not found"})
        return None

    def _invalid(self, reason: str) -> web.Response:
        return self.reject(422, reason, as_json={"error": [reason]})

    def _validate(self, incident: Any, *, create: bool) -> str | None:
        if not isinstance(incident, dict):
            return "'incident' must be an object"
        if unknown := set(incident) - INCIDENT_KEYS:
            return f"unknown incident fields {sorted(unknown)}"
        name = incident.get("name")
        if create and name is None:
            return "name can't be blank"
        if name is not None and (not isinstance(name, str) or not name or len(name) > 255):
            return "name must be 1 to 255 characters"
        if "status" in incident and incident["status"] not in STATUSES:
            return "status is not a realtime incident status"
        if "impact_override" in incident and incident["impact_override"] not in IMPACTS:
            return "impact_override is not valid"
        if "body" in incident and (
            not isinstance(incident["body"], str) or len(incident["body"]) > 25000
        ):
            return "body must be a string of at most 25000 characters"
        components = incident.get("components", {})
        if not isinstance(components, dict):
            return "components must be an object"
        for cid, status in components.items():
            if cid != self.component_id:
                return f"unknown component {cid}"
            if status not in COMPONENT_STATUSES:
                return f"component status {status!r} is not valid"
        ids = incident.get("component_ids", [])
        if not isinstance(ids, list) or any(cid != self.component_id for cid in ids):
            return "component_ids must list known components"
        if "deliver_notifications" in incident and not isinstance(
            incident["deliver_notifications"], bool
        ):
            return "deliver_notifications must be a boolean"
        if "metadata" in incident:
            return _metadata_problem(incident["metadata"])
        return None

    async def _body(self, request: web.Request) -> tuple[Any, web.Response | None]:
        body, problem = await self.read_json(request)
        if problem:
            return None, self.reject(400, problem, as_json={"error": problem})
        if not isinstance(body, dict) or "incident" not in body:
            return None, self.reject(400, "missing 'incident'", as_json={"error": "bad request"})
        return body, None

    def _apply(self, incident: dict[str, Any], change: dict[str, Any]) -> None:
        for key in ("name", "status", "impact_override", "metadata"):
            if key in change:
                incident[key] = change[key]
        if "impact_override" in change:
            incident["impact"] = change["impact_override"]
        if change.get("components"):
            self.component_status = change["components"][self.component_id]
            incident["components"] = [{"id": self.component_id, "status": self.component_status}]
        incident["incident_updates"].insert(
            0, {"status": incident["status"], "body": change.get("body", "")}
        )

    async def _create(self, request: web.Request) -> web.Response:
        if problem := self._check(request):
            return problem
        body, bad = await self._body(request)
        if bad:
            return bad
        if reason := self._validate(body["incident"], create=True):
            return self._invalid(reason)
        self.record(request, body)
        incident_id = secrets.token_hex(6)
        incident: dict[str, Any] = {
            "id": incident_id,
            "page_id": self.page_id,
            "status": "investigating",
            "impact": "none",
            "metadata": {},
            "created_at": f"{self.clock():017.6f}",
            "components": [],
            "incident_updates": [],
            "shortlink": f"https://stspg.io/{incident_id}",
        }
        self._apply(incident, body["incident"])
        self.incidents[incident_id] = incident
        return web.json_response(incident, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        if problem := self._check(request):
            return problem
        incident = self.incidents.get(request.match_info["incident_id"])
        if incident is None:
            return self.reject(404, "no such incident", as_json={"error": "Not found"})
        body, bad = await self._body(request)
        if bad:
            return bad
        if reason := self._validate(body["incident"], create=False):
            return self._invalid(reason)
        self.record(request, body)
        self._apply(incident, body["incident"])
        return web.json_response(incident, status=200)

    async def _unresolved(self, request: web.Request) -> web.Response:
        if problem := self._check(request):
            return problem
        try:
            page = int(request.query.get("page", "1"))
            per_page = int(request.query.get("per_page", "100"))
        except ValueError:
            return self.reject(400, "page and per_page must be integers", as_json={"error": "x"})
        if page < 1 or not 1 <= per_page <= 100:
            return self.reject(400, "page or per_page out of range", as_json={"error": "x"})
        self.record(request, None)
        open_ones = [i for i in self.incidents.values() if i["status"] != "resolved"]
        open_ones.sort(key=lambda i: i["created_at"], reverse=True)
        return web.json_response(open_ones[(page - 1) * per_page : page * per_page])

    async def _page(self, request: web.Request) -> web.Response:
        if problem := self._check(request):
            return problem
        self.record(request, None)
        return web.json_response(
            {"id": self.page_id, "name": "Example Status", "url": "https://status.example.com"}
        )

    async def _component(self, request: web.Request) -> web.Response:
        if problem := self._check(request):
            return problem
        if request.match_info["component_id"] != self.component_id:
            return self.reject(404, "no such component", as_json={"error": "Not found"})
        self.record(request, None)
        return web.json_response(
            {
                "id": self.component_id,
                "page_id": self.page_id,
                "name": "PostHog integration",
                "status": self.component_status,
            }
        )

    def unresolved(self) -> list[dict[str, Any]]:
        """The incidents customers see as still open."""
        return [i for i in self.incidents.values() if i["status"] != "resolved"]


def _metadata_problem(metadata: Any) -> str | None:
    """Statuspage's metadata: an object whose values are objects (namespaces) of plain values."""
    if not isinstance(metadata, dict):
        return "metadata must be an object"
    for namespace, values in metadata.items():
        if not isinstance(values, dict):
            return f"metadata {namespace} must be an object"
        for value in values.values():
            if not isinstance(value, str | int | float | bool):
                return f"metadata {namespace} values must be strings, numbers or booleans"
    return None
