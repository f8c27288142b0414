"""Prometheus metrics for everything the service does, on a registry of its own.

One registry per application (not the global default) so several apps can live in one
process, as they do in tests, without colliding.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from receiver import __version__
from receiver.runbook import Severity

if TYPE_CHECKING:
    from receiver.store.incidents import ResponseTime

__all__ = [
    "INCIDENT_STATUSES",
    "LEADERSHIP_CHANGES",
    "PRUNE_REASONS",
    "RESPONSE_BUCKETS",
    "Metrics",
]

INCIDENT_STATUSES = ("open", "resolved")
PRUNE_REASONS = ("incident", "age", "size", "unfinished")
LEADERSHIP_CHANGES = ("gained", "lost")

# The *_created series double every counter for no use in alerting.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Processing runs in moments, but a storm or a slow store queues webhooks for minutes, and the
# worker's stall threshold (worker.stall_after_seconds) is 2 minutes by default: the buckets
# reach past it so a stalled backlog is measured, not lumped into +Inf.
PROCESSING_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
# Delivery includes the status page's hold-off (notify.statuspage.hold_off_seconds, 5 minutes
# by default), retries backing off up to notify.outbox.max_backoff_seconds (5 minutes) and a
# destination's Retry-After honoured up to max_retry_after_seconds (an hour). 330 sits just past
# the default hold-off: a status-page update sent on time lands below it, a late one above.
DELIVERY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 330, 600, 900, 1800, 3600, 7200,
)  # fmt: skip

# The runbook's response times (P1 15 minutes, P2 an hour, P3 four hours, P4 the next business
# day) are bucket bounds, so "answered within the target" is one bucket's count; the next
# business day reaches past a weekend (Friday evening to Monday morning: 3 days and a half).
RESPONSE_BUCKETS = (
    60, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 302400, 604800,
)  # fmt: skip
PAGERDUTY_WEBHOOK_OUTCOMES = (
    "recorded", "duplicate", "ignored", "unauthorized", "too_large", "bad_request", "unavailable",
)  # fmt: skip


class Metrics:
    """The service's collectors. Its own names start with ``posthog_receiver_``; the standard
    ``process_*``, ``python_info`` and ``python_gc_*`` series are there too."""

    def __init__(
        self,
        *,
        destinations: Iterable[str] = (),
        actions: Iterable[str] = (),
        action_statuses: Iterable[str] = (),
    ) -> None:
        """``destinations``, ``actions`` (the runbook entries' names) and ``action_statuses``
        are the label values known at start: their series are exported as 0 from the start."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The standard process_* (CPU, memory, file descriptors), python_info and python_gc_*
        # series, as every Python exporter has them.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "posthog_receiver_build_info",
            "Always 1; the receiver's version and the Python it runs on, as labels.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.webhooks = Counter(
            "posthog_receiver_webhooks_total",
            "Webhook requests by outcome (stored, duplicate, unauthorized, too_large, "
            "unsupported_media_type, bad_request, unavailable).",
            ["outcome"],
            registry=r,
        )
        self.alerts = Counter(
            "posthog_receiver_alert_changes_total",
            "Alert state changes recorded on incidents, by new status.",
            ["status"],
            registry=r,
        )
        self.connections_refused = Counter(
            "posthog_receiver_connections_refused_total",
            "Connections closed as soon as they were accepted: server.max_connections were open.",
            registry=r,
        )
        self.spool_damaged = Counter(
            "posthog_receiver_spool_damaged_total",
            "Damaged runs of acknowledged webhooks found in the spool (lost; the segment is kept "
            "in quarantine).",
            registry=r,
        )
        self.inbox_depth = Gauge(
            "posthog_receiver_inbox_depth",
            "Stored webhooks waiting to be processed.",
            registry=r,
        )
        self.spool_bytes = Gauge(
            "posthog_receiver_spool_bytes",
            "Acknowledged webhooks in the spool, not yet moved into the inbox (bytes).",
            registry=r,
        )
        self.inbox_repeats = Counter(
            "posthog_receiver_inbox_repeats_total",
            "Spooled webhooks found to be repeats when moved into the inbox (not processed "
            "again): resends older than the intake remembers, or moved again after a crash.",
            registry=r,
        )
        self.processing_seconds = Histogram(
            "posthog_receiver_processing_seconds",
            "Time from a webhook being stored to its changes being applied to incidents.",
            buckets=PROCESSING_BUCKETS,
            registry=r,
        )
        self.incidents = Counter(
            "posthog_receiver_incidents_total",
            "Incident lifecycle transitions (opened, resolved).",
            ["transition"],
            registry=r,
        )
        self.incident_events = Counter(
            "posthog_receiver_incident_events_total",
            "Incident events handled by the responder, by kind and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self.triage_failures = Counter(
            "posthog_receiver_triage_failures_total",
            "Incidents whose automatic triage failed before anyone was paged, paged instead with "
            "a minimal 'triage failed' alert (once per incident; triage is tried again).",
            registry=r,
        )
        self.worker_errors = Counter(
            "posthog_receiver_worker_errors_total",
            "Errors in the background worker, by stage.",
            ["stage"],
            registry=r,
        )
        self.remediation_actions = Counter(
            "posthog_receiver_remediation_actions_total",
            "Remediation decisions by action and status (applied, dry_run, skipped, failed,"
            " escalated, reverted).",
            ["action", "status"],
            registry=r,
        )
        self.notifications_sent = Counter(
            "posthog_receiver_notifications_sent_total",
            "Notifications delivered, by destination (pagerduty, statuspage, slack, log).",
            ["destination"],
            registry=r,
        )
        self.notifications_retried = Counter(
            "posthog_receiver_notifications_retried_total",
            "Delivery attempts that failed temporarily (429, 5xx, network) and will be retried.",
            ["destination"],
            registry=r,
        )
        self.notifications_failed = Counter(
            "posthog_receiver_notifications_failed_total",
            "Notifications given up on after a permanent failure (e.g. 400), by destination.",
            ["destination"],
            registry=r,
        )
        self.notifications_skipped = Counter(
            "posthog_receiver_notifications_skipped_total",
            "Notifications not sent on purpose (e.g. resolved within the status-page hold-off).",
            ["destination"],
            registry=r,
        )
        self.notification_queue_depth = Gauge(
            "posthog_receiver_notification_queue_depth",
            "Notifications stored and not yet delivered, by destination.",
            ["destination"],
            registry=r,
        )
        self.notification_delivery_seconds = Histogram(
            "posthog_receiver_notification_delivery_seconds",
            "Time from a notification being stored to its delivery (including any status-page "
            "hold-off), by destination.",
            ["destination"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.evidence_bundles = Counter(
            "posthog_receiver_evidence_bundles_total",
            "Evidence bundles written, by phase (opened, resolved).",
            ["phase"],
            registry=r,
        )
        self.evidence_source_failures = Counter(
            "posthog_receiver_evidence_source_failures_total",
            "Evidence sources that failed or were partly collected (e.g. pod_logs, "
            "prometheus:<query>), recorded as notes in the bundle.",
            ["source"],
            registry=r,
        )
        self.incidents_kept = Gauge(
            "posthog_receiver_incidents_kept",
            "Incidents in the store, by status (open, resolved); resolved ones are pruned after "
            "store.incident_retention_days.",
            ["status"],
            registry=r,
        )
        self.incidents_pruned = Counter(
            "posthog_receiver_incidents_pruned_total",
            "Resolved incidents deleted with their history after store.incident_retention_days.",
            registry=r,
        )
        self.evidence_bundles_kept = Gauge(
            "posthog_receiver_evidence_bundles_kept",
            "Evidence bundles in evidence.directory.",
            registry=r,
        )
        self.evidence_bytes = Gauge(
            "posthog_receiver_evidence_bytes",
            "Bytes of evidence in evidence.directory (bundles, and any being written); kept "
            "under evidence.max_total_mib unless open incidents' bundles alone exceed it.",
            registry=r,
        )
        self.evidence_bundles_pruned = Counter(
            "posthog_receiver_evidence_bundles_pruned_total",
            "Evidence files deleted, by reason: incident (its incident was pruned), age "
            "(evidence.retention_days), size (evidence.max_total_mib), unfinished (left "
            "half-written by a crash).",
            ["reason"],
            registry=r,
        )
        self.leader = Gauge(
            "posthog_receiver_leader",
            "1 while this replica leads (the one that acts: remediation, reverts, "
            "notifications, evidence), else 0.",
            registry=r,
        )
        self.leadership_changes = Counter(
            "posthog_receiver_leadership_changes_total",
            "Times this replica became leader (gained) or stopped leading (lost).",
            ["change"],
            registry=r,
        )
        self.time_to_acknowledge = Histogram(
            "posthog_receiver_time_to_acknowledge_seconds",
            "Time from an incident opening to its first acknowledgement (PagerDuty, or an "
            "approval), by severity.",
            ["severity"],
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.time_to_mitigate = Histogram(
            "posthog_receiver_time_to_mitigate_seconds",
            "Time from an incident opening to its mitigation (the first remediation that "
            "verified, or recovery), by severity.",
            ["severity"],
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.acknowledgements_overdue = Gauge(
            "posthog_receiver_acknowledgements_overdue",
            "Open incidents not acknowledged whose acknowledge-by time (the runbook's response "
            "time for their severity) has passed, by severity.",
            ["severity"],
            registry=r,
        )
        self.pagerduty_webhooks = Counter(
            "posthog_receiver_pagerduty_webhooks_total",
            "PagerDuty webhook requests by outcome (recorded, duplicate, ignored: not about "
            "our incidents, unauthorized, too_large, bad_request, unavailable).",
            ["outcome"],
            registry=r,
        )
        # Reported by `posthog-receiver drill --report-to` (POST /api/drills): a command cannot
        # be scraped. In memory: after a restart they are 0 until the next drill, so the alert
        # rules read them through max_over_time, which remembers across restarts.
        self.drill_last_run = Gauge(
            "posthog_receiver_drill_last_run_timestamp_seconds",
            "When the last drill reported to this replica finished (Unix time; 0: none yet).",
            registry=r,
        )
        self.drill_last_success = Gauge(
            "posthog_receiver_drill_last_success_timestamp_seconds",
            "When the last drill in which every step passed finished (Unix time; 0: none yet).",
            registry=r,
        )
        self.drill_steps_failed = Gauge(
            "posthog_receiver_drill_steps_failed",
            "Steps that failed in the last drill reported to this replica.",
            registry=r,
        )
        self._start_from_zero(list(destinations), list(actions), list(action_statuses))
        for severity in Severity:
            self.time_to_acknowledge.labels(severity.value)
            self.time_to_mitigate.labels(severity.value)
            self.acknowledgements_overdue.labels(severity.value)
        for outcome in PAGERDUTY_WEBHOOK_OUTCOMES:
            self.pagerduty_webhooks.labels(outcome)

    def observe_acknowledgement(self, measured: ResponseTime | None) -> None:
        """Count a first acknowledgement's time (nothing for a repeat or an untriaged one)."""
        if measured is not None and measured.severity is not None:
            self.time_to_acknowledge.labels(measured.severity.value).observe(measured.seconds)

    def observe_mitigation(self, measured: ResponseTime | None) -> None:
        """Count a first mitigation's time (nothing for a repeat or an untriaged one)."""
        if measured is not None and measured.severity is not None:
            self.time_to_mitigate.labels(measured.severity.value).observe(measured.seconds)

    def _start_from_zero(
        self, destinations: list[str], actions: list[str], action_statuses: list[str]
    ) -> None:
        # A labelled series does not exist until its first use, and Prometheus's increase()
        # or rate() over a series that appears already at 1 sees no increase: the first
        # failure would never fire its alert. So every known combination starts at 0.
        for destination in destinations:
            for counter in (
                self.notifications_sent,
                self.notifications_retried,
                self.notifications_failed,
                self.notifications_skipped,
            ):
                counter.labels(destination)
            self.notification_queue_depth.labels(destination)
            self.notification_delivery_seconds.labels(destination)
        for action in actions:
            for status in action_statuses:
                self.remediation_actions.labels(action, status)
        for status in INCIDENT_STATUSES:
            self.incidents_kept.labels(status)
        for reason in PRUNE_REASONS:
            self.evidence_bundles_pruned.labels(reason)
        for change in LEADERSHIP_CHANGES:
            self.leadership_changes.labels(change)
