"""The responder: what the service does once an incident opens, changes or resolves.

The runbook, in order, for every incident event the worker hands over:

* ``opened`` / ``alerts_changed``: read the incident's firing alerts, classify and rate them
  (:func:`~receiver.triage.assess`), walk the decision tree (:func:`~receiver.decision.decide`:
  PostHog's status page, our health URL, the cluster), store the result on the incident in one
  write, page (opened) or update the page (changed), run the runbook's guarded actions, tell
  people about each one, and on ``opened`` collect the first evidence bundle.
* ``resolved``: schedule the revert of what was changed (after the hold-down), resolve the
  page and the status page, and collect the evidence again with the postmortem draft.

The worker removes an event only after :meth:`IncidentResponder.handle` returned, so after a
crash the same event is handled again. Nothing is done twice for it: remediation keeps a
journal (an action done for the incident is not applied again), and every notification
carries an idempotency key derived from the incident and what it says, so a message stored
before the crash is not stored again. Action notifications are derived from the incident's
timeline, not from what one call returned, so an action applied just before a crash is still
announced after the restart, once.

An incident is never silent: when triage fails before anyone was paged (a bug, data it cannot
handle), a minimal "triage failed" alert pages people at once, with the incident's usual
PagerDuty key, and the worker tries the full triage again; when it succeeds, it updates that
same alert.

Remediation and evidence are reached through the small interfaces below; with neither
configured (or available) the responder still triages, records and notifies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from receiver.alertmanager import WebhookPayload
from receiver.background import BackgroundTask
from receiver.cluster import ClusterView
from receiver.config import Settings, StoreSettings, TriageSettings
from receiver.decision import Q_UPSTREAM, Decision, HealthSource, StatusSource, decide
from receiver.explain import TriageReport
from receiver.metrics import Metrics
from receiver.notify import IncidentSnapshot, Notifier, prometheus_urls
from receiver.notify.outbox import list_messages
from receiver.redaction import Redactor
from receiver.remediation import Remediator
from receiver.runbook import ErrorClass, Severity, Verdict
from receiver.store import Store
from receiver.store.approvals import Approval
from receiver.store.approvals import Decision as ApprovalDecision
from receiver.store.incidents import (
    IncidentEvent,
    add_timeline,
    apply_notification,
    get_incident,
    record_triage,
)
from receiver.triage import acknowledge_by, assess

__all__ = [
    "EvidenceSink",
    "IncidentResponder",
    "Remediation",
    "RemediationPending",
    "ResponsePreview",
    "RevertChecks",
    "action_notice",
    "action_notices",
    "snapshot_of",
    "step_line",
    "untriaged_snapshot",
]

logger = structlog.get_logger(__name__)

Phase = Literal["opened", "resolved"]
Log = Any  # a bound structlog logger

# Remediation records every outcome on the incident's timeline under this kind.
REMEDIATION_ENTRY = "remediation"
# A skip saying the journal already has the action for this incident is a repeat (an event
# handled again, or alerts changing while the action is in place), not news for people.
REPEAT_SKIP_PREFIX = "already handled"
NOTIFIED_OUTCOMES = frozenset(
    {
        "applied",
        "dry_run",
        "skipped",
        "failed",
        "escalated",
        "reverted",
        "awaiting_approval",
        "approved",
        "denied",
    }
)
# A severity for an incident that has not been triaged (its triage failed every attempt).
UNTRIAGED_SEVERITY = Severity.P3
# The timeline entry saying automatic triage failed and a minimal alert paged people.
TRIAGE_FAILED_ENTRY = "triage_failed"


class RemediationPending(Exception):
    """An action was stopped by an unavailable Kubernetes API: handle the event again later."""


class Remediation(Protocol):
    """The runbook's guarded actions (:class:`receiver.remediation.Remediator`)."""

    async def remediate(
        self,
        *,
        incident_id: str,
        error_class: ErrorClass | str | None,
        verdict: Verdict | str | None,
        labels: Mapping[str, str],
    ) -> Sequence[object]: ...

    async def schedule_revert(self, *, incident_id: str) -> float | None: ...

    async def due_reverts(self) -> list[str]: ...

    async def revert(self, *, incident_id: str) -> Sequence[object]: ...

    async def decide(
        self, approval_id: str, *, decision: ApprovalDecision, by: str, via: str, origin: str
    ) -> Approval | None: ...

    async def apply_approved(self, decided: Approval) -> object: ...

    async def expire_due(self) -> list[str]: ...


