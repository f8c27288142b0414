"""The aiohttp application: routes, middlewares, and the lifecycle of what it holds.

Nothing happens at import time. ``create_app(settings)`` wires the parts; the store, the
process's one Kubernetes connection, the worker and the responder's clients (status page and
health readers, the notification outbox, the revert checks, the evidence collector) are opened
and closed in ``cleanup_ctx`` so a SIGTERM (aiohttp's graceful shutdown) stops accepting
requests, lets in-flight ones finish, stops the worker, closes the clients and then the store.

Leadership: every replica takes webhooks and serves the API; the worker, the revert checks and
the outbox run on the leader only (``receiver.duties``), and everything they write or change
outside is fenced by its term (``receiver.fencing``). With SQLite the one replica always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import get_args

import structlog
from aiohttp import web

from receiver import api, drill_api, evidence_api, notify, openapi
from receiver import web as ui
from receiver.config import Settings
from receiver.duties import LeaderDuties
from receiver.evidence import EvidenceCollector
from receiver.evidence_api import EVIDENCE
from receiver.fencing import FencedStore, confirm_leading
from receiver.health import HealthReader
from receiver.keys import (
    DUTIES,
    LEADER,
    METRICS,
    OUTBOX,
    RESPONDER,
    RESPONSE_TIMES,
    SETTINGS,
    SPOOL,
    STORE,
    WORKER,
)
from receiver.kube.client import ClusterAccess, open_cluster
from receiver.kube.workload import IntegrationWorkload
from receiver.leadership import AlwaysLeader, Leader, Leadership
from receiver.logs import debug_enabled
from receiver.metrics import Metrics
from receiver.notify.outbox import DESTINATIONS
from receiver.pagerduty_webhook import receive_pagerduty
from receiver.redaction import Redactor
from receiver.remediation import open_remediator
from receiver.remediation.outcome import Status
from receiver.responder import IncidentResponder, RevertChecks
from receiver.response_times import ResponseTimes
from receiver.retention import Retention
from receiver.spool import RecentKeys, Spool
from receiver.store import Store
from receiver.store.inbox import recent_dedup_keys
from receiver.store.incidents import IncidentEvent
from receiver.upstream import UpstreamReader
from receiver.webhook import INTAKE, Intake, receive_alertmanager
from receiver.worker import Responder, Worker

__all__ = ["PAGE_POLICY", "SECURITY_HEADERS", "add_security_headers", "create_app"]

logger = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RecordingResponder:
    """A responder that only logs each event (for tests of the intake alone)."""

    async def handle(self, event: IncidentEvent) -> None:
        # Debug: the worker already logs what each notification changed, at info.
        logger.debug("incident event", incident_id=event.incident_id, kind=event.kind)


def _new_request_id() -> str:
    # Unique enough to follow one request through the logs; not a secret, so the cheap
    # generator (uuid4 reads the OS entropy pool, a system call, on every request).
    return f"{random.getrandbits(64):016x}"


async def open_responder(
    app: web.Application,
    settings: Settings,
    store: FencedStore,
    stack: contextlib.AsyncExitStack,
    *,
    cluster: ClusterAccess,
    evidence: EvidenceCollector,
    redactor: Redactor,
    duties: LeaderDuties,
) -> IncidentResponder:
    """The responder built from ``settings``, its clients registered on ``stack`` to close;
    triage and remediation share ``cluster``, the process's connection. Its loops (the
    outbox, the revert checks) are ``duties``: they run while this replica leads, and write
    through ``store``, fenced by the leader's term."""
    triage = settings.triage
    upstream = UpstreamReader(triage.upstream)
    stack.push_async_callback(upstream.close)
    health = None
    if triage.health.url is not None:
        health = HealthReader(triage.health)
        stack.push_async_callback(health.close)
    notifier, outbox = notify.build_notifier(
        settings.notify,
        store=store,
        metrics=app[METRICS],
        public_url=settings.server.public_url,
        prometheus_urls=notify.prometheus_urls(settings),
        redactor=redactor,
        ui=settings.ui,
        fence=functools.partial(confirm_leading, store.inner, store.leader),
    )
    duties.add(outbox)
    stack.push_async_callback(outbox.stop)
    app[OUTBOX] = outbox
    remediator = await stack.enter_async_context(
        open_remediator(settings, store=store, cluster=cluster, metrics=app[METRICS])
    )
    target = settings.remediation.target
    view = IntegrationWorkload(cluster.connection, target=target) if cluster.connection else None
    responder = IncidentResponder(
        store=store,
        triage=triage,
        upstream=upstream,
        health=health,
        cluster=view,
        remediation=remediator,
        notifier=notifier,
        evidence=evidence if settings.responder.collect_evidence else None,
        metrics=app[METRICS],
        redactor=redactor,
    )
    stack.push_async_callback(responder.stop_approvals)
    app[RESPONDER] = responder
    checks = RevertChecks(responder, interval_seconds=settings.responder.revert_check_seconds)
    duties.add(checks)
    stack.push_async_callback(checks.stop)
    return responder


