"""Whether the store's contents still make sense: the database's own checks and the incident
rules (one open incident per group, an open incident fires, a resolved one does not, one
``opened`` event each, no stored webhook the worker could not apply).

For people inspecting a store and for the tests that drive the real application and then ask
the store what it holds; the receiver itself never needs it to run.
"""

from __future__ import annotations

import sqlite3

from receiver.store.base import Connection

__all__ = ["check_integrity"]

_INCIDENTS = (
    "SELECT i.id, i.status, i.resolved_at,"
    " (SELECT count(*) FROM alerts a WHERE a.incident_id = i.id) AS alerts,"
    " (SELECT count(*) FROM alerts a WHERE a.incident_id = i.id AND a.status = 'firing')"
    "  AS firing,"
    " (SELECT count(*) FROM incident_events e WHERE e.incident_id = i.id"
    "  AND e.kind = 'opened') AS opened"
    " FROM incidents i ORDER BY i.id"
)


def _sqlite_problems(conn: sqlite3.Connection) -> list[str]:
    """SQLite's own checks: the file's structure, and foreign keys (SQLite enforces them only
    on connections that ask, so rows may break them)."""
    problems: list[str] = []
    if (check := conn.execute("PRAGMA integrity_check").fetchone()[0]) != "ok":
        problems.append(f"integrity check: {check}")
    for row in conn.execute("PRAGMA foreign_key_check").fetchall():
        problems.append(f"a row of {row[0]} refers to a missing row of {row[2]}")
    return problems


def check_integrity(conn: Connection) -> list[str]:
    """The problems found, one line each for a person; empty when the store is consistent.

    On SQLite, the database's integrity and foreign-key checks first; PostgreSQL checks its
    own structure and always enforces foreign keys, so there only the incident rules run.
    """
    problems = _sqlite_problems(conn) if isinstance(conn, sqlite3.Connection) else []
    for row in conn.execute(
        "SELECT group_key, count(*) AS n FROM incidents WHERE status = 'open'"
        " GROUP BY group_key HAVING count(*) > 1 ORDER BY group_key"
    ):
        problems.append(f"{row['n']} open incidents for one group")
    for row in conn.execute(_INCIDENTS):
        incident = row["id"]
        if row["alerts"] == 0:
            problems.append(f"incident {incident} has no alerts")
        if row["status"] == "open" and row["firing"] == 0:
            problems.append(f"incident {incident} is open with no firing alert")
        if row["status"] == "resolved" and (row["firing"] or row["resolved_at"] is None):
            problems.append(f"incident {incident} is resolved but an alert still fires")
        if row["opened"] != 1:
            problems.append(f"incident {incident} has {row['opened']} 'opened' events")
    for row in conn.execute("SELECT id, error FROM inbox WHERE state = 'failed' ORDER BY id"):
        problems.append(f"stored webhook {row['id']} could not be applied: {row['error']}")
    return problems