class EvidenceSink(Protocol):
    """Evidence bundles and the postmortem draft (:class:`receiver.evidence.EvidenceCollector`)."""

    async def collect(
        self, *, incident_id: str, phase: Phase, upstream: dict[str, Any] | None
    ) -> Any: ...


# -- from the stored incident to what the notifier needs ------------------------------------


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _digest(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _enum(kind: type[ErrorClass] | type[Verdict], value: Any) -> Any:
    try:
        return kind(value) if value else None
    except ValueError:
        return None


def action_notice(outcome: Mapping[str, Any]) -> dict[str, Any] | None:
    """One remediation outcome (as recorded: ``action``, ``status``, ``target``, ``reason``,
    ``before``, ``after``) in the form the notifier reads (``id``, ``name``, ``outcome``,
    ``target``, ``detail``); ``None`` for what is not news to people.

    The ``id`` is derived from what the outcome says, not when: the same outcome recorded
    again (an event handled twice) has the same id, and the notifier stores it once.
    """
    status = str(outcome.get("status") or "")
    reason = str(outcome.get("reason") or "")
    if status not in NOTIFIED_OUTCOMES:
        return None  # e.g. a label selection that was ignored: logged, not paged
    if status == "skipped" and reason.startswith(REPEAT_SKIP_PREFIX):
        return None
    name = str(outcome.get("action") or "action")
    before, after = outcome.get("before"), outcome.get("after")
    ident = _digest(name, status, reason, before, after)
    return {
        "id": ident,
        "approval_id": outcome.get("approval_id"),
        "name": name,
        "outcome": status,
        "target": str(outcome.get("target") or ""),
        "detail": reason,
        "before": before,
        "after": after,
    }


def action_notices(incident: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The remediation outcomes on an incident's timeline that people should hear about,
    oldest first, one per distinct outcome (see :func:`action_notice`)."""
    notices: dict[str, dict[str, Any]] = {}
    for entry in incident.get("timeline", ()):
        if entry.get("kind") != REMEDIATION_ENTRY:
            continue
        notice = action_notice(entry.get("data") or {})
        if notice is not None:
            notices.setdefault(notice["id"], notice)
    return list(notices.values())


def step_line(step: Mapping[str, Any]) -> str:
    """One decision step as one line: question, answer, finding."""
    return f"{step.get('question', '')} {step.get('answer', '')}: {step.get('finding', '')}"


def snapshot_of(
    incident: Mapping[str, Any], *, actions: Sequence[Mapping[str, Any]] = ()
) -> IncidentSnapshot:
    """The notifier's view of a stored incident (as :func:`receiver.store.incidents.get_incident`
    returns it)."""
    decision = incident.get("decision") or {}
    alerts = incident.get("alerts") or []
    firing = [a for a in alerts if a.get("status") == "firing"] or alerts
    generator = next((a["generatorURL"] for a in firing if a.get("generatorURL")), "")
    severity = incident.get("severity")
    opened_at = _timestamp(incident.get("openedAt"))
    return IncidentSnapshot(
        id=incident["id"],
        title=incident.get("title") or incident["id"],
        status="resolved" if incident.get("status") == "resolved" else "open",
        severity=Severity(severity) if severity else UNTRIAGED_SEVERITY,
        opened_at=opened_at if opened_at is not None else time.time(),
        error_class=_enum(ErrorClass, incident.get("errorClass")),
        verdict=_enum(Verdict, decision.get("verdict")),
        decision_summary=str(decision.get("summary") or ""),
        decision_steps=tuple(step_line(s) for s in decision.get("steps", ())),
        actions=tuple(actions),
        generator_url=generator or "",
        external_url=incident.get("externalURL") or "",
        resolved_at=_timestamp(incident.get("resolvedAt")),
        labels=dict(incident.get("groupLabels") or {}),
        acknowledged=incident.get("acknowledgedAt") is not None,
    )


def untriaged_snapshot(incident: Mapping[str, Any]) -> IncidentSnapshot:
    """The notifier's view of an incident whose triage failed: what the alerts said and
    nothing triage works out, so whatever made triage fail cannot stop this page too."""
    alerts = incident.get("alerts") or []
    generator = next((str(a["generatorURL"]) for a in alerts if a.get("generatorURL")), "")
    try:
        opened_at = _timestamp(incident.get("openedAt"))
    except ValueError:
        opened_at = None
    return IncidentSnapshot(
        id=incident["id"],
        title=str(incident.get("title") or incident["id"]),
        status="open",
        severity=UNTRIAGED_SEVERITY,
        opened_at=opened_at if opened_at is not None else time.time(),
        generator_url=generator,
        external_url=str(incident.get("externalURL") or ""),
        labels={str(k): str(v) for k, v in (incident.get("groupLabels") or {}).items()},
    )


def _shared_labels(alerts: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Labels every alert carries with the same value: all a label may do is narrow the
    configured actions, so alerts that disagree narrow nothing."""
    if not alerts:
        return {}
    shared = dict(alerts[0].get("labels") or {})
    for alert in alerts[1:]:
        labels = alert.get("labels") or {}
        shared = {k: v for k, v in shared.items() if labels.get(k) == v}
    return shared


def _upstream_evidence(steps: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    for step in steps:
        if step.get("question") == Q_UPSTREAM:
            evidence = step.get("evidence")
            return dict(evidence) if isinstance(evidence, Mapping) else None
    return None


# -- the responder --------------------------------------------------------------------------


class IncidentResponder:
    """Triage, remediation, notifications and evidence for each incident event."""

    def __init__(
        self,
        *,
        store: Store,
        triage: TriageSettings,
        upstream: StatusSource,
        health: HealthSource | None = None,
        cluster: ClusterView | None = None,
        remediation: Remediation | None = None,
        notifier: Notifier | None = None,
        evidence: EvidenceSink | None = None,
        metrics: Metrics | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._store = store
        self._redactor = redactor or Redactor()  # errors a page or the timeline shows
        self._triage = triage
        self._upstream = upstream
        self._health = health
        self._cluster = cluster
        self._remediation = remediation
        self._notifier = notifier
        self._evidence = evidence
        self._metrics = metrics
        # Approved actions being applied, off the request that approved them (Slack expects
        # an answer within 3 seconds; a rollout takes minutes): finished or cancelled on stop.
        self._applying: set[asyncio.Task[None]] = set()

    async def handle(self, event: IncidentEvent) -> None:
        """Respond to one incident event; safe to call again for the same event.

        When triage fails before anyone was paged, a minimal "triage failed" alert pages
        people at once, and the error is raised on: the worker tries the full triage again.
        """
        log = logger.bind(incident_id=event.incident_id, kind=event.kind, event_id=event.id)
        incident = await self._incident(event.incident_id)
        if incident is None:
            log.warning("incident event for an unknown incident; nothing to do")
            return
        if event.kind == "resolved":
            await self._resolved(incident, log)
            return
        try:
            await self._triaged(incident, event.kind, log)
        except RemediationPending:
            raise  # triaged and paged; the journal applies the rest on the next attempt
        except Exception as e:
            await self._page_triage_failed(incident, e, attempt=event.attempts + 1, log=log)
            raise

    # -- opened / alerts changed ------------------------------------------------------------

    async def _triaged(self, incident: dict[str, Any], kind: str, log: Log) -> None:
        incident_id = incident["id"]
        alerts: list[dict[str, Any]] = incident.get("alerts") or []
        firing = [a for a in alerts if a.get("status") == "firing"]
        if not firing and kind != "opened":
            # Every alert resolved: the resolved event that follows does the rest.
            log.info("no firing alerts left; nothing to triage")
            return
        assessed = firing or alerts
        assessment = assess(
            ((str(a["fingerprint"]), a.get("labels") or {}) for a in assessed), self._triage
        )
        decision = await decide(
            assessment.error_class,
            upstream=self._upstream,
            health=self._health,
            cluster=self._cluster,
            timeout_seconds=self._triage.cluster_timeout_seconds,
        )
        starts = [t for a in assessed if (t := _timestamp(a.get("startsAt"))) is not None]
        opened_at = datetime.fromtimestamp(min(starts), UTC) if starts else decision.decided_at
        deadline = acknowledge_by(opened_at, assessment.severity, self._triage)
        await self._store.write(
            functools.partial(
                record_triage,
                incident_id=incident_id,
                error_class=assessment.error_class,
                severity=assessment.severity,
                acknowledge_by=deadline,
                decision=decision.as_dict(),
            )
        )
        log.info(
            "incident triaged",
            error_class=assessment.error_class.value,
            severity=assessment.severity.value,
            verdict=decision.verdict.value,
        )

        # Page first: a remediation may wait minutes for a rollout, people should not.
        triaged = await self._incident(incident_id) or incident
        if self._notifier is not None:
            snapshot = snapshot_of(triaged, actions=action_notices(triaged))
            if kind == "opened":
                await self._notifier.incident_opened(snapshot)
            else:
                await self._notifier.incident_changed(snapshot)

        outcomes: Sequence[object] = ()
        if self._remediation is not None and triaged.get("status") == "open":
            outcomes = await self._remediation.remediate(
                incident_id=incident_id,
                error_class=assessment.error_class,
                verdict=decision.verdict,
                labels=_shared_labels(assessed),
            )
        await self._announce_actions(incident_id)

        if kind == "opened":
            await self._collect(incident_id, "opened", self._upstream_of(decision), log)
        if any(getattr(o, "transient", False) for o in outcomes):
            # People have been told. The worker hands this event over again after a backoff,
            # and the remediation journal applies what is still missing, once.
            raise RemediationPending("the Kubernetes API was unavailable; trying again later")

    async def _page_triage_failed(
        self, incident: dict[str, Any], error: Exception, *, attempt: int, log: Log
    ) -> None:
        """Page a minimal alert for an incident nobody has been paged for (see
        :meth:`Notifier.triage_failed`), and say so on its timeline. A page cannot wait for
        the retries (about 13 minutes in all): it goes after the first failure, once."""
        if self._notifier is None:
            return
        reason = self._redactor.error_line(error)
        incident_id = incident["id"]
        try:
            stored = await self._notifier.triage_failed(untriaged_snapshot(incident), error=reason)
            if not stored:
                return  # paged already (by this, or by a triage that got that far)
            await self._store.write(
                functools.partial(
                    add_timeline,
                    incident_id=incident_id,
                    kind=TRIAGE_FAILED_ENTRY,
                    message=f"automatic triage failed ({reason}): paged a minimal alert; "
                    "follow the runbook by hand, triage is tried again",
                    data={"error": reason, "attempt": attempt},
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # The next attempt tries again; the original error is what the worker records.
            log.exception("paging the failed triage failed")
            return
        if self._metrics is not None:
            self._metrics.triage_failures.inc()
        log.warning("automatic triage failed; paged a minimal alert", error=reason)

    # -- resolved ---------------------------------------------------------------------------

    async def _resolved(self, incident: dict[str, Any], log: Log) -> None:
        incident_id = incident["id"]
        if self._remediation is not None:
            due = await self._remediation.schedule_revert(incident_id=incident_id)
            if due is not None:
                log.info("revert scheduled", due=datetime.fromtimestamp(due, UTC).isoformat())
        if self._notifier is not None:
            await self._notifier.incident_resolved(
                snapshot_of(incident, actions=action_notices(incident))
            )
        decision = incident.get("decision") or {}
        await self._collect(
            incident_id, "resolved", _upstream_evidence(decision.get("steps", ())), log
        )

    # -- reverts after the hold-down --------------------------------------------------------

    async def revert_due(self) -> int:
        """Revert the changes of every incident whose hold-down has passed, and tell people;
        the number of incidents handled."""
        if self._remediation is None:
            return 0
        handled = 0
        for incident_id in await self._remediation.due_reverts():
            log = logger.bind(incident_id=incident_id)
            try:
                await self._remediation.revert(incident_id=incident_id)
                await self._announce_actions(incident_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The journal keeps the revert due: it is tried again at the next check.
                log.exception("revert failed; will try again")
                continue
            handled += 1
        return handled

    # -- approvals --------------------------------------------------------------------------

    async def decide_approval(
        self, approval_id: str, *, decision: ApprovalDecision, by: str, via: str, origin: str
    ) -> Approval | None:
        """A person approved or denied an action: record it (once, whoever was first) and tell
        people; an approved action is then applied in the background. ``None``: it was decided
        before, or there is no remediation here."""
        if self._remediation is None:
            return None
        decided = await self._remediation.decide(
            approval_id, decision=decision, by=by, via=via, origin=origin
        )
        if decided is None:
            return None
        await self._announce_actions(decided.incident_id)
        if decided.state == "approved":
            task = asyncio.create_task(self._apply(decided), name=f"approved-{decided.id}")
            self._applying.add(task)
            task.add_done_callback(self._applying.discard)
        return decided

    async def _apply(self, decided: Approval) -> None:
        log = logger.bind(incident_id=decided.incident_id, action=decided.action)
        assert self._remediation is not None
        try:
            await self._remediation.apply_approved(decided)
            await self._announce_actions(decided.incident_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Approved stays approved: the next remediation of the incident applies it.
            log.exception("applying an approved action failed")

    async def expire_approvals(self) -> int:
        """Expire and escalate the approvals nobody decided in time; how many incidents."""
        if self._remediation is None:
            return 0
        incidents = await self._remediation.expire_due()
        for incident_id in dict.fromkeys(incidents):
            await self._announce_actions(incident_id)
        return len(incidents)

    async def stop_approvals(self) -> None:
        """Let approved actions under way finish their journal writes, or cancel them."""
        for task in list(self._applying):
            task.cancel()
        await asyncio.gather(*self._applying, return_exceptions=True)

    # -- helpers ----------------------------------------------------------------------------

    async def _incident(self, incident_id: str) -> dict[str, Any] | None:
        return await self._store.read(lambda conn: get_incident(conn, incident_id))

    async def _announce_actions(self, incident_id: str) -> None:
        """Notify every remediation outcome on the timeline; those notified before (by id)
        are not stored again."""
        if self._notifier is None:
            return
        incident = await self._incident(incident_id)
        if incident is None:
            return
        notices = action_notices(incident)
        snapshot = snapshot_of(incident, actions=notices)
        for notice in notices:
            await self._notifier.action_taken(snapshot, notice, event_id=f"action-{notice['id']}")

    @staticmethod
    def _upstream_of(decision: Decision) -> dict[str, Any] | None:
        return _upstream_evidence([s.as_dict() for s in decision.steps])

    async def _collect(
        self,
        incident_id: str,
        phase: Phase,
        upstream: dict[str, Any] | None,
        log: Log,
    ) -> None:
        if self._evidence is None:
            return
        try:
            where = await self._evidence.collect(
                incident_id=incident_id, phase=phase, upstream=upstream
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # Evidence is collected again on demand (API, CLI); it must not hold up the
            # response or make the event be handled again.
            log.exception("evidence collection failed", phase=phase)
            return
        log.info("evidence collected", phase=phase, bundle=str(where))


class RevertChecks:
    """Asks the responder, every ``interval_seconds``, to revert what is due and to expire
    the approvals nobody decided in time."""

    def __init__(self, responder: IncidentResponder, *, interval_seconds: float) -> None:
        self._responder = responder
        self._interval = interval_seconds
        self._loop = BackgroundTask("revert-checks", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    @property
    def alive(self) -> bool:
        return self._loop.alive

    async def _run(self) -> None:
        while True:
            try:
                await self._responder.revert_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("revert check failed")
            try:
                await self._responder.expire_approvals()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("approval expiry check failed")
            await asyncio.sleep(self._interval)


# -- what would be done, for ``posthog-receiver triage`` -----------------------------------

PREVIEW_NO_CLUSTER = "a preview never touches the cluster"


def _message_summary(kind: str, payload: Mapping[str, Any]) -> str:
    body = payload.get("payload")
    if isinstance(body, Mapping) and body.get("summary"):
        return str(body["summary"])
    if kind.startswith("pagerduty."):
        return f"{payload.get('event_action', kind)} {payload.get('dedup_key', '')}".strip()
    if kind == "slack.message":
        lines = str(payload.get("text", "")).splitlines() or [""]
        action = next((line for line in lines if line.startswith("Current action:")), None)
        return f"{lines[0]} ({action})" if action else lines[0]
    if kind == "statuspage.update":
        return f"{payload.get('status')}: component {payload.get('component_status')}"
    return kind


class ResponsePreview:
    """What the responder would do for one notification, without doing it.

    The same code runs as in the service, against a scratch store deleted afterwards: the
    notification opens an incident there, the triage report is recorded on it, remediation
    plans the runbook's entries and evaluates its guards in dry run without a cluster (a
    preview writes nothing, not even a Kubernetes Event), and the notifier renders the
    messages it would queue. Nothing is sent and the real store is never opened.

    ``actions`` and ``notifications`` are the planners :func:`receiver.explain.explain`
    takes; it calls ``actions`` first, so the notifications include one per action.
    """

    def __init__(self, settings: Settings, payload: WebhookPayload) -> None:
        self._settings = settings
        self._payload = payload
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._store: Store | None = None
        self._incident_id: str | None = None
        self._triaged = False

    async def __aenter__(self) -> ResponsePreview:
        self._scratch = tempfile.TemporaryDirectory(prefix="posthog-receiver-preview-")
        self._store = Store(StoreSettings(path=Path(self._scratch.name) / "preview.sqlite3"))
        await self._store.open()
        payload = self._payload
        outcome = await self._store.write(lambda conn: apply_notification(conn, payload))
        self._incident_id = outcome.incident_id  # None: nothing firing, nothing would open
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    async def _record(self, store: Store, incident_id: str, report: TriageReport) -> None:
        if self._triaged:
            return
        await store.write(
            functools.partial(
                record_triage,
                incident_id=incident_id,
                error_class=report.error_class,
                severity=report.severity,
                acknowledge_by=report.acknowledge_by,
                decision=report.decision.as_dict(),
            )
        )
        self._triaged = True

    def _opened(self) -> tuple[Store, str] | None:
        if self._store is None or self._incident_id is None:
            return None
        return self._store, self._incident_id

    async def actions(self, report: TriageReport) -> list[dict[str, Any]]:
        """The runbook entries for the report's class and verdict, each with what its guards
        decided (``dry_run`` with what would change, or ``skipped``/``escalated`` and why)."""
        opened = self._opened()
        if opened is None:
            return []
        store, incident_id = opened
        await self._record(store, incident_id, report)
        remediator = Remediator(
            settings=self._settings.remediation.model_copy(update={"dry_run": True}),
            store=store,
            workload=None,
            no_cluster_reason=PREVIEW_NO_CLUSTER,
        )
        firing = [a for a in self._payload.alerts if a.status == "firing"]
        outcomes = await remediator.remediate(
            incident_id=incident_id,
            error_class=report.error_class,
            verdict=report.decision.verdict,
            labels=_shared_labels([{"labels": a.labels} for a in firing]),
        )
        return [o.as_dict() for o in outcomes]

    async def notifications(self, report: TriageReport) -> list[dict[str, Any]]:
        """The messages that would be queued: on open, then one per action; each with its
        destination (``log`` for one not configured), kind, occasion, a one-line summary and
        how long delivery would wait (the status page's hold-off)."""
        opened = self._opened()
        if opened is None:
            return []
        store, incident_id = opened
        await self._record(store, incident_id, report)
        incident = await store.read(lambda conn: get_incident(conn, incident_id))
        assert incident is not None  # opened in __aenter__
        notices = action_notices(incident)
        snapshot = snapshot_of(incident, actions=notices)
        # Delivery waits are counted from now, as for an incident opening now.
        snapshot = dataclasses.replace(snapshot, opened_at=time.time())
        notifier = Notifier(
            store=store,
            settings=self._settings.notify,
            public_url=self._settings.server.public_url,
            prometheus_urls=prometheus_urls(self._settings),
            ui=self._settings.ui,
        )
        steps: list[tuple[str, Callable[[], Awaitable[int]]]] = [
            ("opened", functools.partial(notifier.incident_opened, snapshot))
        ]
        for notice in notices:
            steps.append(
                (
                    f"{notice['name']} {notice['outcome']}",
                    functools.partial(
                        notifier.action_taken, snapshot, notice, event_id=f"action-{notice['id']}"
                    ),
                )
            )
        found: list[dict[str, Any]] = []
        seen = 0
        for occasion, step in steps:
            await step()
            messages = await store.read(lambda conn: list_messages(conn, incident_id))
            for m in messages[seen:]:
                found.append(
                    {
                        "destination": m["destination"],
                        "kind": m["kind"],
                        "on": occasion,
                        "summary": _message_summary(m["kind"], m["payload"]),
                        "delay_seconds": round(max(0.0, m["not_before"] - m["created_at"])),
                    }
                )
            seen = len(messages)
        return found
