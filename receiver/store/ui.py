"""What the web pages read that no other reader gives: the incident list and one journal.

The incident list needs the triage verdict and filters by severity; the incident page shows an
incident's whole journal (every state, not only what a revert looks at). Every function takes
the store's connection and runs inside ``store.read``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from receiver.store.base import Connection
from receiver.store.journal import JournalEntry

__all__ = ["IncidentRow", "incident_rows", "journal_of", "opened_at"]


@dataclass(frozen=True)
class IncidentRow:
    """One line of the incident list."""

    id: str
    status: str
    title: str
    severity: str | None
    error_class: str | None
    verdict: str | None
    opened_at: float
    updated_at: float
    resolved_at: float | None
    acknowledge_by: float | None


# Open incidents first, then newest first: the list answers "what needs me now".
_LIST = (
    "SELECT id, status, title, severity, error_class, json_extract(decision, '$.verdict'),"
    " opened_at, updated_at, resolved_at, acknowledge_by FROM incidents{where}"
    " ORDER BY status = 'open' DESC, opened_at DESC LIMIT ?"
)


def incident_rows(
    conn: Connection,
    *,
    status: str | None = None,
    severity: str | None = None,
    limit: int = 200,
) -> list[IncidentRow]:
    """Incidents for the list, open ones first, optionally of one status and severity."""
    clauses: list[str] = []
    args: list[Any] = []
    if status is not None:
        clauses.append("status = ?")
        args.append(status)
    if severity is not None:
        clauses.append("severity = ?")
        args.append(severity)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(_LIST.format(where=where), (*args, limit)).fetchall()
    return [IncidentRow(*tuple(r)) for r in rows]


def journal_of(conn: Connection, incident_id: str) -> list[JournalEntry]:
    """Every journal entry of one incident, oldest first, whatever its state."""
    rows = conn.execute(
        "SELECT id, incident_id, action, kind, target, state, before, after, reason"
        " FROM remediation_actions WHERE incident_id = ? ORDER BY id",
        (incident_id,),
    ).fetchall()
    return [
        JournalEntry(
            id=r["id"],
            incident_id=r["incident_id"],
            action=r["action"],
            kind=r["kind"],
            target=r["target"],
            state=r["state"],
            before=json.loads(r["before"]) if r["before"] else None,
            after=json.loads(r["after"]) if r["after"] else None,
            reason=r["reason"],
        )
        for r in rows
    ]


def opened_at(conn: Connection, incident_id: str) -> float:
    """When a stored incident opened, as seconds since the epoch."""
    opened = conn.execute("SELECT opened_at FROM incidents WHERE id = ?", (incident_id,))
    return float(opened.fetchone()[0])
