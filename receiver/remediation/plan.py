"""From an incident's error class and verdict to the runbook entries that answer it.

Pure: configuration and facts in, planned actions out. Alert labels are untrusted; the one
label they may use (``select_label``, e.g. ``runbook_action: enable_fallback``) can only narrow
the applicable configured entries by name. Nothing in a label becomes a namespace, Deployment,
container, variable or value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from receiver.config import ActionKind, RunbookActionSettings
from receiver.runbook import ErrorClass, Verdict
from receiver.wording import quoted

__all__ = ["Plan", "PlannedAction", "plan", "planned"]


@dataclass(frozen=True)
class PlannedAction:
    """One configured runbook entry chosen for an incident."""

    name: str
    kind: ActionKind
    env: str | None = None
    value: str | None = None
    # Waits for a person before it changes anything (``approval: required``).
    approval_required: bool = False

    @property
    def mutates(self) -> bool:
        return self.kind != "escalate_infrastructure"

    @property
    def restarts(self) -> bool:
        return self.kind in ("restart_if_key_rotated", "copy_api_key")


@dataclass(frozen=True)
class Plan:
    actions: list[PlannedAction]
    notes: list[str] = field(default_factory=list)  # why label selections were ignored


def planned(entry: RunbookActionSettings) -> PlannedAction:
    """The planned action of one configured entry."""
    return PlannedAction(
        entry.name, entry.kind, entry.env, entry.value, approval_required=entry.approval_required
    )


def _applies(entry: RunbookActionSettings, error_class: str | None, verdict: str | None) -> bool:
    return entry.enabled and (
        (error_class is not None and error_class in entry.error_classes)
        or (verdict is not None and verdict in entry.verdicts)
    )


def plan(
    entries: Sequence[RunbookActionSettings],
    *,
    error_class: ErrorClass | str | None,
    verdict: Verdict | str | None,
    labels: Mapping[str, str],
    select_label: str,
) -> Plan:
    """The configured entries answering ``error_class`` or ``verdict``, in config order."""
    chosen = [e for e in entries if _applies(e, error_class, verdict)]
    notes: list[str] = []
    selection = labels.get(select_label)
    if selection is not None:
        wanted = {name.strip() for name in selection.split(",") if name.strip()}
        known = {e.name for e in chosen}
        for name in sorted(wanted - known):
            notes.append(
                f"label {select_label}={quoted(name[:60])} names no applicable configured action"
            )
        chosen = [e for e in chosen if e.name in wanted]
    return Plan(actions=[planned(e) for e in chosen], notes=notes)
