"""What the notifier needs to know about an incident, at the moment something happened.

The responder builds one snapshot per call from the incident, its triage and its remediation
journal; every message (page, status page, chat) is rendered from it alone, so a message says
the same thing wherever it goes and can be rendered again identically after a crash.

An action is a plain dict, as the remediation journal records it. The keys read here:
``id`` (stable per action), ``name`` (e.g. ``enable_fallback``), ``outcome`` (``applied``,
``reverted``, ``dry_run``, ``failed``, ``skipped``), ``target`` and ``detail`` (free text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from receiver.runbook import ErrorClass, Severity, Verdict

__all__ = ["IMPACT", "IncidentSnapshot", "action_summary", "iso_utc"]

# The runbook's severity table: definition and example, as people read them internally.
IMPACT: dict[Severity, str] = {
    Severity.P1: "Complete outage (e.g. PostHog API unreachable)",
    Severity.P2: "Degraded service (e.g. high latency, partial failures)",
    Severity.P3: "Minor impact (e.g. webhook delays, non-critical errors)",
    Severity.P4: "No user impact (e.g. monitoring gaps)",
}


@dataclass(frozen=True)
class IncidentSnapshot:
    """One incident as the notifier sees it."""

    id: str
    title: str
    status: Literal["open", "resolved"]
    severity: Severity
    opened_at: float
    error_class: ErrorClass | None = None
    verdict: Verdict | None = None
    decision_summary: str = ""
    decision_steps: Sequence[str] = ()
    actions: Sequence[Mapping[str, Any]] = ()
    generator_url: str = ""
    external_url: str = ""
    resolved_at: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # A person took the incident (PagerDuty, or an approval): it is not paged again.
    acknowledged: bool = False

    @property
    def awaiting_approval(self) -> list[str]:
        """Actions whose latest outcome is "awaiting approval": nobody decided them yet."""
        latest = {str(a.get("name")): a.get("outcome") for a in self.actions}
        return [name for name, outcome in latest.items() if outcome == "awaiting_approval"]

    @property
    def applied_actions(self) -> list[Mapping[str, Any]]:
        """Remediations that changed something and are still in place."""
        return [a for a in self.actions if a.get("outcome") == "applied"]

    @property
    def phase(self) -> Literal["investigating", "identified", "monitoring", "resolved"]:
        """Where the response stands, in the status page's words."""
        if self.status == "resolved":
            return "resolved"
        if self.applied_actions:
            return "monitoring"
        if self.verdict is not None and self.verdict is not Verdict.UNKNOWN:
            return "identified"
        return "investigating"


def action_summary(action: Mapping[str, Any]) -> str:
    """One line for an action: ``enable_fallback applied on deployment/x (detail)``."""
    name = str(action.get("name") or action.get("action") or "action")
    outcome = str(action.get("outcome") or action.get("status") or "recorded")
    text = f"{name} {outcome.replace('_', ' ')}"
    if action.get("target"):
        text += f" on {action['target']}"
    if action.get("detail"):
        text += f" ({action['detail']})"
    return text


def iso_utc(ts: float) -> str:
    """ISO 8601 in UTC with milliseconds, as PagerDuty's timestamp examples use."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
