"""Guards: pure decisions whether a planned action may run, and if not, why.

Each guard takes facts and returns the reason to skip, or ``None`` to allow. The remediator
gathers the facts (clock, journal, kill-switch file, Deployment state) and records the first
reason as the outcome. Keeping them pure makes each one testable on its own and keeps the
rules readable in one place.

Two stages: :func:`before_looking` (kill switch, allowlist, no blind restarts) stops an action
outright; :func:`before_changing` (budget, cooldown) is asked only for a change that would
really be made, inside the journal transaction that claims the target (``claim``), so
incidents handled at the same time cannot all pass it. Joining a change already in place
spends neither budget nor cooldown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from receiver.remediation.plan import PlannedAction
from receiver.runbook import Verdict
from receiver.wording import quoted

__all__ = [
    "Facts",
    "before_action",
    "before_changing",
    "before_looking",
    "budget_spent",
    "cooling_down",
    "deployment_unsettled",
    "kill_switch",
    "not_allowlisted",
    "restart_refused",
]


def kill_switch(
    *, switch_on: bool, file: str | None, file_present: bool, runtime_by: str | None = None
) -> str | None:
    """The global kill switch, the kill-switch file an SRE can create, or the runtime switch
    someone turned on from the operations page (``runtime_by``: who)."""
    if switch_on:
        return "kill switch is on (remediation.kill_switch)"
    if runtime_by is not None:
        return f"kill switch switched on from the operations page by {quoted(runtime_by)}"
    if file is not None and file_present:
        return f"kill switch file {file} exists"
    return None


def not_allowlisted(action: PlannedAction, *, allowlist: Mapping[str, Sequence[str]]) -> str | None:
    """A variable and value outside the allowlist (defence in depth: config checks it too)."""
    if action.kind != "set_env":
        return None
    allowed = allowlist.get(action.env or "")
    if allowed is None:
        return f"{action.env} is not in the env allowlist"
    if action.value not in allowed:
        return f"value {quoted(action.value or '')} is not allowed for {action.env}"
    return None


def budget_spent(*, used: int, budget: int) -> str | None:
    """At most ``budget`` changes for one incident."""
    if used >= budget:
        return f"budget spent: {used} of {budget} actions already taken for this incident"
    return None


def cooling_down(*, last_applied_at: float | None, now: float, cooldown: float) -> str | None:
    """Not the same action on the same target again within ``cooldown`` seconds."""
    if last_applied_at is None:
        return None
    elapsed = now - last_applied_at
    if elapsed < cooldown:
        return f"cooldown: applied {elapsed:.0f}s ago, wait {cooldown - elapsed:.0f}s more"
    return None


def restart_refused(action: PlannedAction, *, verdict: Verdict | str | None) -> str | None:
    """No restart for a vendor incident (PostHog is down, our pods are fine), nor a blind one
    when our own infrastructure is unhealthy."""
    if not action.restarts:
        return None
    if verdict == Verdict.VENDOR_INCIDENT:
        return "vendor incident: restarting our pods would not help"
    if verdict == Verdict.OUR_INFRASTRUCTURE:
        return "our infrastructure is unhealthy: no blind restarts"
    return None


def deployment_unsettled(*, paused: bool, rollout_problem: str | None) -> str | None:
    """Leave a paused Deployment, or one mid-rollout, to whoever is handling it."""
    if paused:
        return "the Deployment is paused"
    if rollout_problem is not None:
        return f"the Deployment is mid-rollout: {rollout_problem}"
    return None


@dataclass(frozen=True)
class Facts:
    """What the guards before an action look at."""

    now: float
    kill_switch_on: bool
    kill_switch_file: str | None
    kill_switch_file_present: bool
    used_budget: int
    budget: int
    last_applied_at: float | None
    cooldown: float
    verdict: Verdict | str | None
    # Who switched the runtime kill switch on; ``None`` while it is off.
    kill_switch_runtime_by: str | None = None


def before_looking(
    action: PlannedAction, facts: Facts, *, allowlist: Mapping[str, Sequence[str]]
) -> str | None:
    """The first reason to skip a mutating action whatever the cluster shows."""
    return (
        kill_switch(
            switch_on=facts.kill_switch_on,
            file=facts.kill_switch_file,
            file_present=facts.kill_switch_file_present,
            runtime_by=facts.kill_switch_runtime_by,
        )
        or not_allowlisted(action, allowlist=allowlist)
        or restart_refused(action, verdict=facts.verdict)
    )


def before_changing(facts: Facts) -> str | None:
    """The first reason not to make a change this incident would make itself."""
    return budget_spent(used=facts.used_budget, budget=facts.budget) or cooling_down(
        last_applied_at=facts.last_applied_at, now=facts.now, cooldown=facts.cooldown
    )


def before_action(
    action: PlannedAction, facts: Facts, *, allowlist: Mapping[str, Sequence[str]]
) -> str | None:
    """The first reason to skip a mutating action, before the cluster is consulted."""
    return before_looking(action, facts, allowlist=allowlist) or before_changing(facts)
