"""The outbox's tables: stored notifications, and what each destination remembers.

How the outbox orders, supersedes, holds off and retries messages is told in
:mod:`receiver.notify.outbox`, which delivers them; this module is its SQL. ``notify_state``
keeps what a destination remembers, per scope.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from receiver.runbook import Severity
from receiver.store.base import Connection, Row

__all__ = [
    "MAX_ERROR",
    "SUPERSEDABLE",
    "Draft",
    "drop_flapping",
    "enqueue",
    "flapping_queues",
    "get_state",
    "list_messages",
    "pending_heads",
    "prune_outbox",
    "queue_depth",
    "record_failed",
    "record_retry",
    "record_sent",
    "set_state",
    "skip_superseded",
    "superseded_messages",
]

# Longest error text kept on a message.
MAX_ERROR = 500
# Kinds whose queued message is superseded by a later queued one of the same kind, incident
# and ordering key: each carries the whole state its destination needs.
SUPERSEDABLE = ("pagerduty.trigger", "statuspage.update")


def _changes_state(row: str) -> str:
    """SQL: whether the outbox row ``row`` moves its destination to a new state on its own (an
    acknowledge, a resolve, a status-page resolve). Nothing supersedes a message across one,
    and one never supersedes what came before it: that state must be reached first (a trigger
    then a resolve leaves PagerDuty resolved; customers hear of an incident that lasted past
    the hold-off before they hear it resolved)."""
    return (
        f"({row}.kind IN ('pagerduty.acknowledge', 'pagerduty.resolve')"
        f" OR ({row}.kind = 'statuspage.update'"
        f" AND json_extract({row}.payload, '$.status') = 'resolved'))"
    )


@dataclass(frozen=True)
class Draft:
    """A message about to be stored."""

    destination: str
    kind: str  # "<system>.<what>", e.g. "pagerduty.trigger", "statuspage.update"
    payload: dict[str, Any]
    idempotency_key: str
    not_before: float = 0.0
    scope: str | None = None  # shared by many incidents' messages; the incident's otherwise
    # The incident's severity when the message was drafted: the more severe goes first. A
    # draft that does not say counts as a P1, so it is never held back.
    severity: Severity = Severity.P1

    def ordering_key(self, incident_id: str) -> str:
        system = self.kind.partition(".")[0]
        return f"{self.destination}:{system}:{self.scope or incident_id}"


def enqueue(conn: Connection, incident_id: str, drafts: list[Draft], *, now: float) -> int:
    """Store drafts not stored before (by idempotency key); the number newly stored."""
    stored = 0
    for d in drafts:
        cur = conn.execute(
            "INSERT INTO outbox (idempotency_key, destination, incident_id,"
            " ordering_key, kind, payload, not_before, next_attempt_at, created_at, priority)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                d.idempotency_key,
                d.destination,
                incident_id,
                d.ordering_key(incident_id),
                d.kind,
                json.dumps(d.payload, ensure_ascii=False),
                d.not_before,
                0.0,
                now,
                d.severity.rank,
            ),
        )
        stored += cur.rowcount
    return stored


def get_state(conn: Connection, destination: str, incident_id: str) -> dict[str, str]:
    """What a destination remembers about an incident."""
    rows = conn.execute(
        "SELECT key, value FROM notify_state WHERE destination = ? AND incident_id = ?",
        (destination, incident_id),
    ).fetchall()
    return {r["key"]: r["value"] for r in rows}


def set_state(
    conn: Connection,
    destination: str,
    incident_id: str,
    values: Mapping[str, str],
    *,
    now: float,
) -> None:
    """Remember ``values``; an empty value forgets its key."""
    for key, value in values.items():
        if not value:
            conn.execute(
                "DELETE FROM notify_state WHERE destination = ? AND incident_id = ? AND key = ?",
                (destination, incident_id, key),
            )
            continue
        conn.execute(
            "INSERT INTO notify_state (destination, incident_id, key, value, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (destination, incident_id, key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (destination, incident_id, key, value, now),
        )


def queue_depth(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT destination, count(*) AS n FROM outbox WHERE state = 'pending' GROUP BY destination"
    ).fetchall()
    return {r["destination"]: int(r["n"]) for r in rows}


def list_messages(conn: Connection, incident_id: str | None = None) -> list[dict[str, Any]]:
    """Stored messages, oldest first (for inspection and the incident API)."""
    where, args = ("WHERE incident_id = ?", (incident_id,)) if incident_id else ("", ())
    rows = conn.execute(
        "SELECT id, destination, incident_id, ordering_key, kind, payload, state, attempts,"
        " not_before, next_attempt_at, last_error, created_at, sent_at, priority, superseded_by"
        f" FROM outbox {where}"
        " ORDER BY id",
        args,
    ).fetchall()
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


def pending_heads(conn: Connection) -> list[Row]:
    """The first pending message of every ordering key (the soonest hold-off, then the
    oldest), the most urgent keys first: by the most severe message waiting in the key, then
    the oldest head."""
    return conn.execute(
        "SELECT id, destination, incident_id, ordering_key, kind, payload, attempts, created_at,"
        " not_before, next_attempt_at FROM ("
        "   SELECT *, row_number() OVER ("
        "     PARTITION BY ordering_key ORDER BY not_before, id) AS n,"
        "   min(priority) OVER (PARTITION BY ordering_key) AS urgency"
        "   FROM outbox WHERE state = 'pending') AS queued"  # PostgreSQL < 16 needs the alias
        " WHERE n = 1 ORDER BY urgency, id"
    ).fetchall()


def superseded_messages(conn: Connection) -> list[Row]:
    """Queued messages a later queued one says again: each with the next message of its kind,
    incident and ordering key (``by_id``), unless that one or one between them changes state."""
    kinds = ", ".join("?" * len(SUPERSEDABLE))
    return conn.execute(
        "SELECT s.id, s.destination, s.by_id FROM ("
        "   SELECT old.id, old.destination, old.ordering_key, old.incident_id,"
        "     min(new.id) AS by_id"
        "   FROM outbox AS old JOIN outbox AS new"
        "     ON new.state = 'pending' AND new.ordering_key = old.ordering_key"
        "     AND new.incident_id = old.incident_id AND new.kind = old.kind AND new.id > old.id"
        f"  WHERE old.state = 'pending' AND old.kind IN ({kinds})"
        "   GROUP BY old.id) AS s"
        " JOIN outbox AS nw ON nw.id = s.by_id"
        f" WHERE NOT {_changes_state('nw')} AND NOT EXISTS ("
        "   SELECT 1 FROM outbox AS b"
        "   WHERE b.state = 'pending' AND b.ordering_key = s.ordering_key"
        "   AND b.incident_id = s.incident_id AND b.id > s.id AND b.id < s.by_id"
        f"  AND {_changes_state('b')})",
        SUPERSEDABLE,
    ).fetchall()


def skip_superseded(conn: Connection) -> dict[str, int]:
    """Skip the queued messages a later queued message says again; the count per destination."""
    skipped: dict[str, int] = {}
    for r in superseded_messages(conn):
        cur = conn.execute(
            "UPDATE outbox SET state = 'skipped', superseded_by = ?, last_error = ?"
            " WHERE id = ? AND state = 'pending'",
            (r["by_id"], f"superseded by message {r['by_id']}, queued after it", r["id"]),
        )
        skipped[r["destination"]] = skipped.get(r["destination"], 0) + cur.rowcount
    return skipped


def flapping_queues(conn: Connection) -> list[Row]:
    """Status-page message queues whose incident resolved before the hold-off ended."""
    return conn.execute(
        "SELECT DISTINCT ordering_key, destination, incident_id FROM outbox"
        " WHERE state = 'pending' AND kind = 'statuspage.update'"
        " AND json_extract(payload, '$.status') = 'resolved'"
        # CAST: PostgreSQL's json_extract gives text (DOUBLE PRECISION is REAL to SQLite).
        " AND CAST(json_extract(payload, '$.resolved_at') AS DOUBLE PRECISION) < not_before"
    ).fetchall()


def drop_flapping(conn: Connection) -> dict[str, int]:
    """Skip the status-page messages of incidents resolved within their hold-off that never
    reached the status page; the count skipped per destination."""
    skipped: dict[str, int] = {}
    for r in flapping_queues(conn):
        seen = conn.execute(
            # A superseded message never reached the status page: only what its sender saw.
            "SELECT 1 FROM outbox WHERE ordering_key = ? AND incident_id = ?"
            " AND (state = 'sent' OR (state = 'skipped' AND superseded_by IS NULL)) LIMIT 1",
            (r["ordering_key"], r["incident_id"]),
        ).fetchone()
        if seen is not None:
            continue  # the status page has its news already: it must hear the resolve too
        cur = conn.execute(
            "UPDATE outbox SET state = 'skipped', last_error = ?"
            " WHERE ordering_key = ? AND incident_id = ? AND state = 'pending'",
            ("resolved within the status-page hold-off", r["ordering_key"], r["incident_id"]),
        )
        skipped[r["destination"]] = skipped.get(r["destination"], 0) + cur.rowcount
    return skipped


def prune_outbox(conn: Connection, *, older_than: float) -> int:
    """Forget finished messages created before ``older_than``; pending ones always stay."""
    cur = conn.execute(
        "DELETE FROM outbox WHERE state != 'pending' AND created_at < ?", (older_than,)
    )
    return cur.rowcount


def record_sent(conn: Connection, message_id: int, *, skipped: str | None, now: float) -> None:
    """A message delivered (``sent``), or found to have nothing to send (``skipped``: why)."""
    conn.execute(
        "UPDATE outbox SET state = ?, sent_at = ?, attempts = attempts + 1, last_error = ?"
        " WHERE id = ?",
        ("skipped" if skipped else "sent", now, skipped, message_id),
    )


def record_retry(conn: Connection, message_id: int, *, error: str, next_attempt_at: float) -> None:
    """A failed attempt to try again at ``next_attempt_at``."""
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
        " WHERE id = ?",
        (error[:MAX_ERROR], next_attempt_at, message_id),
    )


def record_failed(conn: Connection, message_id: int, *, error: str) -> None:
    """A message that will not be delivered: refused for good, or its destination gone."""
    conn.execute(
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
        (error[:MAX_ERROR], message_id),
    )
