"""One decision per target: apply the change, rely on one in place, or refuse it.

Incidents handled at the same time often need the same change (a storm of rate-limited alert
groups all want ``RATE_LIMIT_MODE=queue``). The remediator decides for one target at a time
(an asyncio lock per target within the process); what it decides is written here, in one
store transaction that reads the journal rows of the target and writes this incident's row, so
the rule does not depend on that lock: the journal rows of a target are the single source.

- Another incident's ``intent`` for the same change (its write is under way): this incident
  records ``held``, relying on it.
- Otherwise the budget and cooldown guards, then this incident's ``intent``: it makes the change.
- A value found in place (``join``): ``held``, naming the incident of ours that applied it, if
  any. Held rows are what the revert counts: the value is set back by the last incident
  relying on it (``journal.hand_over``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from receiver.remediation import guards
from receiver.remediation.plan import PlannedAction
from receiver.store import Connection, journal

__all__ = ["Claim", "applied_by", "change_refused", "claim", "join"]


@dataclass(frozen=True)
class Claim:
    """The decision for this incident: make the change (``entry_id``, its intent), rely on one
    under way (``holder``: the incident making it), or neither (``refusal``)."""

    entry_id: int | None = None
    holder: str | None = None
    refusal: str | None = None


def change_refused(
    conn: Connection,
    *,
    incident_id: str,
    action: PlannedAction,
    target: str,
    facts: guards.Facts,
) -> str | None:
    """Budget and cooldown, from the journal as it is now."""
    used = journal.actions_used(conn, incident_id, other_than=action.name)
    last = journal.last_applied(conn, action.name, target)
    return guards.before_changing(
        dataclasses.replace(facts, used_budget=used, last_applied_at=last)
    )


def claim(
    conn: Connection,
    *,
    incident_id: str,
    action: PlannedAction,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    facts: guards.Facts,
    same_value: bool,
) -> Claim:
    """Decide and journal in one transaction (see the module). ``same_value``: only another
    intent aiming at the same ``after`` is the same change (a variable's value; a restart's
    stamp differs every time, any restart under way is the same change)."""
    under_way = journal.others(
        conn,
        action=action.name,
        target=target,
        states=("intent",),
        other_than=incident_id,
        after=after if same_value else None,
        open_only=True,
    )
    if under_way:
        holder = under_way[0].incident_id
        journal.write_intent(
            conn,
            incident_id=incident_id,
            action=action.name,
            kind=action.kind,
            target=target,
            before=before,
            after=after,
            at=facts.now,
            state="held",
            reason=f"under way for {holder}",
        )
        return Claim(holder=holder)
    refusal = change_refused(
        conn, incident_id=incident_id, action=action, target=target, facts=facts
    )
    if refusal is not None:
        return Claim(refusal=refusal)
    entry_id = journal.write_intent(
        conn,
        incident_id=incident_id,
        action=action.name,
        kind=action.kind,
        target=target,
        before=before,
        after=after,
        at=facts.now,
    )
    return Claim(entry_id=entry_id)


def applied_by(
    conn: Connection,
    *,
    incident_id: str,
    action: str,
    target: str,
    after: dict[str, Any] | None,
) -> str | None:
    """The other incident whose change (``done``, or ``intent`` just reconciled) put ``after``
    in place, if one of ours did."""
    found = journal.others(
        conn,
        action=action,
        target=target,
        states=("done", "intent"),
        other_than=incident_id,
        after=after,
    )
    return found[0].incident_id if found else None


def join(
    conn: Connection,
    *,
    incident_id: str,
    action: PlannedAction,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    at: float,
) -> str | None:
    """The value is in place: record this incident as relying on it (``held``); the incident
    of ours that applied it, or ``None`` when someone else did."""
    holder = applied_by(
        conn, incident_id=incident_id, action=action.name, target=target, after=after
    )
    journal.write_intent(
        conn,
        incident_id=incident_id,
        action=action.name,
        kind=action.kind,
        target=target,
        before=before,
        after=after,
        at=at,
        state="held",
        reason=f"in place, applied for {holder}" if holder else "already set",
    )
    return holder
