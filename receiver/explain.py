"""Explain, without acting, what the service would decide and do for one notification.

``posthog-receiver triage`` is how an on-call engineer (or a test) asks "what would you do with
this alert?": the error class and severity of the group, the decision tree's path with its
evidence, and the actions and notifications the planners would produce. It only reads: the
status page and health endpoint by GET, the cluster through the read-only
:class:`~receiver.cluster.ClusterView`; nothing is stored, changed or sent.

Remediation and notification planning are supplied by the caller as plain callables, so this
module depends on neither; without them the lists are empty.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from receiver.alertmanager import WebhookPayload
from receiver.cluster import ClusterView
from receiver.config import Settings
from receiver.decision import Decision, HealthSource, StatusSource, decide
from receiver.health import HealthReader
from receiver.runbook import ErrorClass, Severity
from receiver.triage import AlertAssessment, acknowledge_by, assess
from receiver.upstream import UpstreamReader

__all__ = ["Planner", "TriageReport", "explain"]


@dataclass(frozen=True)
class TriageReport:
    """Everything triage concluded for one alert group."""

    group_key: str
    status: str
    error_class: ErrorClass
    severity: Severity
    acknowledge_by: datetime
    decision: Decision
    alerts: tuple[AlertAssessment, ...]
    actions: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        decision = self.decision.as_dict()
        return {
            "group_key": self.group_key,
            "status": self.status,
            "error_class": self.error_class.value,
            "severity": self.severity.value,
            "acknowledge_by": self.acknowledge_by.isoformat(),
            "verdict": self.decision.verdict.value,
            "summary": self.decision.summary,
            "decision": decision,
            "steps": decision["steps"],
            "alerts": [a.as_dict() for a in self.alerts],
            "actions": self.actions,
            "notifications": self.notifications,
        }


PlanResult = Sequence[Mapping[str, Any]]
Planner = Callable[[TriageReport], PlanResult | Awaitable[PlanResult]]
"""Given the report (with empty actions and notifications), what would be done; sync or async."""


async def _plan(planner: Planner | None, report: TriageReport) -> list[dict[str, Any]]:
    if planner is None:
        return []
    result = planner(report)
    if inspect.isawaitable(result):
        result = await result
    return [dict(item) for item in result]


async def explain(
    payload: WebhookPayload,
    settings: Settings,
    *,
    cluster: ClusterView | None = None,
    upstream: StatusSource | None = None,
    health: HealthSource | None = None,
    plan_actions: Planner | None = None,
    plan_notifications: Planner | None = None,
) -> TriageReport:
    """Triage one notification as the service would, without side effects.

    The group's firing alerts are assessed (all of them, if none is firing); its severity is
    the highest among them, and it must be acknowledged by the response time counted from the
    earliest ``startsAt``. ``upstream`` and ``health`` default to readers built from
    ``settings.triage`` (no health reader when no health URL is configured).
    """
    triage = settings.triage
    firing = [a for a in payload.alerts if a.status == "firing"] or list(payload.alerts)
    assessment = assess(((a.fingerprint, a.labels) for a in firing), triage)
    opened_at = min(a.starts_at for a in firing)

    own_upstream: UpstreamReader | None = None
    own_health: HealthReader | None = None
    if upstream is None:
        upstream = own_upstream = UpstreamReader(triage.upstream)
    if health is None and triage.health.url is not None:
        health = own_health = HealthReader(triage.health)
    try:
        decision = await decide(
            assessment.error_class,
            upstream=upstream,
            health=health,
            cluster=cluster,
            timeout_seconds=triage.cluster_timeout_seconds,
        )
    finally:
        if own_upstream is not None:
            await own_upstream.close()
        if own_health is not None:
            await own_health.close()

    report = TriageReport(
        group_key=payload.group_key,
        status=payload.status,
        error_class=assessment.error_class,
        severity=assessment.severity,
        acknowledge_by=acknowledge_by(opened_at, assessment.severity, triage),
        decision=decision,
        alerts=assessment.alerts,
    )
    return replace(
        report,
        actions=await _plan(plan_actions, report),
        notifications=await _plan(plan_notifications, report),
    )
