"""The background worker: drains the inbox into incidents, then hands incident events on.

Two durable queues, both in the store: the inbox (received webhooks) and incident events
(opened, alerts changed, resolved). Each item is removed only after its work committed, so
work left behind by a crash or a shutdown is done after the next start. The responder must
therefore be idempotent for an event it may see twice; the remediation journal and the
notification outbox make it so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from typing import Protocol

import structlog
from pydantic import ValidationError

from receiver.alertmanager import WebhookPayload
from receiver.config import WorkerSettings
from receiver.incidents import (
    InboxRow,
    IncidentEvent,
    NotificationOutcome,
    apply_notification,
    due_events,
    inbox_depth,
    mark_event,
    mark_inbox,
    pending_inbox,
    prune_inbox,
    retry_event,
)
from receiver.metrics import Metrics
from receiver.store import Store, StoreUnavailable, now

__all__ = ["Responder", "Worker"]

logger = structlog.get_logger(__name__)

MAX_EVENT_ATTEMPTS = 10
PRUNE_EVERY_SECONDS = 300.0


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
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._responder = responder
        self._retention = inbox_retention_seconds
        self._settings = settings or WorkerSettings()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self.heartbeat = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="incident-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def paused(self) -> bool:
        """Maintenance mode: stored webhooks wait in the inbox (``worker.paused``)."""
        return self._settings.paused

    @property
    def stalled(self) -> bool:
        """No pass completed for ``worker.stall_after_seconds`` (e.g. a responder hangs)."""
        return time.monotonic() - self.heartbeat > self._settings.stall_after_seconds

    def wake(self) -> None:
        """Tell the worker there is new work (called after a webhook is stored)."""
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
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the event is set, and stop() then waits forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.poll_interval_seconds):
                        await self._wake.wait()
                self._wake.clear()

    async def _count_backlog(self) -> bool:
        self._metrics.inbox_depth.set(await self._store.read(inbox_depth))
        return False

    async def run_once(self) -> bool:
        """One pass over both queues; ``True`` if anything was done."""
        did_inbox = await self._drain_inbox()
        did_events = await self._drain_events()
        await self._maybe_prune()
        return did_inbox or did_events

    async def _drain_inbox(self) -> bool:
        rows = await self._store.read(pending_inbox)
        if not rows:
            self._metrics.inbox_depth.set(0)
            return False
        # Submitted together, applied in order on the writer thread, committed as a batch.
        outcomes = await asyncio.gather(*(self._store.write(_Apply(r)) for r in rows))
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

    async def _drain_events(self) -> bool:
        events = await self._store.read(due_events)
        # Marking an event done is not awaited one by one: the marks commit in the writer's
        # next group commit while the responder works on the next event. A crash in between
        # hands an event to the responder again, which it must (and does) tolerate.
        marks: list[asyncio.Future[None]] = []
        failed: set[str] = set()
        try:
            for event in events:
                if event.incident_id in failed:
                    continue  # keep each incident's events in order: retry the failed one first
                log = logger.bind(incident_id=event.incident_id, kind=event.kind, event_id=event.id)
                try:
                    await self._responder.handle(event)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    failed.add(event.incident_id)
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
                                    retry_event,
                                    event_id=event.id,
                                    error=str(e)[:500],
                                    give_up=give_up,
                                    backoff=min(300.0, 2.0**attempts),
                                )
                            )
                        )
                    )
                    continue
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
            if marks:
                await asyncio.gather(*marks)
        return bool(events)

    async def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = time.monotonic()
        cutoff = now() - self._retention
        pruned = await self._store.write(lambda c: prune_inbox(c, older_than=cutoff))
        if pruned:
            logger.info("pruned processed webhooks", count=pruned)


class _Apply:
    """Apply one inbox row, and mark it done, inside one write transaction."""

    def __init__(self, row: InboxRow) -> None:
        self.row = row

    def __call__(self, conn: sqlite3.Connection) -> NotificationOutcome | None:
        state = conn.execute("SELECT state FROM inbox WHERE id = ?", (self.row.id,)).fetchone()
        if state is None or state["state"] != "pending":
            return None  # done meanwhile (a second worker pass); nothing to do twice
        try:
            payload = WebhookPayload.model_validate_json(self.row.payload)
        except ValidationError as e:
            mark_inbox(conn, self.row.id, state="failed", error=str(e)[:500])
            return None
        outcome = apply_notification(conn, payload)
        mark_inbox(conn, self.row.id, state="done", error=None)
        return outcome
