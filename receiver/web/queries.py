"""What the pages read from the store, gathered per page.

Every reader is the store's (incidents, the outbox, the remediation journal, evidence bundles,
and the pages' own: :mod:`receiver.store.ui`). Every function takes the store's connection and
runs inside ``store.read``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from receiver.evidence.collector import BundleRecord, bundles_for
from receiver.notify.outbox import list_messages, queue_depth
from receiver.store import Connection
from receiver.store import approvals as approval
from receiver.store.approvals import Approval
from receiver.store.audit import AuditEntry, recent_audit
from receiver.store.incidents import get_incident
from receiver.store.journal import JournalEntry
from receiver.store.runtime_switches import RuntimeSwitch, runtime_kill_switch
from receiver.store.ui import IncidentRow, incident_rows, journal_of, opened_at

__all__ = [
    "IncidentDetail",
    "IncidentRow",
    "Operations",
    "incident_detail",
    "incident_rows",
    "operations",
]


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


def incident_detail(conn: Connection, incident_id: str) -> IncidentDetail | None:
    """The incident with its alerts, timeline, journal, notifications and bundles."""
    incident = get_incident(conn, incident_id)
    if incident is None:
        return None
    return IncidentDetail(
        incident=incident,
        opened_at=opened_at(conn, incident_id),
        journal=journal_of(conn, incident_id),
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
