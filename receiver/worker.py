"""The background worker: drains the inbox into incidents, then hands incident events on.

Received webhooks arrive in the spool (:mod:`receiver.spool`); the worker first moves them into
the store's inbox, many per commit, recognising repeats there. Then two durable queues, both in
the store: the inbox (received webhooks) and incident events
(opened, alerts changed, resolved). Each item is removed only after its work committed, so
work left behind by a crash or a shutdown is done after the next start. The responder must
therefore be idempotent for an event it may see twice; the remediation journal and the
notification outbox make it so.

Incidents are independent, so their events are handled concurrently (at most
``worker.max_concurrent_incidents`` at once): remediation waits inline for a rollout, and that
wait must delay only the incident concerned. Within one incident events are handled strictly
in order, one at a time, and a failed event holds back only that incident's later events.
A failed event is tried again with a growing backoff, up to ``MAX_EVENT_ATTEMPTS`` times; then
it is given up, and the incident's timeline says so. Nobody waits for that to be paged: the
responder pages a minimal alert at the first failure of a triage nobody was paged for.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from pydantic import ValidationError

from receiver.alertmanager import WebhookPayload
from receiver.background import BackgroundTask, wait_to_be_woken
from receiver.config import WorkerSettings
from receiver.metrics import Metrics
from receiver.redaction import Redactor
from receiver.retention import Retention
from receiver.spool import Spool
from receiver.store import Connection, Store, StoreUnavailable, now
from receiver.store.inbox import (
    InboxRow,
    enqueue_webhooks,
    inbox_depth,
    inbox_state,
    mark_inbox,
    pending_inbox,
    prune_inbox,
)
from receiver.store.incidents import (
    IncidentEvent,
    NotificationOutcome,
    add_timeline,
    apply_notification,
    due_events,
    mark_event,
    overdue_acknowledgements,
    retry_event,
)

__all__ = ["Responder", "Worker"]

logger = structlog.get_logger(__name__)

MAX_EVENT_ATTEMPTS = 10
PRUNE_EVERY_SECONDS = 300.0
# How often overdue acknowledgements are counted: the shortest response time is 15 minutes,
# so a count a few seconds late still fires the alert on time.
OVERDUE_EVERY_SECONDS = 15.0
INBOX_CHUNK = 16  # notifications applied per store write while draining the inbox
INBOX_CHUNK_BUSY = 2  # the same while webhooks keep arriving (one chunk per deferral bound)
SPOOL_CHUNK = 256  # spooled webhooks moved into the inbox per commit
SPOOL_CHUNK_BUSY = 32  # the same while webhooks keep arriving (one per deferral bound)
DEFER_STEP_SECONDS = 0.002  # how often a deferring worker looks whether webhooks still wait


class Responder(Protocol):
    """What happens after an incident changes: triage, remediation, notifications."""

    async def handle(self, event: IncidentEvent) -> None: ...


class Worker:
    """Processes stored webhooks and incident events until cancelled."""

    def __init__(
        self,
        *,
        store: Store,
        metrics: Metrics,
        responder: Responder,
        inbox_retention_seconds: float,
        settings: WorkerSettings | None = None,
        spool: Spool | None = None,
        retention: Retention | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._store = store
        self._redactor = redactor or Redactor()  # errors the timeline shows
        self._spool = spool
        self._metrics = metrics
        self._responder = responder
        self._inbox_retention = inbox_retention_seconds
        self._settings = settings or WorkerSettings()
        self._wake = asyncio.Event()
        self._loop = BackgroundTask("incident-worker", self._run)
        self._retention = retention
        # The first pass prunes and counts what is kept: the *_kept metrics hold from the start.
        self._last_prune = float("-inf")
        self._last_overdue_count = float("-inf")
        self._retention_left = False  # a pass ran out of its batch: continue at the next one
        self._incidents: dict[str, _Handling] = {}
        self._webhooks_waiting: Callable[[], bool] | None = None
        self._backlog_counted = False
        self.heartbeat = time.monotonic()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop the passes, then the incidents being handled (their events stay pending and
        are handled again after the next start)."""
        await self._loop.stop()
        handling = [h.task for h in self._incidents.values()]
        for task in handling:
            task.cancel()
        await asyncio.gather(*handling, return_exceptions=True)

    @property
    def alive(self) -> bool:
        return self._loop.alive

    @property
    def paused(self) -> bool:
        """Maintenance mode: stored webhooks wait in the inbox (``worker.paused``)."""
        return self._settings.paused

    @property
    def stalled(self) -> bool:
        """No pass completed, or one incident's handling has not finished, for
        ``worker.stall_after_seconds`` (e.g. a responder hangs)."""
        limit = time.monotonic() - self._settings.stall_after_seconds
        return self.heartbeat < limit or any(h.since < limit for h in self._incidents.values())

    def defer_to(self, webhooks_waiting: Callable[[], bool]) -> None:
        """Give webhooks waiting for their commit priority over applying the inbox.

        ``webhooks_waiting()`` tells whether the intake has requests waiting for a commit;
        while it does, the worker waits (up to ``worker.defer_to_webhooks_seconds``) before
        each chunk of stored notifications. They share one core: an acknowledgement is what
        Alertmanager waits for, the incident can follow a few milliseconds later.
        """
        self._webhooks_waiting = webhooks_waiting

    def wake(self) -> None:
        """Tell the worker there is new work (called after a webhook is spooled)."""
        self._wake.set()

    async def _run(self) -> None:
        if self.paused:
            logger.warning("worker paused: webhooks are stored but not processed")
        else:
            logger.info("worker started")
        while True:
            self.heartbeat = time.monotonic()
            try:
                busy = await (self._count_backlog() if self.paused else self.run_once())
            except StoreUnavailable as e:
                self._metrics.worker_errors.labels("store").inc()
                logger.warning("worker cannot reach the store; retrying", error=str(e))
                busy = False
            except Exception:
                self._metrics.worker_errors.labels("unexpected").inc()
                logger.exception("worker iteration failed")
                busy = False
            if not busy:
                await wait_to_be_woken(self._wake, seconds=self._settings.poll_interval_seconds)

    async def _count_backlog(self) -> bool:
        """Paused: spooled webhooks are still moved into the inbox, where they wait. The
        backlog is counted at the first pass (what the last run left) and after each move,
        the only changes while paused: not on every wake-up, which comes with every webhook."""
        moved = await self._move_spooled()
        if moved or not self._backlog_counted:
            self._metrics.inbox_depth.set(await self._store.read(inbox_depth))
            self._backlog_counted = True
        return moved

    async def run_once(self) -> bool:
        """One pass: spool to inbox, then both queues; ``True`` if anything was done."""
        moved = await self._move_spooled()
        did_inbox = await self._drain_inbox()
        did_events = await self._drain_events()
        await self._maybe_prune()
        if time.monotonic() - self._last_overdue_count >= OVERDUE_EVERY_SECONDS:
            self._last_overdue_count = time.monotonic()
            await self.count_overdue()
        return moved or did_inbox or did_events

    async def count_overdue(self, *, at: float | None = None) -> None:
        """Set the overdue-acknowledgement gauge: open incidents not acknowledged whose
        acknowledge-by time has passed at ``at`` (default: now), per severity."""
        moment = now() if at is None else at
        overdue = await self._store.read(lambda c: overdue_acknowledgements(c, at=moment))
        for severity, count in overdue.items():
            self._metrics.acknowledgements_overdue.labels(severity.value).set(count)

    async def _move_spooled(self) -> bool:
        """Move the oldest spooled webhooks (one chunk) into the inbox; ``True`` if any.

        Their place in the spool is given up only after the inbox commit: a crash in between
        moves them again, and the inbox recognises them as repeats.
        """
        spool = self._spool
        if spool is None or not spool.unread():
            return False
        busy = await self._defer_to_webhooks()
        received, cursor = await asyncio.to_thread(
            spool.read, SPOOL_CHUNK_BUSY if busy else SPOOL_CHUNK
        )
        if received:
            stored = await self._store.write(
                functools.partial(
                    enqueue_webhooks,
                    webhooks=[r[:3] for r in received],
                    received_at=[r[3] for r in received],
                )
            )
            repeats = stored.count(False)
            if repeats:
                self._metrics.inbox_repeats.inc(repeats)
        if cursor is not None:
            spool.consumed(cursor)
        return True

    async def _drain_inbox(self) -> bool:
        rows = await self._store.read(pending_inbox)
        if not rows:
            self._metrics.inbox_depth.set(0)
            return False
        # Submitted a few at a time, applied in order on the writer thread, committed as a
        # batch. Not all at once: the writer commits whatever is queued together, and the
        # webhooks waiting for their 200 would otherwise wait behind a hundred notifications'
        # worth of incident bookkeeping. Between chunks the event loop answers requests.
        outcomes: list[NotificationOutcome | None] = []
        start = 0
        while start < len(rows):
            busy = await self._defer_to_webhooks()
            chunk = rows[start : start + (INBOX_CHUNK_BUSY if busy else INBOX_CHUNK)]
            start += len(chunk)
            outcomes.extend(await asyncio.gather(*(self._store.write(_Apply(r)) for r in chunk)))
        for row, outcome in zip(rows, outcomes, strict=True):
            self._metrics.processing_seconds.observe(max(0.0, now() - row.received_at))
            if outcome is None:
                continue
            for change in outcome.changes:
                self._metrics.alerts.labels(change.status).inc()
            if outcome.opened:
                self._metrics.incidents.labels("opened").inc()
            if outcome.resolved:
                self._metrics.incidents.labels("resolved").inc()
            self._metrics.observe_mitigation(outcome.mitigation)
            logger.info(
                "notification applied",
                inbox_id=row.id,
                incident_id=outcome.incident_id,
                changes=len(outcome.changes),
                opened=outcome.opened,
                resolved=outcome.resolved,
            )
        self._metrics.inbox_depth.set(await self._store.read(inbox_depth))
        return True

    async def _defer_to_webhooks(self) -> bool:
        """Wait while webhooks wait for their write, for at most the configured bound: one
        chunk is applied per bound however long a storm lasts, so nothing starves. ``True``
        if webhooks are still waiting (the bound ran out)."""
        waiting = self._webhooks_waiting
        if waiting is None or not waiting():
            await asyncio.sleep(0)
            return False
        # Polled, not an event: the intake is busy for as long as requests keep coming, and a
        # look every few milliseconds costs nothing measurable.
        for _ in range(round(self._settings.defer_to_webhooks_seconds / DEFER_STEP_SECONDS)):
            await asyncio.sleep(DEFER_STEP_SECONDS)
            if not waiting():
                return False
        return True

    async def _drain_events(self) -> bool:
        """Hand each incident with due events to a task of its own, up to the configured
        number at once; ``True`` if any was started. An incident already being handled is
        left to its task: its later events are read again when that task ends."""
        free = self._settings.max_concurrent_incidents - len(self._incidents)
        if free <= 0:
            return False
        events = await self._store.read(functools.partial(due_events, busy=set(self._incidents)))
        queues: dict[str, list[IncidentEvent]] = {}
        for event in events:
            if event.incident_id in queues or len(queues) < free:
                queues.setdefault(event.incident_id, []).append(event)
        for incident_id, queue in queues.items():
            task = asyncio.create_task(self._handle_incident(queue), name=f"incident-{incident_id}")
            self._incidents[incident_id] = _Handling(task, time.monotonic())
            task.add_done_callback(functools.partial(self._incident_done, incident_id))
        return bool(queues)

    async def _handle_incident(self, events: list[IncidentEvent]) -> None:
        """One incident's events, strictly in order; a failure leaves the rest for later.

        Marking an event done is not awaited one by one: the marks commit in the writer's
        next group commit while the responder works on the next event. A crash in between
        hands an event to the responder again, which it must (and does) tolerate.
        """
        marks: list[asyncio.Future[None]] = []
        try:
            for event in events:
                log = logger.bind(incident_id=event.incident_id, kind=event.kind, event_id=event.id)
                try:
                    await self._responder.handle(event)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    attempts = event.attempts + 1
                    give_up = attempts >= MAX_EVENT_ATTEMPTS
                    self._metrics.incident_events.labels(
                        event.kind, "failed" if give_up else "retry"
                    ).inc()
                    log.exception("responder failed", attempts=attempts, giving_up=give_up)
                    marks.append(
                        asyncio.ensure_future(
                            self._store.write(
                                functools.partial(
                                    _record_failure,
                                    event=event,
                                    reason=self._redactor.error_line(e),
                                    give_up=give_up,
                                    backoff=min(300.0, 2.0**attempts),
                                )
                            )
                        )
                    )
                    return  # keep the incident's events in order: retry the failed one first
                marks.append(
                    asyncio.ensure_future(
                        self._store.write(
                            functools.partial(
                                mark_event, event_id=event.id, state="done", error=None
                            )
                        )
                    )
                )
                self._metrics.incident_events.labels(event.kind, "done").inc()
        finally:
            # Before the incident counts as idle again: its next read must see these marks.
            if marks:
                await asyncio.gather(*marks)

    def _incident_done(self, incident_id: str, task: asyncio.Task[None]) -> None:
        self._incidents.pop(incident_id, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            if isinstance(error, StoreUnavailable):
                self._metrics.worker_errors.labels("store").inc()
            else:
                self._metrics.worker_errors.labels("unexpected").inc()
            logger.error("handling an incident failed", incident_id=incident_id, error=repr(error))
        self._wake.set()  # its later events, or another incident waiting for a slot

    async def _maybe_prune(self) -> None:
        due = time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS
        if not due and not self._retention_left:
            return
        if due:
            self._last_prune = time.monotonic()
            cutoff = now() - self._inbox_retention
            pruned = await self._store.write(lambda c: prune_inbox(c, older_than=cutoff))
            if pruned:
                logger.info("pruned processed webhooks", count=pruned)
        if self._retention is not None:
            # Cleared first: a pass that fails waits for the next due time, not the next pass.
            self._retention_left = False
            self._retention_left = not await self._retention.run_once()


@dataclass(frozen=True)
class _Handling:
    """An incident being handled: its task, and since when (for :attr:`Worker.stalled`)."""

    task: asyncio.Task[None]
    since: float


def _record_failure(
    conn: Connection,
    *,
    event: IncidentEvent,
    reason: str,
    give_up: bool,
    backoff: float,
) -> None:
    """A failed attempt, in one write: the event backs off, or is given up and the
    incident's timeline says so (people were paged at the first failure, if triage failed
    before any page went out: see :class:`receiver.responder.IncidentResponder`)."""
    retry_event(conn, event.id, error=reason, give_up=give_up, backoff=backoff)
    if give_up:
        what = event.kind.replace("_", " ")
        add_timeline(
            conn,
            event.incident_id,
            "gave_up",
            f"automatic handling of the {what} event given up after {event.attempts + 1} "
            f"attempts ({reason}): follow the runbook by hand",
            {"event": event.kind, "attempts": event.attempts + 1, "error": reason},
        )


class _Apply:
    """Apply one inbox row, and mark it done, inside one write transaction."""

    def __init__(self, row: InboxRow) -> None:
        self.row = row

    def __call__(self, conn: Connection) -> NotificationOutcome | None:
        if inbox_state(conn, self.row.id) != "pending":
            return None  # done meanwhile (a second worker pass); nothing to do twice
        try:
            payload = WebhookPayload.model_validate_json(self.row.payload)
        except ValidationError as e:
            mark_inbox(conn, self.row.id, state="failed", error=str(e)[:500])
            return None
        outcome = apply_notification(conn, payload)
        mark_inbox(conn, self.row.id, state="done", error=None)
        return outcome
