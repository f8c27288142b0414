"""The runtime kill switch: switched from the operations page, kept in the store.

Why a third switch beside ``remediation.kill_switch`` (config) and ``kill_switch_file``: both
need a deploy or cluster access, while the person watching an action go wrong has the page
open. The switch is a row in the store, so it survives restarts, and remediation reads it in
the same guard as the other two (:func:`receiver.remediation.guards.kill_switch`) before
every change and every revert. Each flip is written to the audit log in the same transaction.

All functions take the store's connection and run inside ``store.write``/``store.read``.
"""

from __future__ import annotations

from dataclasses import dataclass

from receiver.store.audit import AuditEntry, record_audit
from receiver.store.base import Connection

__all__ = ["RuntimeSwitch", "runtime_kill_switch", "set_runtime_kill_switch"]

_NAME = "kill_switch"


@dataclass(frozen=True)
class RuntimeSwitch:
    """The runtime kill switch's state, with who last flipped it, when and from where."""

    on: bool
    changed_by: str
    changed_from: str
    changed_at: float


def runtime_kill_switch(conn: Connection) -> RuntimeSwitch | None:
    """The runtime kill switch; ``None`` if nobody ever flipped it (off)."""
    row = conn.execute(
        "SELECT is_on, changed_by, changed_from, changed_at FROM runtime_switches WHERE name = ?",
        (_NAME,),
    ).fetchone()
    if row is None:
        return None
    return RuntimeSwitch(bool(row[0]), row[1], row[2], float(row[3]))


def set_runtime_kill_switch(
    conn: Connection, *, on: bool, actor: str, origin: str, at: float
) -> bool:
    """Switch the runtime kill switch ``on`` or off and audit it; ``False`` (and nothing
    written) if it already was so."""
    current = runtime_kill_switch(conn)
    if (current.on if current is not None else False) == on:
        return False
    conn.execute(
        "INSERT INTO runtime_switches (name, is_on, changed_by, changed_from, changed_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET is_on = excluded.is_on,"
        " changed_by = excluded.changed_by, changed_from = excluded.changed_from,"
        " changed_at = excluded.changed_at",
        (_NAME, int(on), actor, origin, at),
    )
    record_audit(
        conn,
        AuditEntry(
            at=at,
            actor=actor,
            origin=origin,
            action="kill switch on" if on else "kill switch off",
        ),
    )
    return True
