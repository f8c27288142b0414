"""The pages: incident list, incident page, operations view, and what they load.

Every page needs a viewer (:mod:`receiver.web.access`); an incident's page and what it loads
(chart, evidence) also open with a signed link to that incident. A page polled with
``?fragment=live`` answers only its live part, which ``ui.js`` swaps in: the page follows the
incident without a reload, and reads the same without JavaScript.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import structlog
from aiohttp import web
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from receiver import links
from receiver.evidence import IncidentNotFound
from receiver.evidence_api import EVIDENCE
from receiver.keys import OUTBOX, SETTINGS, STORE, WORKER
from receiver.runbook import Severity
from receiver.store import StoreUnavailable
from receiver.store import approvals as approval
from receiver.store.audit import AuditEntry
from receiver.store.runtime_switches import set_runtime_kill_switch
from receiver.web import decisions, queries, views
from receiver.web.access import Access, Viewer
from receiver.web.keys import ACCESS

__all__ = [
    "chart",
    "decide_approval",
    "evidence",
    "incident",
    "incidents",
    "kill_switch",
    "operations",
]

logger = structlog.get_logger(__name__)

STATUSES = ("open", "resolved")
SEVERITIES = tuple(s.value for s in Severity)


def _access(request: web.Request) -> Access:
    return request.app[ACCESS]


async def _read(request: web.Request, fn: Any) -> Any:
    try:
        return await request.app[STORE].read(fn)
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="The store is unavailable; try again.\n") from None


def _render(
    request: web.Request, template: str, viewer: Viewer, context: dict[str, Any]
) -> web.Response:
    fragment = request.query.get("fragment") == "live"
    response = aiohttp_jinja2.render_template(
        template.replace(".html", "_live.html") if fragment else template,
        request,
        {
            "viewer": viewer,
            "fragment": fragment,
            "refresh_seconds": request.app[SETTINGS].ui.refresh_seconds,
            **context,
        },
    )
    # A page changes from one poll to the next: never served from a cache.
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the list -------------------------------------------------------------------------------


async def incidents(request: web.Request) -> web.Response:
    """``/``: incidents, open first; ``?status=`` and ``?severity=`` filter."""
    viewer = _access(request).require(request)
    status = request.query.get("status") or None
    severity = request.query.get("severity") or None
    if status not in (None, *STATUSES) or severity not in (None, *SEVERITIES):
        raise web.HTTPBadRequest(text="Unknown status or severity filter.\n")
    rows = await _read(
        request, lambda c: queries.incident_rows(c, status=status, severity=severity)
    )
    now = time.time()
    return _render(
        request,
        "list.html",
        viewer,
        {
            "rows": [views.list_row(r, now=now) for r in rows],
            "status": status or "",
            "severity": severity or "",
            "statuses": STATUSES,
            "severities": SEVERITIES,
        },
    )


# -- one incident ---------------------------------------------------------------------------


def _markdown() -> MarkdownIt:
    # Raw HTML in the draft is shown as text; links only to http(s) and to this page's chart.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False})
    md.validateLink = _safe_link  # type: ignore[method-assign]
    return md


def _safe_link(url: str) -> bool:
    return url.startswith(("https://", "http://", "chart.svg"))


_MD = _markdown()


def postmortem_html(markdown: str, *, chart_url: str) -> Markup:
    """The postmortem draft as HTML; its chart (``chart.svg`` beside the draft in a bundle)
    points at the page's chart endpoint."""
    tokens = _MD.parse(markdown)
    for token in tokens:
        for child in token.children or []:
            _point_chart(child, chart_url)
    return Markup(_MD.renderer.render(tokens, _MD.options, {}))  # noqa: S704 - escaped by markdown-it


def _point_chart(token: Token, chart_url: str) -> None:
    if token.type == "image" and token.attrGet("src") == "chart.svg":
        token.attrSet("src", chart_url)


def _incident_id(request: web.Request) -> str:
    return request.match_info["id"]


def _link_query(request: web.Request, viewer: Viewer) -> str:
    """What a signed-link viewer's sub-requests (chart, evidence, polls) carry to be let in."""
    if viewer.via != "link":
        return ""
    return urlencode({"exp": request.query.get("exp", ""), "sig": request.query.get("sig", "")})


async def incident(request: web.Request) -> web.Response:
    """``/incidents/{id}``: the incident in the runbook's order."""
    incident_id = _incident_id(request)
    viewer = _access(request).require(request, incident_id=incident_id)
    detail = await _read(request, lambda c: queries.incident_detail(c, incident_id))
    if detail is None:
        raise web.HTTPNotFound(text="No such incident.\n")
    now = time.time()
    page = views.incident_page(detail, now=now)
    path = links.incident_path(incident_id)
    signed = _link_query(request, viewer)
    chart_url = f"{path}/chart.svg" + (f"?{signed}" if signed else "")
    postmortem = None
    if detail.bundles and request.query.get("fragment") != "live":
        try:
            draft = await request.app[EVIDENCE].postmortem(incident_id)
        except (IncidentNotFound, StoreUnavailable, OSError):
            draft = None
        if draft is not None:
            postmortem = postmortem_html(draft, chart_url=chart_url)
    return _render(
        request,
        "incident.html",
        viewer,
        {
            "page": page,
            "path": path,
            "signed": signed,
            "chart_url": chart_url,
            "postmortem": postmortem,
            # For the forms on the page (approvals), bound to the signed-in person.
            "csrf": _access(request).csrf_token(viewer) if viewer.may_change else "",
            "timeline": detail.incident.get("timeline") or [],
            "when": views.when,
            "parse": views.parse_time,
        },
    )


