"""The webhook intake's inbox writer: many webhooks per store write, each answered correctly."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from receiver.config import StoreSettings
from receiver.incidents import enqueue_webhooks
from receiver.store import Store, StoreUnavailable
from receiver.webhook import InboxWriter


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(StoreSettings(path=tmp_path / "s.sqlite3", busy_timeout_seconds=0.05))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _keys(store: Store) -> list[str]:
    return await store.read(
        lambda c: [r[0] for r in c.execute("SELECT dedup_key FROM inbox ORDER BY id")]
    )


@pytest.mark.asyncio
async def test_enqueue_webhooks_tells_new_from_repeated_news(store: Store) -> None:
    """Keys stored before, or earlier in the same call, are duplicates; the rest are stored."""
    assert await store.write(lambda c: enqueue_webhooks(c, [("old", "g", b"{}")])) == [True]
    # More than one INSERT statement's worth, with repeats inside and across the chunks.
    batch = [(f"k{i % 300}", "g", b"{}") for i in range(450)] + [("old", "g", b"{}")]
    results = await store.write(lambda c: enqueue_webhooks(c, batch))
    assert results == [True] * 300 + [False] * 150 + [False]
    assert await _keys(store) == ["old", *(f"k{i}" for i in range(300))]


@pytest.mark.asyncio
async def test_webhooks_arriving_together_share_one_store_write(store: Store) -> None:
    """Fifty webhooks enqueued at once are all stored, in far fewer writes than fifty."""
    inbox = InboxWriter(store)
    results = await asyncio.gather(
        *(inbox.enqueue(dedup_key=f"k{i}", group_key="g", body=b"{}") for i in range(50)),
        inbox.enqueue(dedup_key="k7", group_key="g", body=b"{}"),
    )
    assert results == [True] * 50 + [False]
    assert 1 <= inbox.writes < 10
    assert sorted(await _keys(store)) == sorted(f"k{i}" for i in range(50))


@pytest.mark.asyncio
async def test_a_batch_that_cannot_commit_is_unavailable_and_the_next_one_stores(
    store: Store,
) -> None:
    """While the database is locked every webhook of the batch gets StoreUnavailable (503);
    once it is free again the same webhooks are stored, not lost and not duplicates."""
    inbox = InboxWriter(store)
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a second writer holds the lock
        refused = await asyncio.gather(
            *(inbox.enqueue(dedup_key=f"k{i}", group_key="g", body=b"{}") for i in range(5)),
            return_exceptions=True,
        )
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert all(isinstance(r, StoreUnavailable) for r in refused)
    assert await _keys(store) == []
    retried = await asyncio.gather(
        *(inbox.enqueue(dedup_key=f"k{i}", group_key="g", body=b"{}") for i in range(5))
    )
    assert retried == [True] * 5


@pytest.mark.asyncio
async def test_a_request_that_goes_away_does_not_disturb_the_others(store: Store) -> None:
    """A cancelled wait is skipped when the batch settles; its webhook is still stored and the
    others get their answers."""
    inbox = InboxWriter(store)
    tasks = [
        asyncio.create_task(inbox.enqueue(dedup_key=f"k{i}", group_key="g", body=b"{}"))
        for i in range(10)
    ]
    await asyncio.sleep(0)  # every task has queued its webhook
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == [True] * 9
    assert len(await _keys(store)) == 10


@pytest.mark.asyncio
async def test_a_closed_store_answers_unavailable(tmp_path: Path) -> None:
    """Once the store is closed, enqueueing fails with StoreUnavailable, and keeps doing so."""
    store = Store(StoreSettings(path=tmp_path / "s.sqlite3"))
    await store.open()
    await store.close()
    inbox = InboxWriter(store)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await inbox.enqueue(dedup_key="k", group_key="g", body=b"{}")
