"""The remediator: runs the runbook's immediate actions for an incident, under guards, and
reverts them after the incident resolved.

For every planned action: guards first (kill switch, allowlist, vendor incident, budget,
cooldown; then the Deployment must be neither paused nor mid-rollout), then a server-side dry
run, then, unless in dry-run, a journal intent, the change, the journal outcome, and a check
that the rollout finished (and, if configured, that the error rate falls). Every outcome is
recorded on the incident timeline, logged, counted, and written as a Kubernetes Event on the
Deployment.

Incidents handled at the same time that need the same change decide one at a time per target
(an asyncio lock per target; the decision itself is one journal transaction, ``claim``): one
applies it, the others record that it is in place and rely on it. "applied" is said only for
a write the API server accepted; the work after it (watching the rollout, the error rate) runs
outside the lock.

Reverts are scheduled on resolve (``schedule_revert``) for after a hold-down, stored in the
journal so they survive restarts; the worker asks ``due_reverts()`` and calls ``revert()``.
A revert sets a variable back only if it still holds what we set: a value someone changed
since is left alone.

An action with ``approval: required`` (:mod:`receiver.store.approvals`) stops after the
guards that can be checked at once: it is recorded as awaiting approval. Approved
(:meth:`Remediator.decide`, then :meth:`Remediator.apply_approved`), it runs through the same
path with every guard checked again, and the incident must still be open; denied, nothing is
applied; not decided in time, it expires (:meth:`Remediator.expire_due`) and escalates.

With no cluster configured (``kubernetes.mode: none``) nothing is changed: outcomes say what
would have been done (dry-run) or that there is no cluster to act on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from receiver.config import RemediationSettings
from receiver.kube.deployments import DeploymentState, EnvValue
from receiver.kube.errors import KubeConflict, KubeError, KubeForbidden, KubeUnavailable
from receiver.kube.workload import IntegrationWorkload
from receiver.metrics import Metrics
from receiver.prometheus import PrometheusClient, PrometheusError
from receiver.remediation import claim, guards
from receiver.remediation.outcome import EVENT_REASONS, ActionOutcome, Status
from receiver.remediation.plan import PlannedAction, plan, planned
from receiver.runbook import ErrorClass, Verdict
from receiver.store import Connection, Store, journal, now
from receiver.store import approvals as approval
from receiver.store.incidents import ResponseTime, add_timeline, get_incident, record_mitigation
from receiver.store.runtime_switches import runtime_kill_switch
from receiver.wording import quoted

__all__ = ["Remediator"]

logger = structlog.get_logger(__name__)


def _exists(path: Path | None) -> bool:
    # A stat of a local (mounted) file: fast enough to do on the loop before every action.
    return path is not None and path.exists()


class _Postponed(Exception):
    """A revert that has to wait (the Deployment is paused or mid-rollout)."""


@dataclasses.dataclass(frozen=True)
class _Change:
    """A change the API server accepted, still to be verified (outside the target's lock)."""

    action: str
    target: str
    done: str
    before: str | None = None
    after: str | None = None
    success: Status = "applied"


def _env_json(value: EnvValue) -> dict[str, Any]:
    return {"present": value.present, "value": value.value, "from_reference": value.from_reference}


def _env_from(data: Mapping[str, Any] | None) -> EnvValue:
    if not data:
        return EnvValue(present=False)
    return EnvValue(bool(data.get("present")), data.get("value"), bool(data.get("from_reference")))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Remediator:
    """Guarded runbook actions on the configured workload, with verify and revert."""

    def __init__(
        self,
        *,
        settings: RemediationSettings,
        store: Store,
        workload: IntegrationWorkload | None,
        prometheus: PrometheusClient | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = now,
        no_cluster_reason: str = "no cluster configured",
    ) -> None:
        self._settings = settings
        self._no_cluster = no_cluster_reason
        self._store = store
        self._workload = workload
        self._prometheus = prometheus
        self._metrics = metrics
        self._clock = clock
        # One decision at a time per target (see the module docstring).
        self._locks: dict[str, asyncio.Lock] = {}

    # -- targets (from configuration only) --------------------------------------------------

    def _target(self, action: PlannedAction | None = None, *, kind: str | None = None) -> str:
        t = self._settings.target
        kind = kind or (action.kind if action else None)
        if kind == "set_env":
            env = action.env if action else ""
            return f"{t.namespace}/{t.deployment}/{t.container} env {env}"
        if kind == "copy_api_key":
            return f"{t.namespace}/secret/{t.api_key_secret} and {t.namespace}/{t.deployment}"
        return f"{t.namespace}/{t.deployment}"

    def _lock(self, target: str) -> asyncio.Lock:
        return self._locks.setdefault(target, asyncio.Lock())

    async def _settled(self, decided: ActionOutcome | _Change) -> ActionOutcome:
        if isinstance(decided, ActionOutcome):
            return decided
        return await self._verified(
            decided.action,
            decided.target,
            decided.done,
            before=decided.before,
            after=decided.after,
            success=decided.success,
        )

    # -- public API -------------------------------------------------------------------------

    async def remediate(
        self,
        *,
        incident_id: str,
        error_class: ErrorClass | str | None,
        verdict: Verdict | str | None,
        labels: Mapping[str, str],
    ) -> list[ActionOutcome]:
        """Run the runbook entries for this incident; one outcome per planned action."""
        if not self._settings.enabled:
            return []
        chosen = plan(
            self._settings.actions,
            error_class=error_class,
            verdict=verdict,
            labels=labels,
            select_label=self._settings.select_label,
        )
        for note in chosen.notes:
            logger.warning("remediation label ignored", incident_id=incident_id, note=note)
            await self._store.write(
                lambda c, note=note: add_timeline(  # type: ignore[misc]
                    c, incident_id, "remediation", f"ignored: {note}", {"status": "ignored"}
                )
            )
        outcomes: list[ActionOutcome] = []
        for action in chosen.actions:
            target = self._target(action)
            try:
                async with self._lock(target):
                    decided = await self._run(incident_id, action, verdict)
                outcome = await self._settled(decided)
            except KubeError as e:
                outcome = self._error_outcome(action.name, target, e)
            outcomes.append(outcome)
            await self._record(incident_id, outcome)
        return outcomes

    async def schedule_revert(self, *, incident_id: str) -> float | None:
        """On resolve: schedule the revert after the hold-down; the due time, or ``None`` when
        there is nothing to revert (or it was scheduled already)."""
        due = self._clock() + self._settings.revert_hold_down_seconds
        scheduled = await self._store.write(
            lambda conn: journal.schedule_revert(conn, incident_id, due)
        )
        if scheduled:
            logger.info("remediation revert scheduled", incident_id=incident_id, due=_iso(due))
            return due
        return None

    async def due_reverts(self) -> list[str]:
        """Incident ids whose revert hold-down has passed."""
        current = self._clock()
        return await self._store.read(lambda conn: journal.due_reverts(conn, current))

    async def revert_due(self) -> dict[str, list[ActionOutcome]]:
        """Run every revert whose hold-down has passed (what the worker calls periodically)."""
        return {
            incident_id: await self.revert(incident_id=incident_id)
            for incident_id in await self.due_reverts()
        }

    async def revert(self, *, incident_id: str) -> list[ActionOutcome]:
        """Set back every variable this incident changed, unless changed since by others."""
        reason = await self._kill_switch()
        if reason is not None:
            later = self._clock() + max(self._settings.revert_hold_down_seconds, 60.0)
            await self._store.write(lambda conn: journal.postpone_revert(conn, incident_id, later))
            held = self._outcome(
                "revert", self._target(kind="restart"), "skipped", f"{reason}; revert postponed"
            )
            await self._record(incident_id, held)
            return [held]
        entries = await self._store.read(lambda conn: journal.revertible(conn, incident_id))
        outcomes: list[ActionOutcome] = []
        postpone = False
        for entry in entries:
            outcome: ActionOutcome | None
            try:
                async with self._lock(entry.target):
                    decided = await self._revert_one(entry)
                outcome = await self._settled(decided) if decided is not None else None
            except _Postponed as e:
                postpone = True
                outcome = self._outcome(
                    entry.action, entry.target, "skipped", f"{e}; revert postponed"
                )
            except KubeError as e:
                # Unreachable API: try again later; anything else needs a person.
                postpone = postpone or isinstance(e, KubeUnavailable)
                outcome = self._error_outcome(entry.action, entry.target, e)
            if outcome is None:
                continue
            outcomes.append(outcome)
            await self._record(incident_id, outcome)
        if postpone:
            later = self._clock() + max(self._settings.revert_hold_down_seconds, 60.0)
            await self._store.write(lambda conn: journal.postpone_revert(conn, incident_id, later))
        else:
            await self._store.write(lambda conn: journal.finish_revert(conn, incident_id))
        return outcomes

    # -- one action -------------------------------------------------------------------------

    def _outcome(
        self,
        action: str,
        target: str,
        status: Status,
        reason: str,
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> ActionOutcome:
        return ActionOutcome(action, target, status, reason, before, after, self._clock())

    async def _runtime_kill_switch_by(self) -> str | None:
        """Who switched the runtime kill switch on (from the operations page); ``None``: off."""
        switch = await self._store.read(runtime_kill_switch)
        return switch.changed_by if switch is not None and switch.on else None

    async def _kill_switch(self) -> str | None:
        file = self._settings.kill_switch_file
        return guards.kill_switch(
            switch_on=self._settings.kill_switch,
            file=str(file) if file is not None else None,
            file_present=_exists(file),
            runtime_by=await self._runtime_kill_switch_by(),
        )

    def _error_outcome(self, action: str, target: str, e: KubeError) -> ActionOutcome:
        if isinstance(e, KubeForbidden):
            return self._outcome(
                action,
                target,
                "escalated",
                f"missing RBAC permission: {e.operation} (answered {e.status})",
            )
        if isinstance(e, KubeUnavailable):
            outcome = self._outcome(action, target, "escalated", f"Kubernetes API unavailable: {e}")
            return dataclasses.replace(outcome, transient=True)
        if isinstance(e, KubeConflict):
            return self._outcome(action, target, "failed", f"kept conflicting: {e}")
        return self._outcome(action, target, "failed", str(e))

    async def _run(
        self,
        incident_id: str,
        action: PlannedAction,
        verdict: Verdict | str | None,
        *,
        approved: bool = False,
    ) -> ActionOutcome | _Change:
        """Decide and, if so decided, make the change; called holding the target's lock."""
        target = self._target(action)
        entry = await self._store.read(lambda c: journal.get_entry(c, incident_id, action.name))
        if entry is not None and entry.state == "intent" and self._workload is not None:
            reconciled = await self._reconcile(entry, action)
            if reconciled is not None:
                return reconciled
        elif entry is not None and entry.state not in ("failed", "intent", "dry_run"):
            return self._outcome(
                action.name, target, "skipped", f"already handled for this incident ({entry.state})"
            )
        elif entry is not None and entry.state == "dry_run" and self._settings.dry_run:
            # Reported once per incident; once dry-run is switched off the action may run.
            return self._outcome(
                action.name, target, "skipped", f"already handled for this incident ({entry.state})"
            )
        if not action.mutates:
            return await self._escalate_infrastructure(incident_id, action)

        file = self._settings.kill_switch_file
        facts = guards.Facts(
            now=self._clock(),
            kill_switch_on=self._settings.kill_switch,
            kill_switch_file=str(file) if file is not None else None,
            kill_switch_file_present=_exists(file),
            used_budget=0,  # budget and cooldown: read from the journal where they are asked
            budget=self._settings.budget_per_incident,
            last_applied_at=None,
            cooldown=self._settings.cooldown_seconds,
            verdict=verdict,
            kill_switch_runtime_by=await self._runtime_kill_switch_by(),
        )
        refusal = guards.before_looking(action, facts, allowlist=self._settings.env_allowlist)
        if refusal is None and (self._workload is None or action.kind != "set_env"):
            # A variable found in place is joined whatever budget and cooldown say; the rest
            # is refused here already, as before the cluster is consulted (and again, in the
            # same transaction as the intent, by ``claim``).
            refusal = await self._change_refused(incident_id, action, target, facts)
        if refusal is not None:
            return self._outcome(action.name, target, "skipped", refusal)

        if self._workload is None:
            if self._settings.dry_run:
                return self._unchecked(action, target)
            return self._outcome(action.name, target, "skipped", self._no_cluster)

        dep = await self._workload.deployment()
        if action.kind != "set_env":
            refusal = guards.deployment_unsettled(
                paused=dep.paused, rollout_problem=dep.rollout_problem
            )
            if refusal is not None:
                return self._outcome(action.name, target, "skipped", refusal)
        rotated_at: datetime | None = None
        if action.kind == "restart_if_key_rotated":
            # A key that was not rotated is escalated at once: a restart would not help, so
            # there is nothing for a person to approve. An approved run comes back through
            # here, so the key is looked at again then.
            unusable, rotated_at = await self._key_rotation(action, target)
            if unusable is not None:
                return unusable
        # Asked only once the change is what the runbook calls for; a dry run changes nothing,
        # so there is nothing to approve.
        if action.approval_required and not approved and not self._settings.dry_run:
            waiting = await self._await_approval(incident_id, action, target)
            if waiting is not None:
                return waiting
        if action.kind == "set_env":
            return await self._set_env(incident_id, action, target, dep, facts)
        if action.kind == "restart_if_key_rotated":
            assert rotated_at is not None  # a rotated key has its change time
            why = f"the key changed after the pods started ({rotated_at:%Y-%m-%dT%H:%M:%SZ})"
            return await self._restart(incident_id, action, target, facts, why=why)
        return await self._copy_api_key(incident_id, action, target, facts)

    # -- approvals --------------------------------------------------------------------------

    async def _await_approval(
        self, incident_id: str, action: PlannedAction, target: str
    ) -> ActionOutcome | None:
        """Request (or find) the person's approval; the outcome to record while there is no
        go-ahead, ``None`` once approved (an approved run that was interrupted goes on)."""
        at = self._clock()
        expires = at + self._settings.approval_timeout_seconds
        found, _ = await self._store.write(
            lambda c: approval.request(
                c,
                incident_id=incident_id,
                action=action.name,
                target=target,
                at=at,
                expires_at=expires,
            )
        )
        if found.state == "approved":
            return None
        if found.state == "awaiting":
            waiting = self._outcome(
                action.name,
                target,
                "awaiting_approval",
                f"awaiting approval until {_when(found.expires_at)}: approve or deny it on "
                "the incident page",
            )
            return dataclasses.replace(waiting, approval_id=found.id)
        if found.state == "denied":
            return self._outcome(
                action.name,
                target,
                "skipped",
                f"denied by {quoted(found.decided_by or 'someone')}: nothing applied",
            )
        return self._outcome(
            action.name, target, "skipped", "its approval expired: to be done by hand"
        )

    async def decide(
        self,
        approval_id: str,
        *,
        decision: approval.Decision,
        by: str,
        via: str,
        origin: str,
    ) -> approval.Approval | None:
        """Approve or deny an action awaiting approval, at most once whoever asks and however
        often; ``None`` if it was decided (or expired) before. The decision goes on the
        timeline, the audit log (same transaction), the log and a Kubernetes Event; an
        approved action is then run by :meth:`apply_approved`."""
        at = self._clock()
        decided = await self._store.write(
            lambda c: approval.decide(
                c, approval_id, decision=decision, by=by, via=via, origin=origin, at=at
            )
        )
        if decided is None:
            return None
        verb = "approved" if decision == "approved" else "denied: nothing applied"
        logger.warning(
            "audit",
            action=f"{decision} {decided.action}",
            actor=by,
            origin=origin,
            via=via,
            incident_id=decided.incident_id,
        )
        await self._record(
            decided.incident_id,
            self._outcome(
                decided.action, decided.target, decision, f"{verb} by {quoted(by)} from the {via}"
            ),
        )
        return decided

    async def apply_approved(self, decided: approval.Approval) -> ActionOutcome:
        """Run an approved action through the normal path, every guard checked again (kill
        switch, vendor incident, budget, cooldown, the Deployment) and the incident still open."""
        incident_id = decided.incident_id
        entry = next((a for a in self._settings.actions if a.name == decided.action), None)
        incident = await self._store.read(lambda c: get_incident(c, incident_id))
        if entry is None:
            outcome = self._outcome(
                decided.action, decided.target, "skipped", "approved, but no longer configured"
            )
        elif incident is None or incident.get("status") != "open":
            outcome = self._outcome(
                decided.action,
                decided.target,
                "skipped",
                "approved, but the incident is already resolved: nothing applied",
            )
        else:
            action = planned(entry)
            verdict = (incident.get("decision") or {}).get("verdict")
            target = self._target(action)
            try:
                async with self._lock(target):
                    settled = await self._run(incident_id, action, verdict, approved=True)
                outcome = await self._settled(settled)
            except KubeError as e:
                outcome = self._error_outcome(action.name, target, e)
        await self._record(incident_id, outcome)
        return outcome

    async def expire_due(self) -> list[str]:
        """Expire every approval nobody decided in time and escalate it (people are told to
        do it by hand); the incidents concerned."""
        at = self._clock()
        due = await self._store.read(lambda c: approval.expired_due(c, at))
        expired: list[str] = []
        for waiting in due:
            gone = await self._store.write(
                lambda c, w=waiting: approval.expire(c, w.id, at=at)  # type: ignore[misc]
            )
            if gone is None:
                continue  # decided meanwhile
            minutes = self._settings.approval_timeout_seconds / 60
            await self._record(
                gone.incident_id,
                self._outcome(
                    gone.action,
                    gone.target,
                    "escalated",
                    f"approval expired: do it by hand (nobody approved or denied it within "
                    f"{minutes:g} minutes)",
                ),
            )
            expired.append(gone.incident_id)
        return expired

    async def _change_refused(
        self, incident_id: str, action: PlannedAction, target: str, facts: guards.Facts
    ) -> str | None:
        return await self._store.read(
            lambda c: claim.change_refused(
                c, incident_id=incident_id, action=action, target=target, facts=facts
            )
        )

    async def _claim(
        self,
        incident_id: str,
        action: PlannedAction,
        target: str,
        facts: guards.Facts,
        *,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> claim.Claim:
        at = self._clock()
        return await self._store.write(
            lambda c: claim.claim(
                c,
                incident_id=incident_id,
                action=action,
                target=target,
                before=before,
                after=after,
                facts=dataclasses.replace(facts, now=at),
                same_value=action.kind == "set_env",
            )
        )

    def _in_place(
        self, action: PlannedAction, target: str, what: str, *, by: str | None = None
    ) -> ActionOutcome:
        """This incident relies on a change in place (or under way) instead of making it."""
        whose = f" for incident {by}" if by is not None else ""
        then = (
            "; set back when the last incident needing it resolves"
            if action.kind == "set_env"
            else ""
        )
        return self._outcome(
            action.name, target, "skipped", f"already in place: {what}{whose}{then}"
        )

    def _unchecked(self, action: PlannedAction, target: str) -> ActionOutcome:
        """A dry run without a cluster: what the action would do, and what it depends on that
        could not be checked. Only ``set_env`` is unconditional; the key actions depend on
        the Secret and the pods, so they never read as "would apply"."""
        unchecked = f"not checked: {self._no_cluster}"
        t = self._settings.target
        secret = f"Secret {t.api_key_secret} key {t.api_key_key}"
        if action.kind == "restart_if_key_rotated":
            reason = (
                f"dry run: would restart the Deployment only if {secret} changed after its "
                "pods started; otherwise a restart would not help and it escalates, asking for "
                "a new key (rotate it, verify it in the PostHog dashboard, update the Secret); "
                f"{unchecked}"
            )
            return self._outcome(action.name, target, "dry_run", reason)
        if action.kind == "copy_api_key":
            source = f"Secret {t.source_secret} key {t.source_key}"
            reason = (
                f"dry run: would copy {source} into {secret}, then restart the Deployment, "
                f"only if {source} exists and holds a key; otherwise it escalates; {unchecked}"
            )
            return self._outcome(action.name, target, "dry_run", reason)
        wanted = EnvValue(present=True, value=action.value)
        return self._outcome(
            action.name,
            target,
            "dry_run",
            f"dry run: would set {action.env} to {wanted.describe()}; its current value was "
            f"not read ({self._no_cluster})",
            after=wanted.describe(),
        )

    async def _reconcile(
        self, entry: journal.JournalEntry, action: PlannedAction
    ) -> ActionOutcome | None:
        """An intent without outcome: did the change happen? Then it is done, not redone."""
        assert self._workload is not None
        dep = await self._workload.deployment()
        happened = False
        if action.kind == "set_env" and action.env is not None:
            live = dep.env_value(self._settings.target.container, action.env)
            happened = live == _env_from(entry.after)
        elif action.restarts and entry.after is not None:
            happened = dep.restarted_at == entry.after.get("restartedAt")
        if not happened:
            return None
        at = self._clock()
        same_value = action.kind == "set_env"

        def settle(c: Any) -> str | None:
            # The value may be there by another incident's change, not ours: then we rely on
            # it, and only that incident says "applied".
            holder = (
                claim.applied_by(
                    c,
                    incident_id=entry.incident_id,
                    action=entry.action,
                    target=entry.target,
                    after=entry.after,
                )
                if same_value
                else None
            )
            if holder is not None:
                journal.set_state(
                    c, entry.id, "held", at=at, reason=f"in place, applied for {holder}"
                )
            else:
                journal.set_state(
                    c, entry.id, "done", at=at, reason="confirmed after an interruption"
                )
            return holder

        holder = await self._store.write(settle)
        if holder is not None:
            return self._in_place(
                action, entry.target, f"{action.env}={action.value} applied", by=holder
            )
        before = _env_from(entry.before).describe() if action.kind == "set_env" else None
        after = _env_from(entry.after).describe() if action.kind == "set_env" else None
        return self._outcome(
            action.name,
            entry.target,
            "applied",
            "applied before an interruption; confirmed on the live Deployment, not applied again",
            before=before,
            after=after,
        )

    async def _intent(
        self,
        incident_id: str,
        action: PlannedAction,
        target: str,
        *,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        state: journal.State = "intent",
        reason: str = "",
    ) -> int:
        at = self._clock()
        return await self._store.write(
            lambda c: journal.write_intent(
                c,
                incident_id=incident_id,
                action=action.name,
                kind=action.kind,
                target=target,
                before=before,
                after=after,
                at=at,
                state=state,
                reason=reason,
            )
        )

    async def _finish(
        self,
        entry_id: int,
        state: journal.State,
        *,
        reason: str = "",
        before: dict[str, Any] | None = None,
        cooldown: tuple[str, str] | None = None,
    ) -> None:
        at = self._clock()

        def write(c: Any) -> None:
            journal.set_state(c, entry_id, state, at=at, reason=reason, before=before)
            if cooldown is not None:
                journal.touch_cooldown(c, cooldown[0], cooldown[1], at)

        await self._store.write(write)

    async def _apply_guarded(
        self, entry_id: int, action: PlannedAction, target: str, call: Any
    ) -> tuple[Any, ActionOutcome | None]:
        """Run the mutating ``call``; map a failure to an outcome and the journal state."""
        try:
            return await call(), None
        except KubeUnavailable as e:
            # The change may or may not have reached the server: leave the intent for
            # reconciliation by the next attempt or the revert.
            return None, self._error_outcome(action.name, target, e)
        except KubeError as e:
            outcome = self._error_outcome(action.name, target, e)
            await self._finish(entry_id, "failed", reason=outcome.reason)
            return None, outcome

    async def _set_env(
        self,
        incident_id: str,
        action: PlannedAction,
        target: str,
        dep: DeploymentState,
        facts: guards.Facts,
    ) -> ActionOutcome | _Change:
        assert self._workload is not None
        assert action.env is not None
        container = self._settings.target.container
        if container not in dep.env:
            return self._outcome(
                action.name, target, "failed", f"no container {quoted(container)} in the Deployment"
            )
        before = dep.env_value(container, action.env)
        wanted = EnvValue(True, action.value)
        setting = f"{action.env}={action.value}"
        if before.from_reference:
            return self._outcome(
                action.name,
                target,
                "failed",
                f"{action.env} is set from a reference (valueFrom); not overriding it",
            )
        if before == wanted:
            at = self._clock()
            holder = await self._store.write(
                lambda c: claim.join(
                    c,
                    incident_id=incident_id,
                    action=action,
                    target=target,
                    before=_env_json(before),
                    after=_env_json(wanted),
                    at=at,
                )
            )
            if holder is not None:
                return dataclasses.replace(
                    self._in_place(action, target, f"{setting} applied", by=holder),
                    before=before.describe(),
                    after=wanted.describe(),
                )
            return self._outcome(
                action.name,
                target,
                "skipped",
                f"{action.env} is already {before.describe()}",
                before=before.describe(),
                after=wanted.describe(),
            )
        refusal = guards.deployment_unsettled(
            paused=dep.paused, rollout_problem=dep.rollout_problem
        )
        if refusal is not None:
            return self._outcome(action.name, target, "skipped", refusal)
        workload = self._workload
        attempts = self._settings.conflict_attempts
        if self._settings.dry_run:
            refusal = await self._change_refused(incident_id, action, target, facts)
            if refusal is not None:
                return self._outcome(action.name, target, "skipped", refusal)
            await workload.set_env(
                env=action.env, value=action.value, dry_run=True, conflict_attempts=attempts
            )
            await self._intent(
                incident_id,
                action,
                target,
                before=_env_json(before),
                after=_env_json(wanted),
                state="dry_run",
            )
            return self._outcome(
                action.name,
                target,
                "dry_run",
                "dry run: the server-side dry run accepted the change; nothing was changed",
                before=before.describe(),
                after=wanted.describe(),
            )
        reason = await self._kill_switch()
        if reason is not None:
            return self._outcome(action.name, target, "skipped", reason)
        claimed = await self._claim(
            incident_id, action, target, facts, before=_env_json(before), after=_env_json(wanted)
        )
        if claimed.refusal is not None:
            return self._outcome(action.name, target, "skipped", claimed.refusal)
        if claimed.entry_id is None:
            return self._in_place(action, target, f"{setting} under way", by=claimed.holder)
        entry_id = claimed.entry_id
        change, failed = await self._apply_guarded(
            entry_id,
            action,
            target,
            lambda: workload.set_env(
                env=action.env, value=action.value, dry_run=False, conflict_attempts=attempts
            ),
        )
        if failed is not None:
            return failed
        if not change.changed:
            # Our write was refused and the value is there: someone else (a person, another
            # replica) set it. Not ours to announce as applied, nor to set back.
            await self._finish(entry_id, "held", reason="set by someone else")
            return self._outcome(
                action.name,
                target,
                "skipped",
                f"already in place: {setting} was set by someone else while our write was "
                "refused; left for them to set back",
                before=before.describe(),
                after=wanted.describe(),
            )
        await self._finish(
            entry_id, "done", before=_env_json(change.before), cooldown=(action.name, target)
        )
        return _Change(
            action.name,
            target,
            f"set {setting}",
            before=change.before.describe(),
            after=wanted.describe(),
        )

    async def _key_rotation(
        self, action: PlannedAction, target: str
    ) -> tuple[ActionOutcome | None, datetime | None]:
        """The escalation when the API key is missing, empty or not rotated since the pods
        started (a restart would not help), else when it changed (a restart is what is called
        for)."""
        assert self._workload is not None
        t = self._settings.target
        key = await self._workload.api_key()
        secret = f"Secret {t.api_key_secret} key {t.api_key_key}"
        if not key.exists:
            return self._outcome(
                action.name,
                target,
                "escalated",
                f"{secret} does not exist: create it with a valid key",
            ), None
        if not key.non_empty:
            return self._outcome(
                action.name, target, "escalated", f"{secret} is empty: rotate the key"
            ), None
        if not key.rotated_since_pods_started:
            changed = key.changed_at.isoformat() if key.changed_at else "unknown"
            started = key.pods_started_at.isoformat() if key.pods_started_at else "unknown"
            return self._outcome(
                action.name,
                target,
                "escalated",
                f"{secret} has not changed since the pods started (key changed {changed}, "
                f"pods started {started}): a restart will not help; rotate the key "
                "(verify it in the PostHog dashboard) and update the Secret",
            ), None
        return None, key.changed_at

    async def _restart(
        self, incident_id: str, action: PlannedAction, target: str, facts: guards.Facts, *, why: str
    ) -> ActionOutcome | _Change:
        assert self._workload is not None
        workload = self._workload
        marker = _iso(self._clock())
        if self._settings.dry_run:
            await workload.restart(restarted_at=marker, dry_run=True)
            await self._intent(
                incident_id, action, target, before=None, after=None, state="dry_run"
            )
            return self._outcome(
                action.name, target, "dry_run", f"dry run: would restart the Deployment: {why}"
            )
        reason = await self._kill_switch()
        if reason is not None:
            return self._outcome(action.name, target, "skipped", reason)
        claimed = await self._claim(
            incident_id, action, target, facts, before=None, after={"restartedAt": marker}
        )
        if claimed.refusal is not None:
            return self._outcome(action.name, target, "skipped", claimed.refusal)
        if claimed.entry_id is None:
            return self._in_place(action, target, "a restart is under way", by=claimed.holder)
        entry_id = claimed.entry_id
        _, failed = await self._apply_guarded(
            entry_id,
            action,
            target,
            lambda: workload.restart(restarted_at=marker, dry_run=False),
        )
        if failed is not None:
            return failed
        await self._finish(entry_id, "done", cooldown=(action.name, target))
        return _Change(action.name, target, f"restarted the Deployment: {why}")

    async def _copy_api_key(
        self, incident_id: str, action: PlannedAction, target: str, facts: guards.Facts
    ) -> ActionOutcome | _Change:
        assert self._workload is not None
        workload = self._workload
        t = self._settings.target
        source = f"Secret {t.source_secret} key {t.source_key}"
        attempts = self._settings.conflict_attempts
        if self._settings.dry_run:
            result = await workload.copy_api_key(
                dry_run=True, now=datetime.now(UTC), conflict_attempts=attempts
            )
            await workload.restart(restarted_at=_iso(self._clock()), dry_run=True)
            await self._intent(
                incident_id, action, target, before=None, after=None, state="dry_run"
            )
            what = "the key is already the same" if result == "already_equal" else "would copy"
            return self._outcome(
                action.name,
                target,
                "dry_run",
                f"dry run: {what} from {source}, then restart; nothing was changed",
            )
        reason = await self._kill_switch()
        if reason is not None:
            return self._outcome(action.name, target, "skipped", reason)
        marker = _iso(self._clock())
        claimed = await self._claim(
            incident_id,
            action,
            target,
            facts,
            before=None,
            after={"source": f"{t.source_secret}/{t.source_key}", "restartedAt": marker},
        )
        if claimed.refusal is not None:
            return self._outcome(action.name, target, "skipped", claimed.refusal)
        if claimed.entry_id is None:
            return self._in_place(action, target, "a key copy is under way", by=claimed.holder)
        entry_id = claimed.entry_id
        copied, failed = await self._apply_guarded(
            entry_id,
            action,
            target,
            lambda: workload.copy_api_key(
                dry_run=False, now=datetime.now(UTC), conflict_attempts=attempts
            ),
        )
        if failed is not None:
            return failed
        _, failed = await self._apply_guarded(
            entry_id,
            action,
            target,
            lambda: workload.restart(restarted_at=marker, dry_run=False),
        )
        if failed is not None:
            return failed
        await self._finish(entry_id, "done", cooldown=(action.name, target))
        what = "copied the key" if copied == "copied" else "the key already matched"
        return _Change(action.name, target, f"{what} from {source} and restarted the Deployment")

    async def _escalate_infrastructure(
        self, incident_id: str, action: PlannedAction
    ) -> ActionOutcome:
        target = self._target(action)
        if self._workload is None:
            return self._outcome(
                action.name,
                target,
                "escalated",
                f"our infrastructure looks unhealthy ({self._no_cluster}, cannot look closer): "
                "check pods, memory and network",
            )
        problems: list[str] = []
        report = await self._workload.integration_pods()
        problems.extend(report.problems)
        dep = await self._workload.deployment()
        if dep.rollout_problem:
            problems.append(f"rollout: {dep.rollout_problem}")
        if dep.paused:
            problems.append("the Deployment is paused")
        found = "; ".join(problems) if problems else "no pod problem visible from the API"
        await self._intent(
            incident_id, action, target, before=None, after=None, state="done", reason=found
        )
        return self._outcome(
            action.name,
            target,
            "escalated",
            f"our infrastructure is unhealthy, not restarting blindly: {found}",
        )

    # -- verification -----------------------------------------------------------------------

    async def _verified(
        self,
        action: str,
        target: str,
        done: str,
        *,
        before: str | None = None,
        after: str | None = None,
        success: Status = "applied",
    ) -> ActionOutcome:
        """``success``, or ``escalated`` if the rollout or the error rate says it did not help."""
        problem = await self._verify()
        if problem is not None:
            return self._outcome(
                action, target, "escalated", f"{done}, but {problem}", before=before, after=after
            )
        outcome = self._outcome(action, target, success, done, before=before, after=after)
        return dataclasses.replace(outcome, verified=True)

    async def _verify(self) -> str | None:
        assert self._workload is not None
        s = self._settings
        try:
            finished, state = await self._workload.wait_for_rollout(
                timeout_seconds=s.rollout_timeout_seconds, poll_seconds=s.rollout_poll_seconds
            )
        except KubeError as e:
            return f"the rollout could not be watched: {e}"
        if not finished:
            return (
                f"the rollout did not finish within {s.rollout_timeout_seconds:g}s "
                f"({state.rollout_problem})"
            )
        if s.verify.promql is None or self._prometheus is None:
            return None
        return await self._error_rate_falls(s.verify.promql)

    async def _error_rate_falls(self, promql: str) -> str | None:
        assert self._prometheus is not None
        window = self._settings.verify.window_seconds
        poll = self._settings.verify.poll_seconds
        try:
            baseline = sum(s.value for s in await self._prometheus.query(promql))
            deadline = time.monotonic() + window
            latest = baseline
            while time.monotonic() < deadline:
                await asyncio.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))
                latest = sum(s.value for s in await self._prometheus.query(promql))
                if latest < baseline or latest == 0:
                    return None
        except PrometheusError as e:
            return f"the error rate could not be checked: {e}"
        return f"the error rate did not fall within {window:g}s ({baseline:g} -> {latest:g})"

    # -- revert -----------------------------------------------------------------------------

    async def _revert_one(self, entry: journal.JournalEntry) -> ActionOutcome | _Change | None:
        """Set one variable back, or hand it over; called holding the target's lock."""
        before, after = _env_from(entry.before), _env_from(entry.after)
        env = entry.target.rsplit(" env ", 1)[-1]
        heir: journal.JournalEntry | None = None
        if entry.state == "done":
            at = self._clock()
            heir = await self._store.write(lambda c: journal.hand_over(c, entry, at=at))
        if heir is not None:
            return self._outcome(
                entry.action,
                entry.target,
                "skipped",
                f"still needed by open incident {heir.incident_id}; it sets the value back "
                "when it resolves",
            )
        if self._workload is None:
            return self._outcome(entry.action, entry.target, "skipped", self._no_cluster)
        workload = self._workload
        dep = await workload.deployment()
        live = dep.env_value(self._settings.target.container, env)
        at = self._clock()
        if entry.state == "intent" and live != after:
            await self._store.write(
                lambda c: journal.set_state(c, entry.id, "failed", at=at, reason="never applied")
            )
            return None
        if entry.state == "reverting" and live == before:
            await self._store.write(lambda c: journal.set_state(c, entry.id, "reverted", at=at))
            return self._outcome(
                entry.action,
                entry.target,
                "reverted",
                "reverted before an interruption; confirmed on the live Deployment",
                before=after.describe(),
                after=before.describe(),
            )
        if live != after:
            reason = f"{env} was changed since to {live.describe()}; left as is"
            await self._store.write(
                lambda c: journal.set_state(c, entry.id, "revert_skipped", at=at, reason=reason)
            )
            return self._outcome(
                entry.action,
                entry.target,
                "skipped",
                reason,
                before=live.describe(),
                after=live.describe(),
            )
        if self._settings.dry_run:
            return self._outcome(
                entry.action,
                entry.target,
                "dry_run",
                f"dry run: would set {env} back to {before.describe()}",
                before=after.describe(),
                after=before.describe(),
            )
        refusal = guards.deployment_unsettled(
            paused=dep.paused, rollout_problem=dep.rollout_problem
        )
        if refusal is not None:
            raise _Postponed(refusal)
        await self._store.write(lambda c: journal.set_state(c, entry.id, "reverting", at=at))
        change = await workload.set_env(
            env=env,
            value=before.value if before.present else None,
            dry_run=False,
            conflict_attempts=self._settings.conflict_attempts,
            expected=after,
        )
        done_at = self._clock()
        if not change.changed and change.before != before:
            reason = f"{env} was changed since to {change.before.describe()}; left as is"
            await self._store.write(
                lambda c: journal.set_state(
                    c, entry.id, "revert_skipped", at=done_at, reason=reason
                )
            )
            return self._outcome(entry.action, entry.target, "skipped", reason)
        await self._store.write(lambda c: journal.set_state(c, entry.id, "reverted", at=done_at))
        what = f"set {env} back to {before.describe()}" if before.present else f"removed {env}"
        return _Change(
            entry.action,
            entry.target,
            what,
            before=after.describe(),
            after=before.describe(),
            success="reverted",
        )

    # -- recording --------------------------------------------------------------------------

    async def _record(self, incident_id: str, outcome: ActionOutcome) -> None:
        """Timeline, log, metric and Kubernetes Event for one outcome."""
        data = outcome.as_dict()

        def write(c: Connection) -> ResponseTime | None:
            add_timeline(c, incident_id, "remediation", outcome.summary, data, at=outcome.at)
            if outcome.status != "applied":
                return None
            # "applied" is only said of an action whose rollout and error rate verified: the
            # first one mitigates the incident (the runbook's time to mitigate).
            how = f"{outcome.action} verified"
            return record_mitigation(c, incident_id, at=outcome.at, how=how)

        mitigation = await self._store.write(write)
        log = logger.warning if outcome.needs_a_person else logger.info
        log("remediation " + outcome.status, incident_id=incident_id, **data)
        if self._metrics is not None:
            self._metrics.remediation_actions.labels(outcome.action, outcome.status).inc()
            self._metrics.observe_mitigation(mitigation)
        if self._workload is None:
            return
        try:
            await self._workload.record_event(
                reason=EVENT_REASONS[outcome.status],
                message=f"[{incident_id}] {outcome.summary}",
                warning=outcome.needs_a_person,
                now=datetime.fromtimestamp(outcome.at, UTC),
            )
        except KubeError as e:
            logger.warning("cannot write the Kubernetes Event", error=str(e))
