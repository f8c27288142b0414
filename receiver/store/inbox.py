"""The inbox: received notifications, stored before they are answered, applied in order.

A webhook is answered once its notification is committed here; the worker applies pending
rows to incidents (:func:`receiver.store.incidents.apply_notification`) and marks each one
``done`` (or ``failed``) in the same transaction. Repeats are recognised by their dedup key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from receiver.store.base import Connection, now

__all__ = [
    "InboxRow",
    "dedup_hash",
    "enqueue_webhook",
    "enqueue_webhooks",
    "inbox_depth",
    "inbox_size",
    "inbox_state",
    "inbox_states",
    "mark_inbox",
    "pending_inbox",
    "prune_inbox",
    "recent_dedup_keys",
]


@dataclass(frozen=True)
class InboxRow:
    id: int
    payload: bytes
    received_at: float


_HASH_BITS = (1 << 63) - 1
_HEX = frozenset("0123456789abcdef")


def dedup_hash(dedup_key: str) -> int:
    """The inbox's integer key of a dedup digest: its first 63 bits (a positive SQLite integer).

    Repeats are looked up by this integer (a small index) and confirmed by comparing the full
    digest, so a collision never makes a different notification look like a repeat. A key
    that is not a 64-digit hex digest is digested first.
    """
    if len(dedup_key) != 64 or not _HEX.issuperset(dedup_key):
        dedup_key = hashlib.sha256(dedup_key.encode()).hexdigest()
    return int(dedup_key[:16], 16) & _HASH_BITS


def enqueue_webhook(conn: Connection, *, dedup_key: str, group_key: str, body: bytes) -> bool:
    """Store a received notification; ``False`` if the same news was stored before."""
    return enqueue_webhooks(conn, [(dedup_key, group_key, body)])[0]


# Rows per INSERT statement: 5 parameters each, below SQLite's oldest parameter limit (999).
_ROWS_PER_STATEMENT = 160


def enqueue_webhooks(
    conn: Connection,
    webhooks: Sequence[tuple[str, str, bytes]],
    *,
    received_at: Sequence[float] | None = None,
) -> list[bool]:
    """Store many received notifications ``(dedup_key, group_key, body)`` at once.

    Returns, in order, whether each was stored (``False``: the same news was stored before,
    or earlier in this same call). ``received_at`` gives when each was received (default:
    now). One SELECT and one multi-row INSERT per 160 webhooks,
    instead of a statement each: every sqlite3 call hands the interpreter lock to the event
    loop and waits to get it back, and that wait, not SQLite, is what a commit costs under
    load. Repeats are found by :func:`dedup_hash` and confirmed by the full digest. Run inside
    the store's write transaction (one writer), so nothing can slip in between the check and
    the insert.
    """
    results: list[bool] = []
    for start in range(0, len(webhooks), _ROWS_PER_STATEMENT):
        chunk = webhooks[start : start + _ROWS_PER_STATEMENT]
        hashes = [dedup_hash(key) for key, _, _ in chunk]
        wanted = list(dict.fromkeys(hashes))
        marks = ",".join("?" * len(wanted))
        seen = {
            row[0]
            for row in conn.execute(
                f"SELECT dedup_key FROM inbox WHERE dedup_hash IN ({marks})",
                wanted,
            )
        }
        received = (
            received_at[start : start + _ROWS_PER_STATEMENT]
            if received_at is not None
            else [now()] * len(chunk)
        )
        values: list[Any] = []
        for (key, group_key, body), key_hash, at in zip(chunk, hashes, received, strict=True):
            if key in seen:
                results.append(False)
                continue
            seen.add(key)
            values.extend((key_hash, key, group_key, at, body))
            results.append(True)
        if values:
            rows = ",".join(["(?, ?, ?, ?, ?)"] * (len(values) // 5))
            conn.execute(
                "INSERT INTO inbox (dedup_hash, dedup_key, group_key, received_at, payload)"
                f" VALUES {rows}",
                values,
            )
    return results


def recent_dedup_keys(conn: Connection, limit: int) -> list[str]:
    """The dedup keys of the ``limit`` newest inbox rows, oldest first."""
    rows = conn.execute("SELECT dedup_key FROM inbox ORDER BY id DESC LIMIT ?", (limit,))
    return [row[0] for row in rows][::-1]


def pending_inbox(conn: Connection, limit: int = 100) -> list[InboxRow]:
    rows = conn.execute(
        "SELECT id, payload, received_at FROM inbox WHERE state = 'pending' ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    return [InboxRow(r["id"], r["payload"], r["received_at"]) for r in rows]


def inbox_depth(conn: Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()[0])


def mark_inbox(conn: Connection, row_id: int, *, state: str, error: str | None) -> None:
    conn.execute(
        "UPDATE inbox SET state = ?, processed_at = ?, error = ?, attempts = attempts + 1"
        " WHERE id = ?",
        (state, now(), error, row_id),
    )


def prune_inbox(conn: Connection, *, older_than: float) -> int:
    cur = conn.execute(
        "DELETE FROM inbox WHERE state != 'pending' AND received_at < ?", (older_than,)
    )
    return cur.rowcount


def inbox_state(conn: Connection, row_id: int) -> str | None:
    """The state of one inbox row (``pending``, ``done``, ``failed``); ``None`` if there is
    no such row."""
    row = conn.execute("SELECT state FROM inbox WHERE id = ?", (row_id,)).fetchone()
    return None if row is None else str(row["state"])


def inbox_size(conn: Connection) -> int:
    """How many notifications the inbox holds, whatever their state."""
    return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])


def inbox_states(conn: Connection) -> dict[str, int]:
    """How many inbox rows are in each state (``pending``, ``done``, ``failed``)."""
    rows = conn.execute("SELECT state, count(*) AS n FROM inbox GROUP BY state").fetchall()
    return {str(r["state"]): int(r["n"]) for r in rows}