# The request id is bound for structlog's ``merge_contextvars`` through a context variable of
# its own, set and reset with a token: ``bind_contextvars``/``unbind_contextvars`` cost several
# times as much, on every request (docs/benchmarks.md).
_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    structlog.contextvars.STRUCTLOG_KEY_PREFIX + "request_id",
    default=...,  # type: ignore[arg-type]
)
_UNLOGGED = frozenset({"/healthz", "/readyz", "/metrics"})


def in_request_context(handler: Handler, *, api: bool = False, logged: bool = True) -> Handler:
    """``handler`` with a request id on every log line of the request and, if ``logged``, one
    (debug) access line; with ``api``, guarded by the webhook's credentials (incident data
    carries labels and annotations).

    A wrapper around each route's handler, not an aiohttp middleware: a middleware adds two
    layers to every request, which cost as much as the rest of this (docs/benchmarks.md).
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        request_id = (request.headers.get("X-Request-Id") or _new_request_id())[:64]
        token = _REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            if api and not _api_allowed(request):
                response: web.StreamResponse = web.json_response(
                    {"error": "missing or wrong credentials"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="posthog-receiver"'},
                )
            else:
                response = await handler(request)
            status = response.status
        except web.HTTPException as e:
            status = e.status
            e.headers["X-Request-Id"] = request_id
            raise
        except Exception:
            logger.exception("unhandled error", path=request.path)
            response = web.json_response({"error": "internal error"}, status=500)
        finally:
            if logged:
                logger.debug(
                    "request",
                    method=request.method,
                    path=request.path,
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                )
            _REQUEST_ID.reset(token)
        response.headers["X-Request-Id"] = request_id
        return response

    return functools.update_wrapper(handle, handler)


async def open_spool(spool: Spool | None, store: Store, recent_keys: int) -> RecentKeys:
    """Open ``spool`` (if any); the repeat keys of the newest notifications, from the inbox and
    from what the spool still holds from the last run, to recognise their resends at once."""
    spooled = await asyncio.to_thread(spool.open) if spool is not None else []
    recent = RecentKeys(recent_keys)
    if recent_keys:
        newest = await store.read(functools.partial(recent_dedup_keys, limit=recent_keys))
        for key in [*newest, *spooled]:
            recent.add(key)
    return recent


# Every answer, error answers included (aiohttp's own 404, 405 and 413 too), says that its
# declared type is the only one (a JSON body holding a label's "<script>" is never sniffed as
# HTML) and that it may run no script, load nothing, submit nothing and be framed by no page.
# The chart (SVG) draws with presentation attributes only, so it needs no exception.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox",
    ),
)
# The web UI's pages (text/html) load their script, stylesheet and images from this origin
# only (no inline script or style), fetch their own live part, and submit forms to it.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``SECURITY_HEADERS`` on ``response`` (``PAGE_POLICY`` for an HTML page): aiohttp's
    ``on_response_prepare`` signal, which every answer of a matched or unmatched route
    passes, at the cost of two header sets (a middleware would add two layers to every
    request: docs/benchmarks.md)."""
    for name, value in SECURITY_HEADERS:
        response.headers[name] = value
    if response.content_type == "text/html":
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        response.headers["Referrer-Policy"] = "no-referrer"


def _api_allowed(request: web.Request) -> bool:
    intake = request.app[INTAKE]  # the webhook's credentials, resolved once
    return not intake.settings.webhook.protect_api or intake.credentials.check(
        request.headers.get("Authorization")
    )


def open_leadership(settings: Settings, store: Store, metrics: Metrics) -> Leader:
    """The lease in the shared PostgreSQL store, or, with SQLite's one replica, always leader."""
    if store.backend == "postgres":
        dsn = settings.store.postgres.dsn
        assert dsn is not None  # the settings require one with the postgres backend
        return Leadership(
            dsn=dsn.resolve().get_secret_value(), settings=settings.leadership, metrics=metrics
        )
    return AlwaysLeader(holder=settings.leadership.identity, metrics=metrics)


