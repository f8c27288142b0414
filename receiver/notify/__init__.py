"""Telling people: PagerDuty, the status page and Slack, delivered through a durable outbox.

The responder calls a :class:`Notifier` with an :class:`IncidentSnapshot`; the notifier
stores messages; an :class:`OutboxWorker` (started and stopped with the application)
delivers them, retrying until each destination has them. One module per outside system:
``pagerduty``, ``statuspage``, ``slack``; ``log`` stands in for any that is not configured.

Wiring, in the application's lifecycle (after the store is open)::

    redactor = Redactor.from_settings(settings)  # shared with logging and evidence
    notifier, outbox = notify.build_notifier(
        settings.notify,
        store=store,
        metrics=metrics,
        public_url=settings.server.public_url,
        prometheus_urls=notify.prometheus_urls(settings),
        redactor=redactor,
        ui=settings.ui,
    )
    outbox.start()
    ...
    await outbox.stop()  # before the store is closed
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from receiver.config import NotifySettings, Settings, UiSettings
from receiver.metrics import Metrics
from receiver.notify.notifier import Notifier
from receiver.notify.outbox import OutboxWorker
from receiver.notify.snapshot import IncidentSnapshot
from receiver.redaction import Redactor
from receiver.store import Store

__all__ = [
    "IncidentSnapshot",
    "Notifier",
    "OutboxWorker",
    "build_notifier",
    "prometheus_urls",
]


def build_notifier(
    settings: NotifySettings,
    *,
    store: Store,
    metrics: Metrics,
    public_url: str,
    prometheus_urls: Sequence[str] = (),
    redactor: Redactor,
    clock: Callable[[], float] = time.time,
    ui: UiSettings | None = None,
    fence: Callable[[], Awaitable[object]] | None = None,
) -> tuple[Notifier, OutboxWorker]:
    """The notifier and its outbox worker, wired together (the worker is not started);
    ``prometheus_urls`` are the configured Prometheus', whose host alert links may name; the
    errors the outbox stores are redacted by ``redactor``; links in messages go to the
    incident's page, signed as ``ui`` says; ``fence`` is awaited right before each send (see
    :class:`OutboxWorker`)."""
    worker = OutboxWorker(
        store=store,
        metrics=metrics,
        settings=settings,
        redactor=redactor,
        clock=clock,
        fence=fence,
    )
    notifier = Notifier(
        store=store,
        settings=settings,
        public_url=public_url,
        prometheus_urls=prometheus_urls,
        clock=clock,
        wake=worker.wake,
        ui=ui,
    )
    return notifier, worker


def prometheus_urls(settings: Settings) -> tuple[str, ...]:
    """The Prometheus the receiver is configured to query: links from alerts may go there."""
    return (settings.prometheus.url,) if settings.prometheus.url else ()
