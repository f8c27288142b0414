"""The action journal: what was about to be done, what was done, and how to undo it.

Why an intent row before every change: a crash between "patch sent" and "outcome recorded"
must not lead to the change being applied twice, nor forgotten when reverting. The intent
row is committed before the Kubernetes call; after it, the row becomes ``done`` (or
``failed``). An ``intent`` row found later is reconciled by reading the live object: if it
shows the intended value, the change happened and the row becomes ``done``.

States: ``intent`` -> ``done`` | ``failed`` | ``held`` (already as wanted; nothing changed) |
``dry_run``; on revert ``done`` -> ``reverting`` -> ``reverted`` | ``revert_skipped``, or
``handed_over`` when another open incident still needs the value.

The rows of one target are the single source for what is applied there: an incident that finds
another's ``intent`` or ``done`` row for the same change relies on it (``held``) instead of
applying it again, and the last open incident relying on a value sets it back.

All functions take the store's connection and run inside ``store.write``/``store.read``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from receiver.store.base import Connection, Row

__all__ = [
    "JournalEntry",
    "State",
    "actions_used",
    "due_reverts",
    "finish_revert",
    "get_entry",
    "hand_over",
    "holders",
    "last_applied",
    "others",
    "postpone_revert",
    "revertible",
    "schedule_revert",
    "set_state",
    "touch_cooldown",
    "write_intent",
]

State = Literal[
    "intent",
    "done",
    "held",
    "failed",
    "dry_run",
    "reverting",
    "reverted",
    "revert_skipped",
    "handed_over",
]


@dataclass(frozen=True)
class JournalEntry:
    id: int
    incident_id: str
    action: str
    kind: str
    target: str
    state: State
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str


def _entry(row: Row) -> JournalEntry:
    return JournalEntry(
        id=row["id"],
        incident_id=row["incident_id"],
        action=row["action"],
        kind=row["kind"],
        target=row["target"],
        state=row["state"],
        before=json.loads(row["before"]) if row["before"] else None,
        after=json.loads(row["after"]) if row["after"] else None,
        reason=row["reason"],
    )


def _json(value: dict[str, Any] | None) -> str | None:
    return json.dumps(value, sort_keys=True) if value is not None else None


def get_entry(conn: Connection, incident_id: str, action: str) -> JournalEntry | None:
    row = conn.execute(
        "SELECT * FROM remediation_actions WHERE incident_id = ? AND action = ?",
        (incident_id, action),
    ).fetchone()
    return _entry(row) if row else None


def write_intent(
    conn: Connection,
    *,
    incident_id: str,
    action: str,
    kind: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    at: float,
    state: State = "intent",
    reason: str = "",
) -> int:
    """Record what is about to be done (or, with ``state``, what was decided)."""
    conn.execute(
        "INSERT INTO remediation_actions (incident_id, action, kind, target, state, before,"
        " after, created_at, updated_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (incident_id, action) DO UPDATE SET kind = excluded.kind,"
        " target = excluded.target, state = excluded.state, before = excluded.before,"
        " after = excluded.after, updated_at = excluded.updated_at, reason = excluded.reason",
        (incident_id, action, kind, target, state, _json(before), _json(after), at, at, reason),
    )
    row = conn.execute(
        "SELECT id FROM remediation_actions WHERE incident_id = ? AND action = ?",
        (incident_id, action),
    ).fetchone()
    return int(row["id"])


def set_state(
    conn: Connection,
    entry_id: int,
    state: State,
    *,
    at: float,
    reason: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Move an entry on; ``before``/``after`` replace the stored values when given."""
    conn.execute(
        "UPDATE remediation_actions SET state = ?, updated_at = ?, reason = ?,"
        " before = coalesce(?, before), after = coalesce(?, after) WHERE id = ?",
        (state, at, reason, _json(before), _json(after), entry_id),
    )


def actions_used(conn: Connection, incident_id: str, *, other_than: str) -> int:
    """Changes made (or possibly made) for an incident by actions other than ``other_than``
    (whose own unfinished attempt must not use up its budget): what the budget counts."""
    row = conn.execute(
        "SELECT count(*) FROM remediation_actions WHERE incident_id = ? AND action != ?"
        " AND kind != 'escalate_infrastructure'"
        " AND state IN ('intent', 'done', 'reverting', 'reverted', 'revert_skipped')",
        (incident_id, other_than),
    ).fetchone()
    return int(row[0])