def create_app(
    settings: Settings,
    *,
    responder: Responder | None = None,
    redactor: Redactor | None = None,
) -> web.Application:
    """Build the application for ``settings``; nothing is opened until it starts.

    ``redactor`` (by default one built from ``settings``) redacts what the application writes:
    the outbox's errors and evidence. The process's log lines are redacted by the one given
    to :func:`~receiver.logs.configure_logging`, the same one when ``serve`` runs.
    """
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics(
        destinations=DESTINATIONS,
        actions=[action.name for action in settings.remediation.actions],
        action_statuses=get_args(Status),
    )
    redaction = redactor if redactor is not None else Redactor.from_settings(settings)

    # Built here, opened below: nothing is touched before the application starts.
    store = Store(settings.store)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        app[STORE] = store
        leader = app[LEADER] = open_leadership(settings, store, app[METRICS])
        # What the leader's duties write goes through this: fenced by its term.
        acting = FencedStore(store, leader)
        duties = app[DUTIES] = LeaderDuties(leader)
        app[RESPONSE_TIMES] = ResponseTimes(store=store, metrics=app[METRICS])
        # SQLite: acknowledged webhooks are spooled, then moved into the store's inbox by the
        # worker. PostgreSQL: committed to the shared inbox before the 200, so that losing this
        # replica loses nothing acknowledged (docs/install.md, "High availability").
        spool: Spool | None = None
        if store.backend == "sqlite":
            spool = app[SPOOL] = Spool.for_store(
                settings.store,
                on_damage=app[METRICS].spool_damaged.inc,
                probe_bytes=settings.server.max_body_bytes,
            )
        try:
            recent = await open_spool(spool, store, settings.store.recent_keys)
            if spool is not None:
                spooled = spool
                app[METRICS].spool_bytes.set_function(lambda: spooled.pending_bytes)
            async with contextlib.AsyncExitStack() as clients:
                # One cluster connection for the process: triage, remediation and evidence.
                # Its writes (patches, events) are refused unless this replica leads.
                cluster = await clients.enter_async_context(
                    open_cluster(settings.kubernetes, fence=leader.require_leader)
                )
                # The evidence endpoints' collector, on any replica; the responder's records
                # what it collects through the fenced store, as the leader.
                app[EVIDENCE] = EvidenceCollector.from_settings(
                    settings,
                    store=store,
                    cluster=cluster.connection,
                    redactor=redaction,
                    metrics=app[METRICS],
                )
                clients.push_async_callback(app[EVIDENCE].close)
                collector = EvidenceCollector.from_settings(
                    settings,
                    store=acting,
                    cluster=cluster.connection,
                    redactor=redaction,
                    metrics=app[METRICS],
                )
                clients.push_async_callback(collector.close)
                worker = Worker(
                    store=acting,
                    metrics=app[METRICS],
                    responder=responder
                    or await open_responder(
                        app,
                        settings,
                        acting,
                        clients,
                        cluster=cluster,
                        evidence=collector,
                        redactor=redaction,
                        duties=duties,
                    ),
                    inbox_retention_seconds=settings.store.inbox_retention_hours * 3600,
                    settings=settings.worker,
                    spool=spool,
                    redactor=redaction,
                    retention=Retention(
                        store=acting,
                        metrics=app[METRICS],
                        store_settings=settings.store,
                        evidence=settings.evidence,
                    ),
                )
                app[WORKER] = worker
                intake = app[INTAKE] = Intake(
                    settings=settings,
                    metrics=app[METRICS],
                    worker=worker,
                    spool=spool,
                    recent=recent,
                    store=store,
                )
                duties.add(worker)
                await leader.start()
                logger.info(
                    "receiver started",
                    store=str(store.path),
                    backend=store.backend,
                    replica=leader.holder,
                )
                yield
                await intake.writer.close()
                # The duties stop before the lease is released: nothing acts after that.
                await duties.close()
                await leader.stop()
        finally:
            if spool is not None:
                await asyncio.to_thread(spool.close)
            await store.close()
        logger.info("receiver stopped")

    app.cleanup_ctx.append(lifecycle)
    app.on_response_prepare.append(add_security_headers)
    routes = [
        web.post("/webhook/alertmanager", receive_alertmanager),
        web.post("/webhook/pagerduty", receive_pagerduty),
        web.get("/healthz", api.healthz),
        web.get("/readyz", api.readyz),
        web.get("/metrics", api.metrics),
        web.get("/api/incidents", api.incidents),
        web.get("/api/incidents/{id}", api.incident),
        web.get("/api/response-times", api.response_times),
        web.get("/api/leadership", api.leadership),
        *evidence_api.ROUTES,
        *drill_api.ROUTES,
        *openapi.ROUTES,
    ]
    if settings.ui.enabled:
        ui.setup(app, settings)
        routes.extend(ui.ROUTES)
    access_log = debug_enabled()
    app.router.add_routes(
        web.route(
            route.method,
            route.path,
            in_request_context(
                route.handler,
                api=route.path.startswith("/api/"),
                logged=access_log and route.path not in _UNLOGGED,
            ),
            **route.kwargs,
        )
        for route in routes
    )
    return app
