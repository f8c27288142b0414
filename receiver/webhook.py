"""``POST /webhook/alertmanager``: accept a notification only once it is durably stored.

The checks run cheapest first: size (413), credentials (401), media type (415), payload
(400). A valid notification is written to the spool (:mod:`receiver.spool`) and answered 200
once the write is durable; the worker moves it into the store's inbox later. Alertmanager
retries only 5xx, so anything transient on our side (the spool is full or cannot be written) is
a 503. A resend of the same news is a 200 too, and is not stored or processed again.

Why an :class:`Intake` object and a :class:`SpoolWriter`: this is the one hot path of the
service (docs/benchmarks.md). What every request would otherwise look up or build again (the
expected credentials, the metric children, the response bodies) is prepared once at startup,
and the requests waiting for their write share one: while one batch is written, the next
gathers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client import Counter
from pydantic import ValidationError

from receiver.alertmanager import WebhookPayload
from receiver.config import Settings, WebhookSettings
from receiver.logs import debug_enabled
from receiver.metrics import Metrics
from receiver.spool import RecentKeys, Spool, Spooled
from receiver.store import Store, StoreUnavailable
from receiver.store.inbox import enqueue_webhooks
from receiver.worker import Worker

__all__ = [
    "INTAKE",
    "Credentials",
    "Intake",
    "SpoolWriter",
    "payload_error",
    "receive_alertmanager",
]

logger = structlog.get_logger(__name__)

BUSY_WINDOW_SECONDS = 0.005
YIELD_EVERY_BYTES = 1 << 20  # validated in one go before the writer lets other tasks run


def _same(given: str, expected: str) -> bool:
    # Header bytes that are not UTF-8 arrive as surrogate escapes: compare them as sent.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


class Credentials:
    """The configured webhook credentials, resolved once, checked in constant time."""

    def __init__(self, settings: WebhookSettings) -> None:
        self._open = settings.allow_unauthenticated
        self._bearer = (
            settings.bearer_token.secret.get_secret_value()
            if settings.bearer_token is not None
            else None
        )
        basic = settings.basic_auth
        self._basic = (
            (basic.username, basic.password.secret.get_secret_value())
            if basic is not None
            else None
        )

    def check(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the bearer token or basic auth.

        Every configured scheme is evaluated so the time taken does not depend on which one
        matched.
        """
        if self._open:
            return True
        if not header:
            return False
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        ok = False
        if self._bearer is not None:
            ok |= scheme == "bearer" and _same(credentials, self._bearer)
        if self._basic is not None and scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8
                decoded = ""
            user, _, password = decoded.partition(":")
            ok |= _same(user, self._basic[0]) & _same(password, self._basic[1])
        return ok


def payload_error(err: ValidationError) -> str:
    """A short, safe description of why a payload was refused (no values echoed back)."""
    first = err.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return "malformed JSON"
    loc = ".".join(str(p) for p in first["loc"])
    if loc == "version":
        return "unsupported payload version: this receiver accepts Alertmanager webhook version 4"
    return f"invalid payload: {loc}: {first['msg']}"


@dataclass
class _Waiting:
    body: bytes
    future: asyncio.Future[tuple[WebhookPayload, bool]]


def _fail(waiting: list[_Waiting], error: BaseException) -> None:
    for w in waiting:
        if not w.future.done():  # the request went away meanwhile
            w.future.set_exception(error)


class Sink(Protocol):
    """Where the intake makes webhooks durable before answering 200: the local spool (SQLite
    mode) or the shared store's inbox (PostgreSQL mode)."""

    async def append(self, records: Sequence[Spooled], /) -> None: ...