def last_applied(conn: Connection, action: str, target: str) -> float | None:
    row = conn.execute(
        "SELECT applied_at FROM remediation_cooldowns WHERE action = ? AND target = ?",
        (action, target),
    ).fetchone()
    return float(row[0]) if row else None


def touch_cooldown(conn: Connection, action: str, target: str, at: float) -> None:
    conn.execute(
        "INSERT INTO remediation_cooldowns (action, target, applied_at) VALUES (?, ?, ?)"
        " ON CONFLICT (action, target) DO UPDATE SET applied_at = excluded.applied_at",
        (action, target, at),
    )


def revertible(conn: Connection, incident_id: str) -> list[JournalEntry]:
    """Entries of an incident that a revert has to look at, newest first."""
    rows = conn.execute(
        "SELECT * FROM remediation_actions WHERE incident_id = ? AND kind = 'set_env'"
        " AND state IN ('intent', 'done', 'reverting') ORDER BY id DESC",
        (incident_id,),
    ).fetchall()
    return [_entry(r) for r in rows]


def holders(conn: Connection, target: str, *, other_than: str) -> list[JournalEntry]:
    """Entries of other, still open incidents that rely on the same variable's value."""
    rows = conn.execute(
        "SELECT a.* FROM remediation_actions a JOIN incidents i ON i.id = a.incident_id"
        " WHERE a.target = ? AND a.incident_id != ? AND i.status = 'open'"
        " AND a.state IN ('held', 'done') ORDER BY a.id",
        (target, other_than),
    ).fetchall()
    return [_entry(r) for r in rows]


def others(
    conn: Connection,
    *,
    action: str,
    target: str,
    states: tuple[State, ...],
    other_than: str,
    after: dict[str, Any] | None = None,
    open_only: bool = False,
) -> list[JournalEntry]:
    """Entries of other incidents for the same action on the same target (aiming at the same
    value when ``after`` is given), in one of ``states``, oldest first."""
    marks = ", ".join("?" for _ in states)
    sql = (
        "SELECT a.* FROM remediation_actions a JOIN incidents i ON i.id = a.incident_id"
        f" WHERE a.action = ? AND a.target = ? AND a.incident_id != ? AND a.state IN ({marks})"
    )
    params: list[Any] = [action, target, other_than, *states]
    if after is not None:
        sql += " AND a.after = ?"
        params.append(_json(after))
    if open_only:
        sql += " AND i.status = 'open'"
    rows = conn.execute(sql + " ORDER BY a.id", params).fetchall()
    return [_entry(r) for r in rows]


def hand_over(conn: Connection, entry: JournalEntry, *, at: float) -> JournalEntry | None:
    """Give the revert of ``entry`` to the first other open incident relying on its value; the
    heir, or ``None`` when none is left (then ``entry`` is to be reverted).

    One transaction: an incident resolving at the same moment is either still open here (and
    reverts when it resolves, having become ``done``) or no heir at all."""
    heirs = holders(conn, entry.target, other_than=entry.incident_id)
    if not heirs:
        return None
    heir = heirs[0]
    set_state(
        conn,
        heir.id,
        "done",
        at=at,
        reason=f"handed over by {entry.incident_id}",
        before=entry.before,
    )
    set_state(conn, entry.id, "handed_over", at=at, reason=heir.incident_id)
    return heir


def schedule_revert(conn: Connection, incident_id: str, due_at: float) -> bool:
    """Schedule the revert of an incident's changes; ``False`` if nothing needs reverting
    or it was scheduled before."""
    if not revertible(conn, incident_id):
        return False
    cur = conn.execute(
        "INSERT INTO remediation_reverts (incident_id, due_at) VALUES (?, ?)"
        " ON CONFLICT DO NOTHING",
        (incident_id, due_at),
    )
    return cur.rowcount == 1


def due_reverts(conn: Connection, now: float) -> list[str]:
    rows = conn.execute(
        "SELECT incident_id FROM remediation_reverts WHERE state = 'pending' AND due_at <= ?"
        " ORDER BY due_at",
        (now,),
    ).fetchall()
    return [r[0] for r in rows]


def postpone_revert(conn: Connection, incident_id: str, due_at: float) -> None:
    conn.execute(
        "UPDATE remediation_reverts SET due_at = ? WHERE incident_id = ?", (due_at, incident_id)
    )


def finish_revert(conn: Connection, incident_id: str) -> None:
    conn.execute(
        "INSERT INTO remediation_reverts (incident_id, due_at, state) VALUES (?, 0, 'done')"
        " ON CONFLICT (incident_id) DO UPDATE SET state = 'done'",
        (incident_id,),
    )
