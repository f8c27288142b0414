"""The outbox: every notification is stored first, then delivered by one worker, in order.

Why stored first: a page or a status-page update decided while a destination is down, or
just before the service restarts, must still arrive. The notifier writes messages in the same
store as everything else; :class:`OutboxWorker` delivers them and records each outcome.

Order: messages share an ordering key per (destination, scope); the scope is the incident,
unless a destination tells one story for many incidents (the status page's one public
incident: every incident's status-page messages share its scope). Only the first pending
message of a key is ever attempted, so a later message never overtakes an earlier one that is
still undelivered (a resolve never precedes its trigger); within a key, a message whose
hold-off ends sooner goes first (one incident's messages share their hold-off, so they keep
their order). Different keys are delivered concurrently. What a destination remembers
(``notify_state``) is kept per scope too.

Severity first: between ordering keys, the most severe message waiting in a key decides when
the key's turn comes (P1 before P2 before P3 before P4, the oldest first among equals), so a
P1 page is never stuck behind a storm of P2 news: it takes the next token of its
destination's rate limit. A key whose later message is a P1 (an incident escalated while its
earlier news still waits) moves up as a whole, so its order holds. A pass starts at most
``outbox.concurrency`` deliveries, the most urgent first, and then looks at the queue again:
a P1 stored meanwhile waits for one round of deliveries, never for the whole backlog.

Superseded: news still queued that a newer queued message of the same kind, incident and
ordering key says again need not be sent, only the latest state of each destination does.
A PagerDuty trigger is superseded by a later trigger of its incident (both update the same
alert), unless an acknowledge or resolve lies between them (trigger, resolve, trigger is two
alerts: each goes); acknowledge, resolve and change events are never superseded, so a trigger
then a resolve still leaves PagerDuty resolved. An incident's open news for the status page is
superseded by its later open news (the public incident keeps only each incident's latest);
its resolve supersedes nothing, so an incident that lasted past the hold-off is told before it
is told resolved. Slack messages are posts in the channel's history, not states: each goes. A
superseded message is ``skipped``, with ``superseded_by`` naming the message that carries its
news.

Retries: a temporary failure (429, 5xx, Statuspage's 420, timeouts, network errors) sets
``next_attempt_at`` with exponential back-off and jitter, or exactly the destination's
``Retry-After``; it lives in the table, so it holds across restarts. A permanent failure (400
and other 4xx) is not retried: the message is marked ``failed``, logged and counted, and the
messages behind it proceed. Temporary failures are retried for as long as it takes.
Finished messages are kept for ``outbox.retention_hours`` (the incident's record), then pruned.

Hold-off: a message may carry a ``not_before`` time (the status page's hold-off). The
status-page messages of an incident that resolved before its hold-off ended, and never reached
the status page, are dropped (``skipped``): a flapping alert never reaches customers.

Delivery is at least once: a crash between a destination's answer and the commit that records
it sends that message again after the restart (PagerDuty deduplicates by ``dedup_key``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
import tenacity

from receiver.background import BackgroundTask, wait_to_be_woken
from receiver.config import NotifySettings, OutboxSettings
from receiver.metrics import Metrics
from receiver.notify.delivery import (
    Message,
    PermanentFailure,
    Sender,
    Sent,
    TemporaryFailure,
)
from receiver.notify.log import LogSender
from receiver.notify.pagerduty import PagerDutySender
from receiver.notify.slack import SlackSender
from receiver.notify.statuspage import StatuspageSender
from receiver.redaction import Redactor
from receiver.store import Connection, Row, Store, StoreUnavailable
from receiver.store.outbox import (
    Draft,
    drop_flapping,
    enqueue,
    flapping_queues,
    get_state,
    list_messages,
    pending_heads,
    prune_outbox,
    queue_depth,
    record_failed,
    record_retry,
    record_sent,
    set_state,
    skip_superseded,
    superseded_messages,
)

__all__ = [
    "DESTINATIONS",
    "Draft",
    "OutboxWorker",
    "build_senders",
    "enqueue",
    "get_state",
    "list_messages",
    "queue_depth",
    "set_state",
]

logger = structlog.get_logger(__name__)

DESTINATIONS = ("pagerduty", "statuspage", "slack", "log")
PRUNE_EVERY_SECONDS = 300.0
Clock = Callable[[], float]


def _scope(ordering_key: str) -> str:
    """The scope an ordering key was made of (destinations and systems have no colon)."""
    return ordering_key.split(":", 2)[-1]


@dataclass(frozen=True)
class _Head:
    """The first pending message of an ordering key, as stored (its payload is read only if
    it is attempted: a storm's backlog is looked at on every pass)."""

    row: Row

    @property
    def destination(self) -> str:
        return str(self.row["destination"])

    @property
    def due_at(self) -> float:
        return max(float(self.row["not_before"]), float(self.row["next_attempt_at"]))

    def message(self) -> Message:
        r = self.row
        return Message(
            id=r["id"],
            destination=r["destination"],
            incident_id=r["incident_id"],
            kind=r["kind"],
            payload=json.loads(r["payload"]),
            attempts=r["attempts"],
            created_at=r["created_at"],
            scope=_scope(r["ordering_key"]),
        )


def _heads(conn: Connection) -> list[_Head]:
    """The first pending message of every ordering key, the most urgent keys first."""
    return [_Head(r) for r in pending_heads(conn)]


def _record_sent(conn: Connection, message: Message, sent: Sent, *, now: float) -> None:
    record_sent(conn, message.id, skipped=sent.skipped, now=now)
    if sent.remember:
        set_state(conn, message.destination, message.state_key, sent.remember, now=now)


# -- the worker ----------------------------------------------------------------------------


def build_senders(
    settings: NotifySettings, *, redactor: Redactor, clock: Clock = time.time
) -> dict[str, Sender]:
    """One sender per configured destination, and the log for the others; errors they report
    are redacted by ``redactor``."""
    senders: dict[str, Sender] = {"log": LogSender()}
    if settings.pagerduty is not None:
        senders["pagerduty"] = PagerDutySender(settings.pagerduty, redactor=redactor, clock=clock)
    if settings.statuspage is not None:
        senders["statuspage"] = StatuspageSender(
            settings.statuspage, redactor=redactor, clock=clock
        )
    if settings.slack is not None:
        senders["slack"] = SlackSender(settings.slack, redactor=redactor)
    return senders


def backoff(settings: OutboxSettings, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, capped, with jitter."""
    wait = tenacity.wait_exponential_jitter(
        initial=settings.initial_backoff_seconds,
        max=settings.max_backoff_seconds + settings.jitter_seconds,
        jitter=settings.jitter_seconds,
    )
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    return float(wait(state))


class OutboxWorker:
    """Delivers stored notifications until stopped; ``run_once`` is one pass."""

    def __init__(
        self,
        *,
        store: Store,
        metrics: Metrics,
        settings: NotifySettings,
        redactor: Redactor,
        senders: Mapping[str, Sender] | None = None,
        clock: Clock = time.time,
        fence: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._store = store
        # Awaited right before each send: with several replicas, the leader's confirmation
        # that it still leads (receiver.fencing); it raises to stop the send.
        self._fence = fence
        self._metrics = metrics
        self._settings = settings.outbox
        self._senders = (
            dict(senders)
            if senders is not None
            else build_senders(settings, redactor=redactor, clock=clock)
        )
        self._clock = clock
        self._wake = asyncio.Event()
        self._loop = BackgroundTask("outbox-worker", self._run)
        self._session: aiohttp.ClientSession | None = None
        self._limit = asyncio.Semaphore(self._settings.concurrency)
        self._last_prune = float("-inf")
        self.heartbeat = time.monotonic()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop delivering; a delivery in flight is abandoned and retried after a restart."""
        await self._loop.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def alive(self) -> bool:
        return self._loop.alive

    def wake(self) -> None:
        """Tell the worker there is something new to send."""
        self._wake.set()

    async def _run(self) -> None:
        logger.info("outbox worker started", destinations=sorted(self._senders))
        while True:
            self.heartbeat = time.monotonic()
            attempted = 0
            try:
                attempted = await self.run_once()
            except StoreUnavailable as e:
                logger.warning("outbox cannot reach the store; retrying", error=str(e))
            except Exception:
                logger.exception("outbox pass failed")
            if not attempted:
                await wait_to_be_woken(self._wake, seconds=self._settings.poll_interval_seconds)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "posthog-incident-receiver"}
            )
        return self._session

    async def run_once(self) -> int:
        """One pass: drop flapping status-page messages and superseded news, then attempt the
        most urgent due heads, at most ``outbox.concurrency`` of them."""
        skipped: dict[str, int] = {}
        if await self._store.read(flapping_queues):  # read first: an idle pass writes nothing
            skipped = await self._store.write(drop_flapping)
        for destination, count in skipped.items():
            self._metrics.notifications_skipped.labels(destination).inc(count)
            logger.info("status page held back: resolved within the hold-off", count=count)
        # Nothing is in flight between passes, so no message superseded here is being sent.
        superseded: dict[str, int] = {}
        if await self._store.read(superseded_messages):
            superseded = await self._store.write(skip_superseded)
        for destination, count in superseded.items():
            self._metrics.notifications_skipped.labels(destination).inc(count)
            logger.info(
                "queued notifications superseded by newer ones",
                destination=destination,
                count=count,
            )
        now = self._clock()
        heads = await self._store.read(_heads)
        jobs: list[Coroutine[Any, Any, None]] = []
        for head in heads:
            if len(jobs) >= self._settings.concurrency:
                break  # the rest waits for the next pass, which sees anything more urgent
            if head.due_at > now:
                continue
            sender = self._senders.get(head.destination)
            if sender is None:
                jobs.append(self._unconfigured(head.message()))
                continue
            if sender.ready_in() > 0:
                continue  # rate limited here; not an attempt
            jobs.append(self._deliver(sender, head.message()))
        if jobs:
            await asyncio.gather(*jobs)
        depth = await self._store.read(queue_depth)
        for destination in {*DESTINATIONS, *depth}:
            self._metrics.notification_queue_depth.labels(destination).set(
                depth.get(destination, 0)
            )
        await self._maybe_prune(now)
        return len(jobs)

    async def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        cutoff = now - self._settings.retention_hours * 3600
        pruned = await self._store.write(functools.partial(prune_outbox, older_than=cutoff))
        if pruned:
            logger.info("pruned delivered notifications", count=pruned)

    async def _unconfigured(self, message: Message) -> None:
        error = f"destination {message.destination} is no longer configured"
        await self._store.write(
            functools.partial(record_failed, message_id=message.id, error=error)
        )
        self._metrics.notifications_failed.labels(message.destination).inc()
        logger.error("notification failed", **_context(message), error=error)

    async def _deliver(self, sender: Sender, message: Message) -> None:
        log = logger.bind(**_context(message))
        async with self._limit:
            state = await self._store.read(
                lambda c: get_state(c, message.destination, message.state_key)
            )
            if self._fence is not None:
                await self._fence()
            try:
                sent = await sender.send(self._http(), message, state)
            except TemporaryFailure as e:
                await self._retry(message, str(e), e.retry_after, log)
                return
            except PermanentFailure as e:
                await self._store.write(
                    functools.partial(record_failed, message_id=message.id, error=str(e))
                )
                self._metrics.notifications_failed.labels(message.destination).inc()
                log.error("notification failed; not retried", error=str(e))
                return
            except Exception as e:  # a bug in rendering or sending: keep the message
                log.exception("notification could not be sent")
                await self._retry(message, f"unexpected {type(e).__name__}", None, log)
                return
        now = self._clock()
        await self._store.write(
            functools.partial(_record_sent, message=message, sent=sent, now=now)
        )
        if sent.skipped:
            self._metrics.notifications_skipped.labels(message.destination).inc()
            log.info("notification skipped", reason=sent.skipped)
            return
        self._metrics.notifications_sent.labels(message.destination).inc()
        self._metrics.notification_delivery_seconds.labels(message.destination).observe(
            max(0.0, now - message.created_at)
        )
        log.info("notification sent")

    async def _retry(
        self, message: Message, error: str, retry_after: float | None, log: Any
    ) -> None:
        attempt = message.attempts + 1
        if retry_after is not None:
            wait = min(retry_after, self._settings.max_retry_after_seconds)
        else:
            wait = backoff(self._settings, attempt)
        await self._store.write(
            functools.partial(
                record_retry,
                message_id=message.id,
                error=error,
                next_attempt_at=self._clock() + wait,
            )
        )
        self._metrics.notifications_retried.labels(message.destination).inc()
        log.warning(
            "notification not delivered; will retry",
            error=error,
            attempt=attempt,
            retry_in=round(wait, 3),
        )


def _context(message: Message) -> dict[str, Any]:
    return {
        "destination": message.destination,
        "kind": message.kind,
        "incident_id": message.incident_id,
        "message_id": message.id,
    }
