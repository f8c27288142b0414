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
from receiver.runbook import Severity
from receiver.store import Connection, Row, Store, StoreUnavailable

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
MAX_ERROR = 500
PRUNE_EVERY_SECONDS = 300.0
Clock = Callable[[], float]
# Kinds whose queued message is superseded by a later queued one of the same kind, incident
# and ordering key: each carries the whole state its destination needs.
SUPERSEDABLE = ("pagerduty.trigger", "statuspage.update")


def _changes_state(row: str) -> str:
    """SQL: whether the outbox row ``row`` moves its destination to a new state on its own (an
    acknowledge, a resolve, a status-page resolve). Nothing supersedes a message across one,
    and one never supersedes what came before it: that state must be reached first (a trigger
    then a resolve leaves PagerDuty resolved; customers hear of an incident that lasted past
    the hold-off before they hear it resolved)."""
    return (
        f"({row}.kind IN ('pagerduty.acknowledge', 'pagerduty.resolve')"
        f" OR ({row}.kind = 'statuspage.update'"
        f" AND json_extract({row}.payload, '$.status') = 'resolved'))"
    )


@dataclass(frozen=True)
class Draft:
    """A message about to be stored."""

    destination: str
    kind: str  # "<system>.<what>", e.g. "pagerduty.trigger", "statuspage.update"
    payload: dict[str, Any]
    idempotency_key: str
    not_before: float = 0.0
    scope: str | None = None  # shared by many incidents' messages; the incident's otherwise
    # The incident's severity when the message was drafted: the more severe goes first. A
    # draft that does not say counts as a P1, so it is never held back.
    severity: Severity = Severity.P1

    def ordering_key(self, incident_id: str) -> str:
        system = self.kind.partition(".")[0]
        return f"{self.destination}:{system}:{self.scope or incident_id}"


def _scope(ordering_key: str) -> str:
    """The scope an ordering key was made of (destinations and systems have no colon)."""
    return ordering_key.split(":", 2)[-1]


# -- the tables ----------------------------------------------------------------------------


def enqueue(conn: Connection, incident_id: str, drafts: list[Draft], *, now: float) -> int:
    """Store drafts not stored before (by idempotency key); the number newly stored."""
    stored = 0
    for d in drafts:
        cur = conn.execute(
            "INSERT INTO outbox (idempotency_key, destination, incident_id,"
            " ordering_key, kind, payload, not_before, next_attempt_at, created_at, priority)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                d.idempotency_key,
                d.destination,
                incident_id,
                d.ordering_key(incident_id),
                d.kind,
                json.dumps(d.payload, ensure_ascii=False),
                d.not_before,
                0.0,
                now,
                d.severity.rank,
            ),
        )
        stored += cur.rowcount
    return stored


def get_state(conn: Connection, destination: str, incident_id: str) -> dict[str, str]:
    """What a destination remembers about an incident."""
    rows = conn.execute(
        "SELECT key, value FROM notify_state WHERE destination = ? AND incident_id = ?",
        (destination, incident_id),
    ).fetchall()
    return {r["key"]: r["value"] for r in rows}


def set_state(
    conn: Connection,
    destination: str,
    incident_id: str,
    values: Mapping[str, str],
    *,
    now: float,
) -> None:
    """Remember ``values``; an empty value forgets its key."""
    for key, value in values.items():
        if not value:
            conn.execute(
                "DELETE FROM notify_state WHERE destination = ? AND incident_id = ? AND key = ?",
                (destination, incident_id, key),
            )
            continue
        conn.execute(
            "INSERT INTO notify_state (destination, incident_id, key, value, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (destination, incident_id, key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (destination, incident_id, key, value, now),
        )


def queue_depth(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT destination, count(*) AS n FROM outbox WHERE state = 'pending' GROUP BY destination"
    ).fetchall()
    return {r["destination"]: int(r["n"]) for r in rows}


def list_messages(conn: Connection, incident_id: str | None = None) -> list[dict[str, Any]]:
    """Stored messages, oldest first (for inspection and the incident API)."""
    where, args = ("WHERE incident_id = ?", (incident_id,)) if incident_id else ("", ())
    rows = conn.execute(
        "SELECT id, destination, incident_id, ordering_key, kind, payload, state, attempts,"
        " not_before, next_attempt_at, last_error, created_at, sent_at, priority, superseded_by"
        f" FROM outbox {where}"
        " ORDER BY id",
        args,
    ).fetchall()
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


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
    """The first pending message of every ordering key (the soonest hold-off, then the
    oldest), the most urgent keys first: by the most severe message waiting in the key, then
    the oldest head."""
    rows = conn.execute(
        "SELECT id, destination, incident_id, ordering_key, kind, payload, attempts, created_at,"
        " not_before, next_attempt_at FROM ("
        "   SELECT *, row_number() OVER ("
        "     PARTITION BY ordering_key ORDER BY not_before, id) AS n,"
        "   min(priority) OVER (PARTITION BY ordering_key) AS urgency"
        "   FROM outbox WHERE state = 'pending') AS queued"  # PostgreSQL < 16 needs the alias
        " WHERE n = 1 ORDER BY urgency, id"
    ).fetchall()
    return [_Head(r) for r in rows]


