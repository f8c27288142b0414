"""The runbook's decision tree, as code that records every step it takes.

The runbook asks, in order::

    PostHog API returning errors?
    ├─ YES: Is status.posthog.com showing incident?
    │  ├─ YES → Wait for PostHog to resolve. Enable fallback.
    │  └─ NO  → Our integration issue. Check credentials, config.
    └─ NO: Is our service healthy?
       ├─ YES → Likely resolved or intermittent. Monitor.
       └─ NO  → Our infrastructure issue. Check pods, memory, network.

"PostHog API returning errors" is the error class: auth (401/403), rate_limited (429) and
upstream_error (5xx) are answers PostHog gave; network and unknown are not. The tree here:

1. Is PostHog having an incident (its status page: indicator minor, major or critical, or
   maintenance in progress)? Yes → ``vendor_incident``: fallback and wait, never restart our
   pods for PostHog's outage. Asked for every class, since PostHog being down also shows up
   as timeouts and refused connections.
2. For ``auth``: is our API key in order (the Secret exists, holds a key, and the pods started
   after it last changed)? No → ``our_integration`` (a missing or rotated key is ours to fix
   whatever the status page says).
3. Is our service healthy: the health endpoint and, with a cluster, the integration's pods?
   Either unhealthy → ``our_infrastructure``.
4. Nothing wrong found on our side:
   - status page green and PostHog answered with errors (auth, rate_limited, upstream_error)
     → ``our_integration``: a rejected key, our request volume, or requests PostHog refuses;
     this is the runbook's "NO → our integration issue";
   - status page green, no error answers (network, unknown), and some health check answered
     healthy → ``intermittent``: monitor;
   - otherwise → ``unknown``. In particular an unreadable status page never ends in
     ``intermittent`` (nor in ``our_integration`` from the status page's silence alone), and
     neither does a service whose health could not be checked at all.

Every outside question is asked through a small interface (status source, health source,
:class:`~receiver.cluster.ClusterView`), and no failure of one stops the tree: it becomes an
``unknown`` answer with its reason, recorded with the step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from receiver.cluster import ApiKeyReport, ClusterView, PodsReport
from receiver.health import HealthState, HealthStatus
from receiver.runbook import ErrorClass, Verdict
from receiver.upstream import UpstreamStatus
from receiver.wording import quoted

__all__ = [
    "API_ERROR_CLASSES",
    "Answer",
    "Decision",
    "HealthSource",
    "StatusSource",
    "Step",
    "decide",
]

T = TypeVar("T")
ERROR_CHARS = 200

# Classes where PostHog answered, with an error: the runbook's "PostHog API returning errors".
API_ERROR_CLASSES = frozenset({ErrorClass.AUTH, ErrorClass.RATE_LIMITED, ErrorClass.UPSTREAM_ERROR})

Q_UPSTREAM = "Is PostHog itself having an incident (status page)?"
Q_API_KEY = "Is our PostHog API key in order (secret exists, non-empty, loaded by the pods)?"
Q_HEALTH = "Is our service healthy (health endpoint)?"
Q_PODS = "Are the integration's pods healthy?"


class StatusSource(Protocol):
    """PostHog's status page (:class:`receiver.upstream.UpstreamReader`)."""

    async def status(self) -> UpstreamStatus: ...


class HealthSource(Protocol):
    """Our health endpoint (:class:`receiver.health.HealthReader`)."""

    async def check(self) -> HealthStatus: ...


class Answer(StrEnum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"
    NOT_CONFIGURED = "not_configured"


@dataclass(frozen=True)
class Step:
    """One question of the tree: its answer, a one-line finding, and the evidence behind it."""

    question: str
    answer: Answer
    finding: str
    evidence: dict[str, Any]
    duration_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer.value,
            "finding": self.finding,
            "evidence": self.evidence,
            "duration_ms": round(self.duration_ms, 1),
        }


