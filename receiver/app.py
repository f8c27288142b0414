"""The aiohttp application: routes, middlewares, and the lifecycle of what it holds.

Nothing happens at import time. ``create_app(settings)`` wires the parts; the store and the
worker are opened and closed in ``cleanup_ctx`` so a SIGTERM (aiohttp's graceful shutdown)
stops accepting requests, lets in-flight ones finish, stops the worker and closes the store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from receiver import api
from receiver.config import Settings
from receiver.incidents import IncidentEvent
from receiver.keys import METRICS, SETTINGS, STORE, WORKER
from receiver.logs import register_secrets
from receiver.metrics import Metrics
from receiver.openapi import add_routes as add_openapi_routes
from receiver.store import Store
from receiver.webhook import is_authorized, receive_alertmanager
from receiver.worker import Responder, Worker

__all__ = ["create_app", "secret_values"]

logger = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RecordingResponder:
    """The responder until triage and remediation are configured: records and logs only."""

    async def handle(self, event: IncidentEvent) -> None:
        logger.info("incident event", incident_id=event.incident_id, kind=event.kind)


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret value, for log redaction."""
    found: list[str] = []
    hook = settings.webhook
    if hook.bearer_token is not None:
        found.append(hook.bearer_token.secret.get_secret_value())
    if hook.basic_auth is not None:
        found.append(hook.basic_auth.password.secret.get_secret_value())
    return found


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request id on every log line of the request, and one access log line per request."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
    structlog.contextvars.bind_contextvars(request_id=request_id[:64])
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as e:
        status = e.status
        e.headers["X-Request-Id"] = request_id[:64]
        raise
    except Exception:
        logger.exception("unhandled error", path=request.path)
        response = web.json_response({"error": "internal error"}, status=500)
    finally:
        if request.path not in ("/healthz", "/readyz", "/metrics"):
            logger.debug(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers["X-Request-Id"] = request_id[:64]
    return response


@web.middleware
async def api_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Incident data carries labels and annotations: the same credentials as the webhook."""
    settings = request.app[SETTINGS].webhook
    if (
        request.path.startswith("/api/")
        and settings.protect_api
        and not is_authorized(request.headers.get("Authorization"), settings)
    ):
        return web.json_response(
            {"error": "missing or wrong credentials"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="posthog-receiver"'},
        )
    return await handler(request)


def create_app(settings: Settings, *, responder: Responder | None = None) -> web.Application:
    """Build the application for ``settings``; nothing is opened until it starts."""
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[request_context, api_auth],
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    register_secrets(secret_values(settings))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = Store(settings.store)
        await store.open()
        app[STORE] = store
        worker = Worker(
            store=store,
            metrics=app[METRICS],
            responder=responder or RecordingResponder(),
            inbox_retention_seconds=settings.store.inbox_retention_hours * 3600,
        )
        app[WORKER] = worker
        worker.start()
        logger.info("receiver started", store=str(store.path))
        yield
        await worker.stop()
        await store.close()
        logger.info("receiver stopped")

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/webhook/alertmanager", receive_alertmanager)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/api/incidents", api.incidents)
    app.router.add_get("/api/incidents/{id}", api.incident)
    add_openapi_routes(app)
    return app
