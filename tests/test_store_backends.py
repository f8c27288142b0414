"""The store's behaviour, the same on both backends (one ``store`` fixture: sqlite, postgres).

Each test runs the real domain functions through ``store.write``/``store.read``; only the
store's own migration check reads its bookkeeping table directly.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from receiver.alertmanager import WebhookPayload
from receiver.notify.outbox import Draft, enqueue, list_messages, queue_depth
from receiver.store import Connection, Store, StoreUnavailable, check_integrity, journal
from receiver.store.inbox import enqueue_webhooks, inbox_depth, mark_inbox, pending_inbox
from receiver.store.incidents import (
    add_timeline,
    apply_notification,
    due_events,
    get_incident,
    list_incidents,
    mark_event,
    replay_events,
)
from receiver.store.postgres import MIGRATIONS as PG_MIGRATIONS
from tests.incident_payloads import notification
from tests.store_backends import (
    postgres_cluster,
    postgres_dsn,
    store_of_each_backend,
    store_settings,
)

# Fixtures, used by name.
__all__ = ["postgres_cluster", "postgres_dsn", "store_of_each_backend"]


@pytest.mark.asyncio
async def test_inbox_stores_each_notification_once(store: Store) -> None:
    """A repeat (same digest) is recognised, in one call and across calls."""
    first = await store.write(
        lambda c: enqueue_webhooks(c, [("a" * 64, "g", b"{}"), ("b" * 64, "g", b"{}")])
    )
    again = await store.write(
        lambda c: enqueue_webhooks(c, [("a" * 64, "g", b"{}"), ("c" * 64, "g", b"\x00\xff")])
    )
    assert first == [True, True]
    assert again == [False, True]
    assert await store.read(inbox_depth) == 3
    rows = await store.read(pending_inbox)
    assert [r.payload for r in rows] == [b"{}", b"{}", b"\x00\xff"]
    assert rows[0].id < rows[1].id < rows[2].id


@pytest.mark.asyncio
async def test_an_incident_opens_gets_its_timeline_and_resolves(store: Store) -> None:
    """Firing opens one incident; its resend opens no second; resolved resolves it."""
    firing = WebhookPayload.model_validate(notification("firing"))
    opened = await store.write(lambda c: apply_notification(c, firing))
    resent = await store.write(lambda c: apply_notification(c, firing))
    assert opened.incident_id is not None
    assert resent.incident_id == opened.incident_id
    incident_id = opened.incident_id
    await store.write(
        lambda c: add_timeline(c, incident_id, "note", "looked at it", {"who": "on-call"})
    )
    resolved = WebhookPayload.model_validate(notification("resolved"))
    assert (await store.write(lambda c: apply_notification(c, resolved))).resolved
    incident = await store.read(lambda c: get_incident(c, incident_id))
    assert incident is not None
    assert incident["status"] == "resolved"
    notes = [t for t in incident["timeline"] if t["kind"] == "note"]
    assert notes == [
        {
            "at": notes[0]["at"],
            "kind": "note",
            "message": "looked at it",
            "data": {"who": "on-call"},
        }
    ]
    listed = await store.read(lambda c: list_incidents(c, status="resolved"))
    assert [i["id"] for i in listed] == [incident_id]


@pytest.mark.asyncio
async def test_outbox_stores_each_draft_once_in_order(store: Store) -> None:
    """Enqueue is idempotent by key; messages list in the order they were queued."""
    firing = WebhookPayload.model_validate(notification("firing"))
    incident_id = (await store.write(lambda c: apply_notification(c, firing))).incident_id
    assert incident_id is not None
    drafts = [
        Draft("log", "log.opened", {"n": 1}, f"{incident_id}-1"),
        Draft("log", "log.update", {"n": 2}, f"{incident_id}-2"),
    ]
    at = time.time()
    assert await store.write(lambda c: enqueue(c, incident_id, drafts, now=at)) == 2
    assert await store.write(lambda c: enqueue(c, incident_id, drafts[:1], now=at)) == 0
    messages = await store.read(lambda c: list_messages(c, incident_id))
    assert [m["kind"] for m in messages] == ["log.opened", "log.update"]
    assert (await store.read(queue_depth)).get("log") == 2


@pytest.mark.asyncio
async def test_journal_records_intent_outcome_and_revert(store: Store) -> None:
    """An intent, then done; a revert scheduled once and due when its time comes."""
    at = time.time()

    def act(conn: Connection) -> journal.JournalEntry | None:
        entry_id = journal.write_intent(
            conn,
            incident_id="inc-1",
            action="queue_mode",
            kind="set_env",
            target="posthog/posthog-integration env RATE_LIMIT_MODE",
            before={"value": None},
            after={"value": "queue"},
            at=at,
        )
        journal.set_state(conn, entry_id, "done", at=at)
        return journal.get_entry(conn, "inc-1", "queue_mode")

    done = await store.write(act)
    assert done is not None
    assert done.state == "done"
    assert done.after == {"value": "queue"}
    assert await store.write(lambda c: journal.schedule_revert(c, "inc-1", at - 1))
    assert not await store.write(lambda c: journal.schedule_revert(c, "inc-1", at - 1))
    assert await store.read(lambda c: journal.due_reverts(c, at)) == ["inc-1"]
    assert [e.action for e in await store.read(lambda c: journal.revertible(c, "inc-1"))] == [
        "queue_mode"
    ]


@pytest.mark.asyncio
async def test_a_failing_write_commits_nothing_and_the_store_goes_on(store: Store) -> None:
    """The function's error reaches its caller; what it wrote before raising is rolled back."""

    def half(conn: Connection) -> None:
        enqueue_webhooks(conn, [("d" * 64, "g", b"{}")])
        raise ValueError("the function's own bug")

    with pytest.raises(ValueError, match="own bug"):
        await store.write(half)
    assert await store.read(inbox_depth) == 0
    assert await store.ping()


