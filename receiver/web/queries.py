"""What the pages read from the store: the one module of the web UI that touches SQL.

Where a reader exists (incidents, the outbox, the remediation journal, evidence bundles) it is
called; the only SQL of its own is the incident list (it needs the verdict and filters by
severity) and the journal of one incident. Every function takes the store's connection and
runs inside ``store.read``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from receiver.audit import AuditEntry, recent_audit
from receiver.evidence.collector import BundleRecord, bundles_for
from receiver.incidents import get_incident
from receiver.notify.outbox import list_messages, queue_depth
from receiver.remediation import approval
from receiver.remediation.approval import Approval
from receiver.remediation.journal import JournalEntry
from receiver.remediation.kill_switch import RuntimeSwitch, runtime_kill_switch
from receiver.store import Connection

__all__ = [
    "IncidentDetail",
    "IncidentRow",
    "Operations",
    "incident_detail",
    "incident_rows",
    "operations",
]


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


@dataclass(frozen=True)
class IncidentDetail:
    """Everything the incident page shows, read in one transaction."""

    incident: dict[str, Any]
    opened_at: float
    journal: list[JournalEntry]
    messages: list[dict[str, Any]]
    bundles: list[BundleRecord]
    approvals: list[Approval]


@dataclass(frozen=True)
class Operations:
    """The operations view's stored part: the runtime kill switch, the outbox backlog per
    destination, the approvals awaiting a person and the newest audit entries."""

    runtime_switch: RuntimeSwitch | None
    backlog: dict[str, int]
    audit: list[AuditEntry]
    awaiting: list[Approval]


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


def _journal(conn: Connection, incident_id: str) -> list[JournalEntry]:
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


def incident_detail(conn: Connection, incident_id: str) -> IncidentDetail | None:
    """The incident with its alerts, timeline, journal, notifications and bundles."""
    incident = get_incident(conn, incident_id)
    if incident is None:
        return None
    opened = conn.execute("SELECT opened_at FROM incidents WHERE id = ?", (incident_id,))
    return IncidentDetail(
        incident=incident,
        opened_at=float(opened.fetchone()[0]),
        journal=_journal(conn, incident_id),
        messages=list_messages(conn, incident_id),
        bundles=bundles_for(conn, incident_id),
        approvals=approval.for_incident(conn, incident_id),
    )


def operations(conn: Connection) -> Operations:
    return Operations(
        runtime_switch=runtime_kill_switch(conn),
        backlog=queue_depth(conn),
        audit=recent_audit(conn),
        awaiting=approval.awaiting(conn),
    )