class InboxSink:
    """Webhooks committed straight into the store's inbox, many per transaction.

    With PostgreSQL (several replicas) an acknowledged webhook must survive the loss of the
    replica that took it (pod deleted, node gone): a local spool would not, so the 200 waits
    for the commit to the shared store. docs/benchmarks.md records what that costs.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def append(self, records: Sequence[Spooled], /) -> None:
        batch = list(records)
        await self._store.write(lambda conn: enqueue_webhooks(conn, batch))


class SpoolWriter:
    """Validates received webhooks and writes them to its sink (the spool, or the store's
    inbox), many at a time (on the event loop).

    ``receive`` returns once the webhook is durably spooled: its payload, and ``True`` if it
    was written or ``False`` if it is a resend of news spooled before (remembered in
    :class:`RecentKeys`, or earlier in the same write). A body that is not a valid
    notification raises :class:`ValidationError`. At most one write is in flight; what arrives
    meanwhile waits for the next one. A failed write answers every webhook in it with
    :class:`StoreUnavailable` (the webhook is then answered 503 and Alertmanager retries).

    The bodies waiting together are also validated together, one after the other: in a busy
    server that costs much less than validating each in its own request, between the HTTP work
    of the others (docs/benchmarks.md). After each successful write, ``on_written`` gets how
    many of its webhooks were written and how many were resends.
    """

    def __init__(
        self,
        spool: Sink,
        recent: RecentKeys,
        *,
        max_batch: int = 512,
        on_written: Callable[[int, int], None] | None = None,
    ) -> None:
        self._spool = spool
        self._recent = recent
        self._max_batch = max_batch
        self._on_written = on_written
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_write = 0.0

    async def receive(self, body: bytes) -> tuple[WebhookPayload, bool]:
        # The loop is looked up once: on Python 3.11 every get_running_loop() is a getpid()
        # system call, a measurable share of a request.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[WebhookPayload, bool]] = loop.create_future()
        self._waiting.append(_Waiting(body, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="spool-writer")
        return await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write(batch)
        finally:
            self._flusher = None
            if self._loop is not None:
                self._last_write = self._loop.time()
            # Only left behind if this task was cancelled.
            _fail(self._waiting, StoreUnavailable("spool write interrupted"))
            self._waiting.clear()

    async def _write(self, batch: list[_Waiting]) -> None:
        # Refused bodies are answered at once. A resend of what an earlier write stored, or of
        # a webhook earlier in this batch, is not written again.
        recent = self._recent
        keys: set[str] = set()
        records: list[Spooled] = []
        valid: list[tuple[_Waiting, WebhookPayload, bool]] = []
        unyielded = 0
        for w in batch:
            unyielded += len(w.body)
            if unyielded > YIELD_EVERY_BYTES:  # large bodies: let the loop answer the others
                unyielded = 0
                await asyncio.sleep(0)
            try:
                payload = WebhookPayload.model_validate_json(w.body)
                key = payload.dedup_key()
            except Exception as e:  # ValidationError: a 400; anything else: that request's 500
                if not w.future.done():
                    w.future.set_exception(e)
                continue
            new = key not in keys and key not in recent
            if new:
                keys.add(key)
                records.append((key, payload.group_key, w.body))
            valid.append((w, payload, new))
        try:
            if records:
                await self._spool.append(records)
        except Exception as e:  # whatever stopped the write: this batch is not stored
            if not isinstance(e, StoreUnavailable):
                logger.exception("spool write failed", batch=len(batch))
            error = e if isinstance(e, StoreUnavailable) else StoreUnavailable(str(e))
            _fail([w for w, _, _ in valid], error)
            return
        except BaseException:
            _fail([w for w, _, _ in valid], StoreUnavailable("spool write interrupted"))
            raise
        for key in keys:
            recent.add(key)
        if self._on_written is not None:
            self._on_written(len(records), len(valid) - len(records))
        for w, payload, new in valid:
            if not w.future.done():  # the request went away meanwhile
                w.future.set_result((payload, new))

    @property
    def busy(self) -> bool:
        """Whether webhooks are arriving: some wait for their write (being written, or
        gathering for the next one), or a write ended within the last ``BUSY_WINDOW_SECONDS``.
        (Spool writes are quick: between two of them a loaded intake is still loaded.)"""
        if self._flusher is not None or self._waiting:
            return True
        loop = self._loop
        return loop is not None and loop.time() - self._last_write < BUSY_WINDOW_SECONDS

    async def close(self) -> None:
        """Wait for the write in flight (none is left once the server stopped taking requests)."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)


def _json_body(value: dict[str, object]) -> bytes:
    return json.dumps(value).encode()