@pytest.mark.asyncio
async def test_writes_after_close_are_refused(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.write(inbox_depth)
    await store.open()  # the fixture closes it again


@pytest.mark.asyncio
async def test_replicas_starting_at_once_migrate_once(postgres_dsn: str, tmp_path: Path) -> None:
    """Three stores opened together on one fresh database: each version applied exactly once,
    and every store works."""
    stores = [Store(store_settings("postgres", tmp_path, postgres_dsn)) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        versions = await stores[0].read(
            lambda c: [
                r["version"]
                for r in c.execute("SELECT version FROM schema_migrations ORDER BY version")
            ]
        )
        assert versions == list(range(1, len(PG_MIGRATIONS) + 1))
        results = await asyncio.gather(
            *(
                s.write(lambda c, i=i: enqueue_webhooks(c, [(f"{i:064x}", "g", b"{}")]))
                for i, s in enumerate(stores)
            )
        )
        assert results == [[True], [True], [True]]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    again = Store(store_settings("postgres", tmp_path, postgres_dsn))
    await again.open()  # nothing left to apply: opens as is
    await again.close()


@pytest.mark.asyncio
async def test_events_handled_are_replayed_as_after_a_crash(store: Store) -> None:
    """With no incident busy, the due events are listed; once done, none is due, until they
    are replayed (of another incident: none; of this one: its events again)."""
    firing = WebhookPayload.model_validate(notification("firing"))
    opened = await store.write(lambda c: apply_notification(c, firing))
    incident_id = opened.incident_id
    assert incident_id is not None
    due = await store.read(due_events)
    assert [(e.incident_id, e.kind) for e in due] == [(incident_id, "opened")]

    def handle(conn: Connection) -> None:
        for event in due:
            mark_event(conn, event.id, state="done", error=None)

    await store.write(handle)
    assert await store.read(due_events) == []
    assert await store.write(lambda c: replay_events(c, "inc-elsewhere")) == 0
    assert await store.write(lambda c: replay_events(c, incident_id)) == 1
    assert [e.id for e in await store.read(due_events)] == [due[0].id]


@pytest.mark.asyncio
async def test_the_integrity_check_names_what_breaks_the_incident_rules(store: Store) -> None:
    """A consistent store has no problem; an open incident whose alert no longer fires and
    whose opened event is gone, and a webhook the worker could not apply, are named."""
    firing = WebhookPayload.model_validate(notification("firing"))
    opened = await store.write(lambda c: apply_notification(c, firing))
    incident_id = opened.incident_id
    (stored,) = await store.write(lambda c: enqueue_webhooks(c, [("f" * 64, "g", b"{}")]))
    assert stored
    assert await store.read(check_integrity) == []

    def break_it(conn: Connection) -> None:
        conn.execute("UPDATE alerts SET status = 'resolved' WHERE incident_id = ?", (incident_id,))
        conn.execute("DELETE FROM incident_events WHERE incident_id = ?", (incident_id,))
        (row,) = pending_inbox(conn)
        mark_inbox(conn, row.id, state="failed", error="ValueError: no alerts")

    await store.write(break_it)
    (row,) = await store.read(lambda c: c.execute("SELECT id FROM inbox").fetchall())
    assert await store.read(check_integrity) == [
        f"incident {incident_id} is open with no firing alert",
        f"incident {incident_id} has 0 'opened' events",
        f"stored webhook {row['id']} could not be applied: ValueError: no alerts",
    ]
