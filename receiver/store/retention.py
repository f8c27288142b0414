"""Retention's SQL: deleting old resolved incidents with their rows, and the bundle records.

What is kept and for how long, and deleting the files, is :mod:`receiver.retention`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from receiver.store.base import Connection
from receiver.store.incidents import add_timeline

__all__ = [
    "PrunedIncidents",
    "StoredBundle",
    "forget_bundles",
    "incidents_kept",
    "prune_incidents",
    "rows_held",
    "stored_bundles",
]


# The tables whose rows belong to one incident, emptied before the incident's own row (the
# first four, the PagerDuty ones and approvals refer to it with a foreign key).
_INCIDENT_TABLES = (
    "approvals",
    "alerts",
    "timeline",
    "incident_events",
    "evidence_bundles",
    "outbox",
    "notify_state",
    "remediation_actions",
    "remediation_reverts",
    "pagerduty_events",
    "pagerduty_incidents",
)

# A resolved incident that still has work to do is kept whatever its age: an event not yet
# handled, a notification not yet delivered, or a change of ours that a revert still has to
# look at (scheduled or not: the same condition as ``journal.revertible``).
_PRUNABLE = (
    "SELECT id FROM incidents i WHERE status = 'resolved' AND resolved_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM incident_events e"
    "  WHERE e.incident_id = i.id AND e.state = 'pending')"
    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id AND o.state = 'pending')"
    " AND NOT EXISTS (SELECT 1 FROM remediation_reverts r"
    "  WHERE r.incident_id = i.id AND r.state = 'pending')"
    " AND NOT EXISTS (SELECT 1 FROM remediation_actions a WHERE a.incident_id = i.id"
    "  AND a.kind = 'set_env' AND a.state IN ('intent', 'done', 'reverting'))"
    " ORDER BY resolved_at LIMIT ?"
)


@dataclass(frozen=True)
class PrunedIncidents:
    """Incidents deleted in one batch, and the evidence files that were theirs."""

    ids: list[str]
    bundle_paths: list[str]


def prune_incidents(conn: Connection, *, resolved_before: float, limit: int) -> PrunedIncidents:
    """Delete at most ``limit`` incidents resolved before ``resolved_before`` (oldest first)
    with every row that belongs to them; an incident with work left is kept (``_PRUNABLE``).

    The bundle files are the caller's to delete, after the commit: a crash in between leaves
    files that no row names, which retention finds by their names later.
    """
    ids = [r[0] for r in conn.execute(_PRUNABLE, (resolved_before, limit))]
    if not ids:
        return PrunedIncidents([], [])
    marks = ",".join("?" * len(ids))
    paths = [
        r[0]
        for r in conn.execute(
            f"SELECT path FROM evidence_bundles WHERE incident_id IN ({marks})", ids
        )
    ]
    for table in _INCIDENT_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE incident_id IN ({marks})", ids)
    conn.execute(f"DELETE FROM incidents WHERE id IN ({marks})", ids)
    return PrunedIncidents(ids, paths)


def incidents_kept(conn: Connection) -> dict[str, int]:
    """How many incidents the store holds, by status (open, resolved)."""
    kept = {"open": 0, "resolved": 0}
    for row in conn.execute("SELECT status, count(*) FROM incidents GROUP BY status"):
        kept[row[0]] = int(row[1])
    return kept


def rows_held(conn: Connection, incident_id: str) -> dict[str, int]:
    """How many rows each table holds for one incident (``incidents``: its own row): what
    pruning it deletes, for people checking that retention left nothing behind."""
    held = {
        table: int(
            conn.execute(
                f"SELECT count(*) FROM {table} WHERE incident_id = ?", (incident_id,)
            ).fetchone()[0]
        )
        for table in _INCIDENT_TABLES
    }
    row = conn.execute("SELECT count(*) FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    held["incidents"] = int(row[0])
    return held


@dataclass(frozen=True)
class StoredBundle:
    """An evidence bundle the store knows, with when its incident resolved (``None``: open)."""

    id: int
    incident_id: str
    phase: str
    path: str
    resolved_at: float | None


def stored_bundles(conn: Connection) -> list[StoredBundle]:
    """Every evidence bundle recorded, with its incident's resolution time."""
    rows = conn.execute(
        "SELECT b.id, b.incident_id, b.phase, b.path,"
        " CASE WHEN i.status = 'resolved' THEN i.resolved_at END AS resolved_at"
        " FROM evidence_bundles b JOIN incidents i ON i.id = b.incident_id ORDER BY b.id"
    ).fetchall()
    return [
        StoredBundle(r["id"], r["incident_id"], r["phase"], r["path"], r["resolved_at"])
        for r in rows
    ]


def forget_bundles(conn: Connection, bundles: Sequence[StoredBundle], why: str) -> None:
    """Delete the records of bundles whose files are being deleted, and say so on each
    incident's timeline (``why``: the reason, for a person)."""
    for bundle in bundles:
        cur = conn.execute("DELETE FROM evidence_bundles WHERE id = ?", (bundle.id,))
        if cur.rowcount:
            add_timeline(
                conn,
                bundle.incident_id,
                "evidence",
                f"evidence bundle ({bundle.phase}) deleted: {why}",
                {"phase": bundle.phase, "path": bundle.path},
            )
