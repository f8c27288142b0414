"""The web UI: the incident list, the incident page and the operations view.

Server-rendered HTML (Jinja2, autoescape on everywhere), a stylesheet and one small script
served from the package: no build step, and every page reads the same without JavaScript.
:func:`setup` registers the templates and, at start, resolves the UI's credentials;
:data:`ROUTES` are added by ``create_app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources

import aiohttp_jinja2
import jinja2
from aiohttp import web

from receiver.config import Settings
from receiver.web import pages, slack
from receiver.web.access import Access
from receiver.web.keys import ACCESS

__all__ = ["ROUTES", "setup"]

_STATIC_TYPES = {"ui.css": "text/css", "ui.js": "text/javascript"}


def _static_files() -> dict[str, bytes]:
    folder = resources.files("receiver.web").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC_TYPES}


def setup(app: web.Application, settings: Settings) -> None:
    """Templates and the UI's credentials (resolved when the application starts)."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("receiver.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    static = _static_files()

    async def credentials(app: web.Application) -> AsyncIterator[None]:
        app[ACCESS] = Access(settings.ui)
        yield

    async def serve_static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in static:
            raise web.HTTPNotFound()
        return web.Response(
            body=static[name],
            content_type=_STATIC_TYPES[name],
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )

    app.cleanup_ctx.append(credentials)
    slack.setup(app)
    app.router.add_get("/static/{name}", serve_static)


ROUTES = (
    web.get("/", pages.incidents),
    web.get("/incidents/{id}", pages.incident),
    web.get("/incidents/{id}/chart.svg", pages.chart),
    web.get("/incidents/{id}/evidence/{phase}", pages.evidence),
    web.get("/operations", pages.operations),
    web.post("/operations/kill-switch", pages.kill_switch),
    web.post("/incidents/{id}/approvals/{approval}", pages.decide_approval),
    web.post("/slack/interactions", slack.interactions),
)
