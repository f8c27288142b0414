"""Telling people: PagerDuty, the status page and Slack, delivered through a durable outbox.

The responder calls a :class:`Notifier` with an :class:`IncidentSnapshot`; the notifier
stores messages; an :class:`OutboxWorker` (started and stopped with the application)
delivers them, retrying until each destination has them. One module per outside system:
``pagerduty``, ``statuspage``, ``slack``; ``log`` stands in for any that is not configured.

Wiring, in the application's lifecycle (after the store is open)::

    register_secrets(notify.secret_values(settings.notify))
    notifier, outbox = notify.build_notifier(
        settings.notify,
        store=store,
        metrics=metrics,
        public_url=settings.server.public_url,
        prometheus_urls=notify.prometheus_urls(settings),
    )
    outbox.start()
    ...
    await outbox.stop()  # before the store is closed
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from receiver.config import NotifySettings, Settings
from receiver.metrics import Metrics
from receiver.notify.notifier import Notifier
from receiver.notify.outbox import OutboxWorker
from receiver.notify.snapshot import IncidentSnapshot
from receiver.store import Store

__all__ = [
    "IncidentSnapshot",
    "Notifier",
    "OutboxWorker",
    "build_notifier",
    "prometheus_urls",
    "secret_values",
]


def build_notifier(
    settings: NotifySettings,
    *,
    store: Store,
    metrics: Metrics,
    public_url: str,
    prometheus_urls: Sequence[str] = (),
    clock: Callable[[], float] = time.time,
) -> tuple[Notifier, OutboxWorker]:
    """The notifier and its outbox worker, wired together (the worker is not started);
    ``prometheus_urls`` are the configured Prometheus', whose host alert links may name."""
    worker = OutboxWorker(store=store, metrics=metrics, settings=settings, clock=clock)
    notifier = Notifier(
        store=store,
        settings=settings,
        public_url=public_url,
        prometheus_urls=prometheus_urls,
        clock=clock,
        wake=worker.wake,
    )
    return notifier, worker


def prometheus_urls(settings: Settings) -> tuple[str, ...]:
    """The Prometheus the receiver is configured to query: links from alerts may go there."""
    urls = (settings.evidence.prometheus.url, settings.remediation.verify.prometheus_url)
    return tuple(url for url in urls if url)


def secret_values(settings: NotifySettings) -> list[str]:
    """The configured notification secrets, for log redaction."""
    found: list[str] = []
    if settings.pagerduty is not None:
        found.append(settings.pagerduty.routing_key.secret.get_secret_value())
    if settings.statuspage is not None:
        found.append(settings.statuspage.api_key.secret.get_secret_value())
    if settings.slack is not None:
        found.append(settings.slack.webhook_url.secret.get_secret_value())
    return found