@dataclass
class Intake:
    """What the webhook handler needs, resolved once when the application starts."""

    settings: Settings
    metrics: Metrics
    worker: Worker
    spool: Spool | None  # None: webhooks are committed straight into the store's inbox
    recent: RecentKeys
    store: Store
    writer: SpoolWriter = field(init=False)
    credentials: Credentials = field(init=False)
    debug: bool = field(init=False)
    max_body_bytes: int = field(init=False)
    counted: dict[str, Counter] = field(init=False)
    _accepted: dict[tuple[str, int], bytes] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.credentials = Credentials(self.settings.webhook)
        self.debug = debug_enabled()
        self.max_body_bytes = self.settings.server.max_body_bytes
        sink: Sink = self.spool if self.spool is not None else InboxSink(self.store)
        writer = self.writer = SpoolWriter(sink, self.recent, on_written=self._written)
        self.worker.defer_to(lambda: writer.busy)  # acknowledgements first (docs/benchmarks.md)
        # Pre-bound metric children: ``labels()`` is a locked dict lookup on every call.
        self.counted = {
            outcome: self.metrics.webhooks.labels(outcome)
            for outcome in (
                "stored",
                "duplicate",
                "unauthorized",
                "too_large",
                "unsupported_media_type",
                "bad_request",
                "unavailable",
            )
        }

    def count(self, outcome: str) -> None:
        child = self.counted.get(outcome)
        if child is None:
            child = self.counted[outcome] = self.metrics.webhooks.labels(outcome)
        child.inc()

    def _written(self, stored: int, duplicates: int) -> None:
        # Once per spool write, not per request: a counter's inc() is a locked update.
        if stored:
            self.counted["stored"].inc(stored)
            self.worker.wake()  # to move them into the inbox
        if duplicates:
            self.counted["duplicate"].inc(duplicates)

    def accepted(self, outcome: str, alerts: int) -> web.Response:
        body = self._accepted.get((outcome, alerts))
        if body is None:
            body = _json_body({"status": outcome, "alerts": alerts})
            if len(self._accepted) < 256:
                self._accepted[(outcome, alerts)] = body
        return web.Response(body=body, content_type="application/json")


INTAKE = web.AppKey("intake", Intake)


def _reject(intake: Intake, status: int, outcome: str, message: str) -> web.Response:
    intake.count(outcome)
    logger.warning("webhook rejected", status=status, outcome=outcome, reason=message)
    headers = {"WWW-Authenticate": 'Bearer realm="posthog-receiver"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


async def receive_alertmanager(request: web.Request) -> web.Response:
    intake = request.app[INTAKE]
    limit = intake.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _reject(intake, 413, "too_large", f"body larger than {limit} bytes")
    if not intake.credentials.check(request.headers.get("Authorization")):
        return _reject(intake, 401, "unauthorized", "missing or wrong credentials")
    if request.content_type != "application/json":
        return _reject(intake, 415, "unsupported_media_type", "expected application/json")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _reject(intake, 413, "too_large", f"body larger than {limit} bytes")
    try:
        if intake.store.lost is not None:  # what the spool holds would never reach it
            raise StoreUnavailable(intake.store.lost)
        payload, stored = await intake.writer.receive(body)
    except ValidationError as e:
        return _reject(intake, 400, "bad_request", payload_error(e))
    except StoreUnavailable as e:
        intake.count("unavailable")
        logger.error("webhook not stored; asking Alertmanager to retry", error=str(e))
        return web.json_response({"error": "temporarily unable to store; retry"}, status=503)

    outcome = "stored" if stored else "duplicate"  # counted by the writer (Intake._written)
    # Debug, not info: one line per request is the access log, and its cost is a large share
    # of the request's (docs/benchmarks.md). What a stored notification changed is logged at
    # info by the worker ("notification applied"); refusals are warnings.
    if intake.debug:
        logger.debug(
            "webhook accepted",
            outcome=outcome,
            group_key=payload.group_key,
            alerts=len(payload.alerts),
            status=payload.status,
        )
    return intake.accepted(outcome, len(payload.alerts))
