"""What became of one planned action: the record shown on the incident, in logs and Events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["ActionOutcome", "Status"]

# ``awaiting_approval``: the guards let it through, and it waits for a person; ``approved``
# and ``denied``: what that person decided (an approved action's own outcome follows).
Status = Literal[
    "applied",
    "dry_run",
    "skipped",
    "failed",
    "escalated",
    "reverted",
    "awaiting_approval",
    "approved",
    "denied",
]

# The Kubernetes Event reason for each status (CamelCase, as Event reasons are written).
EVENT_REASONS: dict[str, str] = {
    "applied": "RemediationApplied",
    "dry_run": "RemediationDryRun",
    "skipped": "RemediationSkipped",
    "failed": "RemediationFailed",
    "escalated": "RemediationEscalated",
    "reverted": "RemediationReverted",
    "awaiting_approval": "RemediationAwaitingApproval",
    "approved": "RemediationApproved",
    "denied": "RemediationDenied",
}


@dataclass(frozen=True)
class ActionOutcome:
    """One decision: ``action`` (the runbook entry) on ``target``, and why it ended so.

    ``before``/``after`` describe the value (never a secret) before and after the action.
    ``transient``: the action could not run because the Kubernetes API was unavailable; it
    has not been given up, and remediating the incident again later may still apply it.
    ``verified``: the rollout finished (and the error rate fell, where a query is configured)
    after the change.
    """

    action: str
    target: str
    status: Status
    reason: str
    before: str | None = None
    after: str | None = None
    at: float = 0.0
    transient: bool = False
    verified: bool = False
    # The approval this outcome waits for (``awaiting_approval``): what Approve/Deny carry.
    approval_id: str | None = None

    @property
    def needs_a_person(self) -> bool:
        return self.status in ("failed", "escalated", "awaiting_approval")

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "status": self.status,
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
            "verified": self.verified,
            **({"approval_id": self.approval_id} if self.approval_id else {}),
            "at": datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z"),
        }

    @property
    def summary(self) -> str:
        if self.before and self.after:
            change = f" ({self.before} → {self.after})"
        elif self.after:
            change = f" (to {self.after})"
        elif self.before:
            change = f" (was {self.before})"
        else:
            change = ""
        return f"{self.action} on {self.target}: {self.status}{change}: {self.reason}"
