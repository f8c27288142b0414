"""Guards and planning: pure decisions, each with its reason."""

from __future__ import annotations

import pytest

from receiver.config import RemediationSettings
from receiver.remediation import guards
from receiver.remediation.plan import PlannedAction, plan
from receiver.runbook import ErrorClass, Verdict

SET_QUEUE = PlannedAction("enable_request_queuing", "set_env", "RATE_LIMIT_MODE", "queue")
RESTART = PlannedAction("restart_for_rotated_key", "restart_if_key_rotated")
ALLOW = {"RATE_LIMIT_MODE": ["queue"], "POSTHOG_FALLBACK": ["true"]}


def facts(**overrides: object) -> guards.Facts:
    values: dict[str, object] = {
        "now": 1000.0,
        "kill_switch_on": False,
        "kill_switch_file": None,
        "kill_switch_file_present": False,
        "used_budget": 0,
        "budget": 3,
        "last_applied_at": None,
        "cooldown": 60.0,
        "verdict": Verdict.OUR_INTEGRATION,
    }
    values.update(overrides)
    return guards.Facts(**values)  # type: ignore[arg-type]


def test_everything_allowed_by_default() -> None:
    """With no reason to refuse, the guards allow the action."""
    assert guards.before_action(SET_QUEUE, facts(), allowlist=ALLOW) is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"kill_switch_on": True}, "kill switch is on (remediation.kill_switch)"),
        (
            {"kill_switch_file": "/run/stop", "kill_switch_file_present": True},
            "kill switch file /run/stop exists",
        ),
        ({"used_budget": 3}, "budget spent: 3 of 3 actions already taken for this incident"),
        ({"last_applied_at": 970.0}, "cooldown: applied 30s ago, wait 30s more"),
    ],
)
def test_each_guard_gives_its_reason(overrides: dict[str, object], reason: str) -> None:
    """Kill switch, kill-switch file, budget and cooldown each refuse with their own reason."""
    assert guards.before_action(SET_QUEUE, facts(**overrides), allowlist=ALLOW) == reason


def test_kill_switch_file_absent_allows() -> None:
    """A configured kill-switch file that does not exist does not stop anything."""
    assert guards.kill_switch(switch_on=False, file="/run/stop", file_present=False) is None


def test_cooldown_over_allows() -> None:
    """Once the cooldown has passed the action may run again."""
    assert guards.cooling_down(last_applied_at=900.0, now=1000.0, cooldown=60.0) is None


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (
            PlannedAction("x", "set_env", "PATH", "/tmp"),
            "PATH is not in the env allowlist",
        ),
        (
            PlannedAction("x", "set_env", "RATE_LIMIT_MODE", "drop"),
            'value "drop" is not allowed for RATE_LIMIT_MODE',
        ),
    ],
)
def test_allowlist(action: PlannedAction, reason: str) -> None:
    """A variable or a value outside the allowlist is refused."""
    assert guards.before_action(action, facts(), allowlist=ALLOW) == reason


def test_vendor_incident_never_restarts() -> None:
    """PostHog's own incident is no reason to restart our pods."""
    reason = guards.before_action(RESTART, facts(verdict=Verdict.VENDOR_INCIDENT), allowlist=ALLOW)
    assert reason == "vendor incident: restarting our pods would not help"


def test_unhealthy_infrastructure_gets_no_blind_restart() -> None:
    """When our own infrastructure is unhealthy a restart is refused."""
    reason = guards.restart_refused(RESTART, verdict=Verdict.OUR_INFRASTRUCTURE)
    assert reason == "our infrastructure is unhealthy: no blind restarts"


def test_vendor_incident_still_allows_fallback() -> None:
    """Enabling the fallback is exactly what a vendor incident calls for."""
    fallback = PlannedAction("enable_fallback", "set_env", "POSTHOG_FALLBACK", "true")
    assert (
        guards.before_action(fallback, facts(verdict=Verdict.VENDOR_INCIDENT), allowlist=ALLOW)
        is None
    )


def test_paused_and_mid_rollout_deployments_are_left_alone() -> None:
    """A paused Deployment or one mid-rollout is refused, with what is going on."""
    assert (
        guards.deployment_unsettled(paused=True, rollout_problem=None) == "the Deployment is paused"
    )
    assert (
        guards.deployment_unsettled(paused=False, rollout_problem="1 of 2 replicas updated")
        == "the Deployment is mid-rollout: 1 of 2 replicas updated"
    )
    assert guards.deployment_unsettled(paused=False, rollout_problem=None) is None


def test_plan_follows_the_runbook() -> None:
    """Each error class and verdict maps to its runbook entry in the default config."""
    actions = RemediationSettings().actions

    def names(error_class: ErrorClass | None, verdict: Verdict | None) -> list[str]:
        chosen = plan(
            actions,
            error_class=error_class,
            verdict=verdict,
            labels={},
            select_label="runbook_action",
        )
        return [a.name for a in chosen.actions]

    assert names(ErrorClass.RATE_LIMITED, Verdict.OUR_INTEGRATION) == ["enable_request_queuing"]
    assert names(ErrorClass.UPSTREAM_ERROR, Verdict.UNKNOWN) == ["enable_fallback"]
    assert names(ErrorClass.NETWORK, Verdict.VENDOR_INCIDENT) == ["enable_fallback"]
    assert names(ErrorClass.AUTH, Verdict.OUR_INTEGRATION) == ["restart_for_rotated_key"]
    assert names(ErrorClass.NETWORK, Verdict.OUR_INFRASTRUCTURE) == ["escalate_infrastructure"]
    assert names(ErrorClass.UNKNOWN, Verdict.INTERMITTENT) == []


def test_labels_only_narrow_configured_entries() -> None:
    """The selection label picks among applicable entries; other names are noted and ignored."""
    actions = RemediationSettings().actions
    chosen = plan(
        actions,
        error_class=ErrorClass.UPSTREAM_ERROR,
        verdict=Verdict.VENDOR_INCIDENT,
        labels={"runbook_action": "enable_fallback,delete_everything", "namespace": "kube-system"},
        select_label="runbook_action",
    )
    assert [a.name for a in chosen.actions] == ["enable_fallback"]
    assert chosen.notes == [
        'label runbook_action="delete_everything" names no applicable configured action'
    ]
    narrowed = plan(
        actions,
        error_class=ErrorClass.UPSTREAM_ERROR,
        verdict=None,
        labels={"runbook_action": "enable_request_queuing"},
        select_label="runbook_action",
    )
    assert narrowed.actions == []
