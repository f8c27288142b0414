"""Approvals: a runbook action that waits for a person before it changes anything.

An action configured with ``approval: required`` is not applied when its incident is
remediated: once the guards that can be checked then let it through, an approval is requested
(one per incident and action, ``awaiting`` until ``expires_at``). A person approves or denies
it from the incident page or Slack; nobody in time, and it expires and escalates.

Why one conditional update: two clicks (twice on the page, or the page and Slack at once) must
apply the action at most once. ``decide`` moves ``awaiting`` to ``approved``/``denied`` only
if it is still awaiting and not expired, in the same store transaction as the audit entry, so
exactly one of the racing requests wins; the others are told who decided first.

All functions take the store's connection and run inside ``store.write``/``store.read``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from receiver.store.audit import AuditEntry, record_audit
from receiver.store.base import Connection, Row

__all__ = [
    "Approval",
    "Decision",
    "State",
    "awaiting",
    "decide",
    "expire",
    "expired_due",
    "for_incident",
    "get",
    "request",
]

State = Literal["awaiting", "approved", "denied", "expired"]
Decision = Literal["approved", "denied"]

_COLUMNS = (
    "id, incident_id, action, target, state, requested_at, expires_at, decided_at, decided_by,"
    " decided_via"
)


@dataclass(frozen=True)
class Approval:
    """One action of one incident waiting for (or decided by) a person. ``decided_via``:
    where the decision came from (``page``, ``slack``; ``expiry`` when nobody decided)."""

    id: str
    incident_id: str
    action: str
    target: str
    state: State
    requested_at: float
    expires_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    decided_via: str | None = None

    @property
    def is_awaiting(self) -> bool:
        return self.state == "awaiting"


def _approval(row: Row) -> Approval:
    # Iterating a row gives its values (as sqlite3.Row does): the names come from keys().
    return Approval(**{name: row[name] for name in row.keys()})  # noqa: SIM118


def get(conn: Connection, approval_id: str) -> Approval | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
    return _approval(row) if row else None


def request(
    conn: Connection,
    *,
    incident_id: str,
    action: str,
    target: str,
    at: float,
    expires_at: float,
) -> tuple[Approval, bool]:
    """The incident's approval for ``action``: requested now, or the one requested before
    (whatever its state); ``True`` when it was requested now."""
    cur = conn.execute(
        "INSERT INTO approvals (id, incident_id, action, target, requested_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (incident_id, action) DO NOTHING",
        # Unguessable: the id travels in Slack buttons and the page's form.
        (secrets.token_urlsafe(16), incident_id, action, target, at, expires_at),
    )
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM approvals WHERE incident_id = ? AND action = ?",
        (incident_id, action),
    ).fetchone()
    return _approval(row), cur.rowcount == 1


def decide(
    conn: Connection,
    approval_id: str,
    *,
    decision: Decision,
    by: str,
    via: str,
    origin: str,
    at: float,
) -> Approval | None:
    """Approve or deny, if still awaiting and not expired: the decided approval, audited in
    the same transaction; ``None`` when someone (or the expiry) decided first."""
    cur = conn.execute(
        "UPDATE approvals SET state = ?, decided_at = ?, decided_by = ?, decided_via = ?"
        " WHERE id = ? AND state = 'awaiting' AND expires_at > ?",
        (decision, at, by, via, approval_id, at),
    )
    if cur.rowcount != 1:
        return None
    decided = get(conn, approval_id)
    assert decided is not None
    verb = "approved" if decision == "approved" else "denied"
    record_audit(
        conn,
        AuditEntry(
            at=at,
            actor=by,
            origin=origin,
            action=f"{verb} {decided.action}",
            detail=f"incident {decided.incident_id}, from the {via}",
        ),
    )
    return decided


def expire(conn: Connection, approval_id: str, *, at: float) -> Approval | None:
    """Mark an approval whose time is up expired; ``None`` if it was decided meanwhile."""
    cur = conn.execute(
        "UPDATE approvals SET state = 'expired', decided_at = ?, decided_via = 'expiry'"
        " WHERE id = ? AND state = 'awaiting' AND expires_at <= ?",
        (at, approval_id, at),
    )
    return get(conn, approval_id) if cur.rowcount == 1 else None


def expired_due(conn: Connection, now: float) -> list[Approval]:
    """Approvals still awaiting whose time is up, oldest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM approvals WHERE state = 'awaiting' AND expires_at <= ?"
        " ORDER BY expires_at",
        (now,),
    ).fetchall()
    return [_approval(r) for r in rows]


def awaiting(conn: Connection, limit: int = 100) -> list[Approval]:
    """Every approval still awaiting a person, the first to expire first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM approvals WHERE state = 'awaiting' ORDER BY expires_at LIMIT ?",
        (limit,),
    ).fetchall()
    return [_approval(r) for r in rows]


def for_incident(conn: Connection, incident_id: str) -> list[Approval]:
    """An incident's approvals, in the order they were requested."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM approvals WHERE incident_id = ? ORDER BY requested_at, id",
        (incident_id,),
    ).fetchall()
    return [_approval(r) for r in rows]