@dataclass(frozen=True)
class Decision:
    """Where the tree ended for one error class, and the path it took."""

    error_class: ErrorClass
    verdict: Verdict
    summary: str
    steps: list[Step] = field(default_factory=list)
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, as stored on the incident and printed by the CLI."""
        return {
            "error_class": self.error_class.value,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "decided_at": self.decided_at.isoformat(),
            "steps": [s.as_dict() for s in self.steps],
        }


def _error(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class _Path:
    """The steps taken so far, each timed; each outside question bounded by ``limit_seconds``."""

    def __init__(self, limit_seconds: float) -> None:
        self.steps: list[Step] = []
        self.limit_seconds = limit_seconds
        self._started = time.perf_counter()

    async def ask(self, call: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
        """Ask an outside system; a failure is an answer too (``None`` and the reason)."""
        try:
            async with asyncio.timeout(self.limit_seconds):
                return await call(), None
        except TimeoutError:
            return None, f"no answer within {self.limit_seconds:g}s"
        except Exception as e:  # any failure of the outside system is evidence, not a crash
            return None, _error(e)

    def start(self) -> None:
        self._started = time.perf_counter()

    def record(
        self, question: str, answer: Answer, finding: str, evidence: dict[str, Any]
    ) -> Answer:
        elapsed = (time.perf_counter() - self._started) * 1000
        self.steps.append(Step(question, answer, finding, evidence, elapsed))
        return answer


async def _upstream_step(path: _Path, upstream: StatusSource) -> UpstreamStatus | None:
    path.start()
    status, error = await path.ask(upstream.status)
    if status is None:
        path.record(Q_UPSTREAM, Answer.UNKNOWN, f"status page not read ({error})", {"error": error})
        return None
    evidence = status.as_dict()
    if status.has_incident is None:
        path.record(
            Q_UPSTREAM,
            Answer.UNKNOWN,
            f"status page not readable ({status.error}); not taken as healthy",
            evidence,
        )
    elif status.has_incident:
        names = "; ".join(i.name for i in status.incidents)
        path.record(
            Q_UPSTREAM,
            Answer.YES,
            f"{status.indicator.value}: {status.description or 'incident'}"
            + (f" ({names})" if names else ""),
            evidence,
        )
    else:
        path.record(
            Q_UPSTREAM,
            Answer.NO,
            f"{status.indicator.value}: {status.description or 'all systems operational'}",
            evidence,
        )
    return status


def _key_evidence(report: ApiKeyReport) -> dict[str, Any]:
    # Facts about the Secret only: never its value.
    return {
        "exists": report.exists,
        "non_empty": report.non_empty,
        "changed_at": _iso(report.changed_at),
        "pods_started_at": _iso(report.pods_started_at),
        "rotated_since_pods_started": report.rotated_since_pods_started,
    }


async def _api_key_step(path: _Path, cluster: ClusterView | None) -> Answer:
    path.start()
    if cluster is None:
        return path.record(Q_API_KEY, Answer.NOT_CONFIGURED, "no cluster configured", {})
    report, error = await path.ask(cluster.api_key)
    if report is None:
        return path.record(Q_API_KEY, Answer.UNKNOWN, f"not read ({error})", {"error": error})
    evidence = _key_evidence(report)
    if not report.exists:
        return path.record(Q_API_KEY, Answer.NO, "the API-key secret does not exist", evidence)
    if not report.non_empty:
        return path.record(Q_API_KEY, Answer.NO, "the API-key secret holds no key", evidence)
    if report.rotated_since_pods_started:
        return path.record(
            Q_API_KEY,
            Answer.NO,
            "the key changed after the pods started: they still use the old key",
            evidence,
        )
    return path.record(
        Q_API_KEY, Answer.YES, "secret present, non-empty, loaded by the running pods", evidence
    )


async def _health_step(path: _Path, health: HealthSource | None) -> Answer:
    path.start()
    if health is None:
        return path.record(Q_HEALTH, Answer.NOT_CONFIGURED, "no health URL configured", {})
    status, error = await path.ask(health.check)
    if status is None:
        return path.record(Q_HEALTH, Answer.UNKNOWN, f"not read ({error})", {"error": error})
    evidence = status.as_dict()
    shown = f"'{status.path}' = {quoted(status.value)}" if status.value is not None else ""
    match status.state:
        case HealthState.HEALTHY:
            return path.record(Q_HEALTH, Answer.YES, shown or "healthy", evidence)
        case HealthState.UNHEALTHY:
            return path.record(Q_HEALTH, Answer.NO, status.reason or shown, evidence)
        case HealthState.NOT_CONFIGURED:
            return path.record(
                Q_HEALTH, Answer.NOT_CONFIGURED, "no health URL configured", evidence
            )
        case _:
            return path.record(Q_HEALTH, Answer.UNKNOWN, status.reason or "unreadable", evidence)


def _pods_evidence(report: PodsReport) -> dict[str, Any]:
    return {
        "desired_replicas": report.desired_replicas,
        "problems": report.problems,
        "pods": [
            {
                "name": p.name,
                "ready": p.ready,
                "restarts": p.restarts,
                "phase": p.phase,
                "waiting_reason": p.waiting_reason,
                "last_termination_reason": p.last_termination_reason,
                "started_at": _iso(p.started_at),
            }
            for p in report.pods
        ],
    }


async def _pods_step(path: _Path, cluster: ClusterView | None) -> Answer:
    path.start()
    if cluster is None:
        return path.record(Q_PODS, Answer.NOT_CONFIGURED, "no cluster configured", {})
    report, error = await path.ask(cluster.integration_pods)
    if report is None:
        return path.record(Q_PODS, Answer.UNKNOWN, f"not read ({error})", {"error": error})
    evidence = _pods_evidence(report)
    if report.healthy:
        return path.record(Q_PODS, Answer.YES, f"{len(report.pods)} pod(s), all healthy", evidence)
    return path.record(Q_PODS, Answer.NO, "; ".join(report.problems), evidence)


_OUR_INTEGRATION_HINT = {
    ErrorClass.AUTH: "PostHog rejects our key: verify it in the PostHog dashboard, update the "
    "secret and restart the pods",
    ErrorClass.RATE_LIMITED: "PostHog limits our request rate: queue requests, ask PostHog "
    "for a higher limit",
    ErrorClass.UPSTREAM_ERROR: "PostHog answers 5xx while its status page is green: check our "
    "requests and config; enable fallback; PostHog may not have posted the incident yet",
}


async def decide(
    error_class: ErrorClass,
    *,
    upstream: StatusSource,
    health: HealthSource | None = None,
    cluster: ClusterView | None = None,
    timeout_seconds: float = 10.0,
) -> Decision:
    """Walk the runbook's decision tree for ``error_class``; never raises for outside failures.

    ``timeout_seconds`` bounds each question (status page, health, each cluster question) on
    top of the readers' own timeouts.
    """
    path = _Path(timeout_seconds)

    def done(verdict: Verdict, summary: str) -> Decision:
        return Decision(error_class, verdict, summary, path.steps)

    status = await _upstream_step(path, upstream)
    vendor = None if status is None else status.has_incident
    if status is not None and status.has_incident:
        return done(
            Verdict.VENDOR_INCIDENT,
            f"PostHog reports an incident ({status.indicator.value}"
            f"{': ' + status.description if status.description else ''}): enable fallback and "
            "wait for PostHog to resolve; do not restart our pods",
        )

    if error_class is ErrorClass.AUTH:
        key = await _api_key_step(path, cluster)
        if key is Answer.NO:
            return done(
                Verdict.OUR_INTEGRATION,
                f"our API key is not in order ({path.steps[-1].finding}): update the secret "
                "and restart the pods",
            )

    service = await _health_step(path, health)
    pods = await _pods_step(path, cluster)
    if Answer.NO in (service, pods):
        found = "; ".join(s.finding for s in path.steps[-2:] if s.answer is Answer.NO)
        return done(
            Verdict.OUR_INFRASTRUCTURE,
            f"our service is unhealthy ({found}): check pods, memory, network",
        )

    seen_healthy = Answer.YES in (service, pods)
    if vendor is None:
        ours = "our service looks healthy" if seen_healthy else "our side could not be checked"
        return done(
            Verdict.UNKNOWN,
            "PostHog's status page could not be read, so a vendor incident cannot be ruled "
            f"out, and {ours}: check status.posthog.com by other means (e.g. another network)",
        )
    if error_class in API_ERROR_CLASSES:
        return done(
            Verdict.OUR_INTEGRATION,
            "PostHog is operational but answers with errors: our integration "
            f"({_OUR_INTEGRATION_HINT[error_class]})",
        )
    if seen_healthy:
        return done(
            Verdict.INTERMITTENT,
            "PostHog is operational and our service is healthy: likely resolved or "
            "intermittent; monitor",
        )
    return done(
        Verdict.UNKNOWN,
        "PostHog is operational, but our service's health could not be checked "
        "(no health URL or cluster answered): check it by hand",
    )