def _superseded(conn: Connection) -> list[Row]:
    """Queued messages a later queued one says again: each with the next message of its kind,
    incident and ordering key (``by_id``), unless that one or one between them changes state."""
    kinds = ", ".join("?" * len(SUPERSEDABLE))
    return conn.execute(
        "SELECT s.id, s.destination, s.by_id FROM ("
        "   SELECT old.id, old.destination, old.ordering_key, old.incident_id,"
        "     min(new.id) AS by_id"
        "   FROM outbox AS old JOIN outbox AS new"
        "     ON new.state = 'pending' AND new.ordering_key = old.ordering_key"
        "     AND new.incident_id = old.incident_id AND new.kind = old.kind AND new.id > old.id"
        f"  WHERE old.state = 'pending' AND old.kind IN ({kinds})"
        "   GROUP BY old.id) AS s"
        " JOIN outbox AS nw ON nw.id = s.by_id"
        f" WHERE NOT {_changes_state('nw')} AND NOT EXISTS ("
        "   SELECT 1 FROM outbox AS b"
        "   WHERE b.state = 'pending' AND b.ordering_key = s.ordering_key"
        "   AND b.incident_id = s.incident_id AND b.id > s.id AND b.id < s.by_id"
        f"  AND {_changes_state('b')})",
        SUPERSEDABLE,
    ).fetchall()


def _skip_superseded(conn: Connection) -> dict[str, int]:
    """Skip the queued messages a later queued message says again; the count per destination."""
    skipped: dict[str, int] = {}
    for r in _superseded(conn):
        cur = conn.execute(
            "UPDATE outbox SET state = 'skipped', superseded_by = ?, last_error = ?"
            " WHERE id = ? AND state = 'pending'",
            (r["by_id"], f"superseded by message {r['by_id']}, queued after it", r["id"]),
        )
        skipped[r["destination"]] = skipped.get(r["destination"], 0) + cur.rowcount
    return skipped


def _flapping(conn: Connection) -> list[Row]:
    """Status-page message queues whose incident resolved before the hold-off ended."""
    return conn.execute(
        "SELECT DISTINCT ordering_key, destination, incident_id FROM outbox"
        " WHERE state = 'pending' AND kind = 'statuspage.update'"
        " AND json_extract(payload, '$.status') = 'resolved'"
        # CAST: PostgreSQL's json_extract gives text (DOUBLE PRECISION is REAL to SQLite).
        " AND CAST(json_extract(payload, '$.resolved_at') AS DOUBLE PRECISION) < not_before"
    ).fetchall()


def _drop_flapping(conn: Connection) -> dict[str, int]:
    """Skip the status-page messages of incidents resolved within their hold-off that never
    reached the status page; the count skipped per destination."""
    skipped: dict[str, int] = {}
    for r in _flapping(conn):
        seen = conn.execute(
            # A superseded message never reached the status page: only what its sender saw.
            "SELECT 1 FROM outbox WHERE ordering_key = ? AND incident_id = ?"
            " AND (state = 'sent' OR (state = 'skipped' AND superseded_by IS NULL)) LIMIT 1",
            (r["ordering_key"], r["incident_id"]),
        ).fetchone()
        if seen is not None:
            continue  # the status page has its news already: it must hear the resolve too
        cur = conn.execute(
            "UPDATE outbox SET state = 'skipped', last_error = ?"
            " WHERE ordering_key = ? AND incident_id = ? AND state = 'pending'",
            ("resolved within the status-page hold-off", r["ordering_key"], r["incident_id"]),
        )
        skipped[r["destination"]] = skipped.get(r["destination"], 0) + cur.rowcount
    return skipped


def _prune(conn: Connection, *, older_than: float) -> int:
    """Forget finished messages created before ``older_than``; pending ones always stay."""
    cur = conn.execute(
        "DELETE FROM outbox WHERE state != 'pending' AND created_at < ?", (older_than,)
    )
    return cur.rowcount


def _record_sent(conn: Connection, message: Message, sent: Sent, *, now: float) -> None:
    conn.execute(
        "UPDATE outbox SET state = ?, sent_at = ?, attempts = attempts + 1, last_error = ?"
        " WHERE id = ?",
        ("skipped" if sent.skipped else "sent", now, sent.skipped, message.id),
    )
    if sent.remember:
        set_state(conn, message.destination, message.state_key, sent.remember, now=now)


def _record_retry(conn: Connection, message_id: int, *, error: str, next_attempt_at: float) -> None:
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
        " WHERE id = ?",
        (error[:MAX_ERROR], next_attempt_at, message_id),
    )


def _record_failed(conn: Connection, message_id: int, *, error: str) -> None:
    conn.execute(
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
        (error[:MAX_ERROR], message_id),
    )


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
        if await self._store.read(_flapping):  # read first: an idle pass writes nothing
            skipped = await self._store.write(_drop_flapping)
        for destination, count in skipped.items():
            self._metrics.notifications_skipped.labels(destination).inc(count)
            logger.info("status page held back: resolved within the hold-off", count=count)
        # Nothing is in flight between passes, so no message superseded here is being sent.
        superseded: dict[str, int] = {}
        if await self._store.read(_superseded):
            superseded = await self._store.write(_skip_superseded)
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
        pruned = await self._store.write(functools.partial(_prune, older_than=cutoff))
        if pruned:
            logger.info("pruned delivered notifications", count=pruned)

    async def _unconfigured(self, message: Message) -> None:
        error = f"destination {message.destination} is no longer configured"
        await self._store.write(
            functools.partial(_record_failed, message_id=message.id, error=error)
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
                    functools.partial(_record_failed, message_id=message.id, error=str(e))
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
                _record_retry,
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
