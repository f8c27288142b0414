"""The store's group commit: one failing write does not spoil the others in its batch."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from receiver.config import StoreSettings
from receiver.store import Store, StoreUnavailable

INSERT = "INSERT INTO inbox (dedup_key, group_key, received_at, payload) VALUES (?, 'g', 0, x'')"


def _insert(value: str) -> Callable[[sqlite3.Connection], str]:
    def run(conn: sqlite3.Connection) -> str:
        conn.execute(INSERT, (value,))
        return value

    return run


def _fail(conn: sqlite3.Connection) -> None:
    conn.execute(INSERT, ("bad",))
    raise ValueError("this write is refused")


@pytest.mark.asyncio
async def test_a_failing_write_does_not_spoil_its_batch(tmp_path: Path) -> None:
    """Writes queued together commit together; the one that raises is rolled back alone."""
    store = Store(StoreSettings(path=tmp_path / "s.sqlite3"))
    await store.open()
    try:
        results = await asyncio.gather(
            *(store.write(_insert(f"k{i}")) for i in range(20)),
            store.write(_fail),
            *(store.write(_insert(f"m{i}")) for i in range(20)),
            return_exceptions=True,
        )
        keys = await store.read(
            lambda c: {r[0] for r in c.execute("SELECT dedup_key FROM inbox").fetchall()}
        )
    finally:
        await store.close()
    assert isinstance(results[20], ValueError)
    assert keys == {f"k{i}" for i in range(20)} | {f"m{i}" for i in range(20)}
    assert store.committed_jobs == 41


@pytest.mark.asyncio
async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    """A closed store refuses writes with StoreUnavailable (the webhook then answers 503)."""
    store = Store(StoreSettings(path=tmp_path / "s.sqlite3"))
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.write(_fail)


@pytest.mark.asyncio
async def test_a_write_asked_for_while_the_store_closes_is_refused_not_left_waiting(
    tmp_path: Path,
) -> None:
    """Closing waits for the writer to finish what is queued; a write asked for meanwhile
    (the worker still running while the application stops) is refused at once. Queued behind
    the stop, it would wait for ever, and so would the shutdown."""
    store = Store(StoreSettings(path=tmp_path / "s.sqlite3"))
    await store.open()
    started = threading.Event()

    def slow(conn: sqlite3.Connection) -> str:
        started.set()
        time.sleep(0.3)
        return _insert("slow")(conn)

    queued = asyncio.ensure_future(store.write(slow))
    await asyncio.to_thread(started.wait, 5)
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0.05)  # close() has queued its stop; the writer is still busy
    assert not closing.done()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(store.write(_insert("late")), timeout=5)
    await asyncio.wait_for(closing, timeout=5)
    assert await queued == "slow"
