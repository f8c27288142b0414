"""The audit log: who changed what, when and from where, kept in the store.

What people do to the receiver from its pages (switching the kill switch, and later approving
an action) is written here in the same transaction as the change itself, and logged as a
structured line by the caller: the stored entry survives log rotation, the line reaches the
log pipeline.

All functions take the store's connection and run inside ``store.write``/``store.read``.
"""

from __future__ import annotations

from dataclasses import dataclass

from receiver.store.base import Connection

__all__ = ["AuditEntry", "recent_audit", "record_audit"]


@dataclass(frozen=True)
class AuditEntry:
    """One change made by a person: ``actor`` (who), ``origin`` (the client address they came
    from), ``action`` (what, in a few words) and ``detail``."""

    at: float
    actor: str
    origin: str
    action: str
    detail: str = ""


def record_audit(conn: Connection, entry: AuditEntry) -> None:
    conn.execute(
        "INSERT INTO audit_log (at, actor, origin, action, detail) VALUES (?, ?, ?, ?, ?)",
        (entry.at, entry.actor, entry.origin, entry.action, entry.detail),
    )


def recent_audit(conn: Connection, limit: int = 20) -> list[AuditEntry]:
    """The ``limit`` newest entries, newest first."""
    rows = conn.execute(
        "SELECT at, actor, origin, action, detail FROM audit_log ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [AuditEntry(r["at"], r["actor"], r["origin"], r["action"], r["detail"]) for r in rows]