async def chart(request: web.Request) -> web.Response:
    """The error-rate chart with the incident's actions marked (SVG, as the bundle's)."""
    incident_id = _incident_id(request)
    _access(request).require(request, incident_id=incident_id)
    try:
        svg = await request.app[EVIDENCE].chart(incident_id)
    except IncidentNotFound:
        raise web.HTTPNotFound(text="No such incident.\n") from None
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="The store is unavailable; try again.\n") from None
    return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8")


async def evidence(request: web.Request) -> web.FileResponse:
    """One of the incident's evidence bundles (``opened`` or ``resolved``), to download."""
    incident_id = _incident_id(request)
    _access(request).require(request, incident_id=incident_id)
    phase = request.match_info["phase"]
    detail = await _read(request, lambda c: queries.incident_detail(c, incident_id))
    record = next((b for b in detail.bundles if b.phase == phase), None) if detail else None
    if record is None or not record.path.is_file():
        raise web.HTTPNotFound(text="No such evidence bundle.\n")
    return web.FileResponse(
        record.path,
        headers={
            "Content-Type": "application/gzip",
            "Content-Disposition": f'attachment; filename="{record.path.name}"',
        },
    )


# -- operations -----------------------------------------------------------------------------


async def operations(request: web.Request) -> web.Response:
    """``/operations``: kill switches, dry run, the worker, the outbox backlog."""
    viewer = _access(request).require(request)
    settings = request.app[SETTINGS]
    ops = await _read(request, queries.operations)
    remediation = settings.remediation
    file = remediation.kill_switch_file
    worker = request.app[WORKER]
    outbox = request.app.get(OUTBOX)
    runtime_on = ops.runtime_switch is not None and ops.runtime_switch.on
    return _render(
        request,
        "operations.html",
        viewer,
        {
            "ops": ops,
            "runtime_on": runtime_on,
            "config_switch": remediation.kill_switch,
            "switch_file": str(file) if file is not None else "",
            "switch_file_present": file is not None and file.exists(),
            "remediation_enabled": remediation.enabled,
            "dry_run": remediation.dry_run,
            "paused": worker.paused,
            "outbox_running": outbox is not None and outbox.alive,
            "may_switch_off": settings.ui.allow_kill_switch_off,
            "csrf": _access(request).csrf_token(viewer) if viewer.may_change else "",
            "when": views.when,
            "incident_path": links.incident_path,
        },
    )


def _origin(request: web.Request) -> str:
    return request.remote or "unknown"


def _signed_in_form(access: Access, viewer: Viewer, form: Any) -> None:
    """Refuse (403) a state-changing form without this person's valid CSRF token, or sent by
    a signed-link viewer (a link shows; only people who signed in change things)."""
    token = form.get("csrf")
    if not viewer.may_change or not access.csrf_valid(
        viewer, token if isinstance(token, str) else None
    ):
        raise web.HTTPForbidden(text="This form has expired or did not come from this site.\n")


async def decide_approval(request: web.Request) -> web.Response:
    """``POST /incidents/{id}/approvals/{approval}``: approve or deny an action awaiting
    approval (``decision=approve|deny``); signed in, with the form's CSRF token. Decided at
    most once: a second click finds it decided and only shows the page again."""
    incident_id = _incident_id(request)
    access = _access(request)
    viewer = access.require(request)
    form = await request.post()
    _signed_in_form(access, viewer, form)
    wanted = form.get("decision")
    if wanted not in ("approve", "deny"):
        raise web.HTTPBadRequest(text="decision must be approve or deny.\n")
    approval_id = request.match_info["approval"]
    found = await _read(request, lambda c: approval.get(c, approval_id))
    if found is None or found.incident_id != incident_id:
        raise web.HTTPNotFound(text="No such approval for this incident.\n")
    try:
        await decisions.decide(
            request.app,
            approval_id,
            decision="approved" if wanted == "approve" else "denied",
            by=viewer.name,
            via="incident page",
            origin=_origin(request),
        )
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="The store is unavailable; try again.\n") from None
    raise web.HTTPSeeOther(links.incident_path(incident_id))


async def kill_switch(request: web.Request) -> web.Response:
    """``POST /operations/kill-switch``: switch the runtime kill switch on (or off, where
    ``ui.allow_kill_switch_off``); signed in, with the form's CSRF token; audited."""
    access = _access(request)
    viewer = access.require(request)
    form = await request.post()
    _signed_in_form(access, viewer, form)
    wanted = form.get("state")
    if wanted not in ("on", "off"):
        raise web.HTTPBadRequest(text="state must be on or off.\n")
    on = wanted == "on"
    if not on and not request.app[SETTINGS].ui.allow_kill_switch_off:
        raise web.HTTPForbidden(text="Switching the kill switch off from the page is disabled.\n")
    origin = _origin(request)
    now = time.time()
    try:
        changed = await request.app[STORE].write(
            lambda c: set_runtime_kill_switch(c, on=on, actor=viewer.name, origin=origin, at=now)
        )
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="The store is unavailable; try again.\n") from None
    if changed:
        entry = AuditEntry(now, viewer.name, origin, "kill switch on" if on else "kill switch off")
        logger.warning(
            "audit",
            action=entry.action,
            actor=entry.actor,
            origin=entry.origin,
            via=viewer.via,
        )
    # Post/redirect/get: a reload does not send the form again.
    raise web.HTTPSeeOther("/operations")
